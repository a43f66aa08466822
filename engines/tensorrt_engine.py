"""TensorRT backend (TensorRT 10/11 + pycuda): deserialised once, buffers allocated once, one stream.

Follows TensorRT's python samples (common_runtime.py); refuses engines built for another GPU or version.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from common.manifest import INPUT_NAME, OUTPUT_NAMES, Manifest, TensorRTInfo, sha256_file
from engines.base import InferResult, check_batch
from engines.errors import EngineError


def import_runtime() -> tuple[ModuleType, ModuleType]:
    """(tensorrt, pycuda.driver), or an EngineError saying what to install."""
    missing = [m for m in ("tensorrt", "pycuda") if importlib.util.find_spec(m) is None]
    if missing:
        raise EngineError(f"TensorRT backend unavailable: {' and '.join(missing)} not importable; on Jetson "
                          "use JetPack's python (venv with --system-site-packages) and `pip install pycuda`, "
                          "elsewhere `pip install '.[tensorrt]'`")
    trt = importlib.import_module("tensorrt")
    cuda = importlib.import_module("pycuda.driver")
    return trt, cuda


def gpu_identity(cuda: Any, device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "M.m") of a CUDA device, through pycuda."""
    cuda.init()
    if cuda.Device.count() <= device:
        raise EngineError(f"no CUDA device {device} on this machine; use backend onnxruntime")
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return str(dev.name()), f"{major}.{minor}"


def tensorrt_available() -> tuple[bool, str]:
    """Whether TensorRT, pycuda and a GPU are all present here, and if not, why (short)."""
    missing = [m for m in ("tensorrt", "pycuda") if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"{' and '.join(missing)} not importable"
    try:
        _, cuda = import_runtime()
        name, cc = gpu_identity(cuda)
    except EngineError as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - a broken driver raises pycuda's own errors
        return False, f"CUDA unusable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return True, f"GPU {name} (sm {cc})"


def rebuild_hint(engine_file: Path, info: TensorRTInfo | None) -> str:
    onnx = engine_file.with_suffix(".onnx").name
    flags = f" --max-batch {info.max_batch} --opt-batch {info.opt_batch}" if info else ""
    fp16 = " --fp16" if info is None or info.precision == "fp16" else ""
    return f"rebuild it on this machine: `engines build {onnx} --out {engine_file.name}{flags}{fp16}`"


def check_compatibility(engine_file: Path, info: TensorRTInfo | None, trt_version: str, gpu_name: str,
                        compute_capability: str) -> None:
    """EngineError unless the engine was built by this TensorRT version for this GPU model."""
    if info is None:
        raise EngineError(f"the manifest of {engine_file.name} has no tensorrt section, so nothing says "
                          f"where the engine was built; {rebuild_hint(engine_file, info)}")
    problems = []
    if info.version != trt_version:
        problems.append(f"TensorRT {info.version} (here {trt_version})")
    if info.gpu_name != gpu_name:
        problems.append(f"GPU {info.gpu_name!r} (here {gpu_name!r})")
    if info.compute_capability != compute_capability:
        problems.append(f"compute capability {info.compute_capability} (here {compute_capability})")
    if problems:
        raise EngineError(f"{engine_file.name} was built for {', '.join(problems)}; TensorRT engines are not "
                          f"portable across GPU models or TensorRT versions: {rebuild_hint(engine_file, info)}")


class TensorRTEngine:
    """Engine over a serialised TensorRT engine; `infer` is serialised by a lock (one context, one stream)."""

    backend = "tensorrt"

    def __init__(self, engine_file: str | Path, manifest: Manifest, max_batch: int | None = None,
                 device: int = 0) -> None:
        self.path = Path(engine_file)
        self.manifest = manifest
        self.input_shape = manifest.input_shape
        trt, cuda = import_runtime()
        self._trt, self._cuda = trt, cuda
        name, cc = gpu_identity(cuda, device)
        check_compatibility(self.path, manifest.tensorrt, trt.__version__, name, cc)
        if manifest.tensorrt and manifest.tensorrt.engine_sha256 not in (None, sha256_file(self.path)):
            raise EngineError(f"{self.path.name} does not match its manifest (sha256 differs); "
                              f"{rebuild_hint(self.path, manifest.tensorrt)}")
        self._lock = threading.Lock()
        # The primary context is the one TensorRT's CUDA runtime calls use; push it around every CUDA call.
        self._ctx = cuda.Device(device).retain_primary_context()
        self._ctx.push()
        try:
            self._load(max_batch)
        except BaseException:
            self._ctx.pop()
            self._ctx.detach()
            raise
        self._ctx.pop()

    def _load(self, max_batch: int | None) -> None:
        trt, cuda = self._trt, self._cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise EngineError(f"TensorRT could not deserialise {self.path.name}; "
                              f"{rebuild_hint(self.path, self.manifest.tensorrt)}")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        expected = [INPUT_NAME, *OUTPUT_NAMES]
        if sorted(names) != sorted(expected):
            raise EngineError(f"{self.path.name} has tensors {names}, expected {expected}; "
                              "build it from an ONNX file written by `trainer export`")
        _, _, profile_max = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)
        engine_max = int(profile_max[0])
        self.max_batch = int(max_batch or engine_max)
        if not 1 <= self.max_batch <= engine_max:
            raise EngineError(f"max_batch {self.max_batch} is outside the engine's profile 1..{engine_max}; "
                              f"rebuild with `engines build ... --max-batch {self.max_batch}`")
        self._context = self._engine.create_execution_context()
        self._stream = cuda.Stream()
        shapes = self.manifest.tensor_shapes(self.max_batch)
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, Any] = {}
        for name in expected:
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))   # FP16 engines may give float16
            host = cuda.pagelocked_empty(shapes[name][0], dtype)
            dev = cuda.mem_alloc(host.nbytes)
            self._host[name], self._device[name] = host, dev
            self._context.set_tensor_address(name, int(dev))
        self._shape_n = 0

    def infer(self, images: np.ndarray) -> InferResult:
        batch = check_batch(images, self.input_shape, self.max_batch)
        n = batch.shape[0]
        cuda = self._cuda
        with self._lock:
            self._ctx.push()
            try:
                host_in = self._host[INPUT_NAME][:n]
                np.copyto(host_in, batch)
                cuda.memcpy_htod_async(self._device[INPUT_NAME], host_in, self._stream)
                if n != self._shape_n:
                    if not self._context.set_input_shape(INPUT_NAME, (n, *self.input_shape)):
                        raise EngineError(f"TensorRT refused batch {n} (profile 1..{self.max_batch})")
                    self._shape_n = n
                if not self._context.execute_async_v3(stream_handle=self._stream.handle):
                    raise EngineError(f"TensorRT execution of {self.path.name} failed (see its log above)")
                for name in OUTPUT_NAMES:
                    cuda.memcpy_dtoh_async(self._host[name][:n], self._device[name], self._stream)
                self._stream.synchronize()
            finally:
                self._ctx.pop()
            return InferResult.copy_rows(self._host, n)

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_ctx", None) is None:
                return
            self._ctx.push()
            try:
                for dev in self._device.values():
                    dev.free()
                self._device.clear()
                self._context = self._engine = self._runtime = None
                self._stream = None
            finally:
                self._ctx.pop()
                self._ctx.detach()
                self._ctx = None
