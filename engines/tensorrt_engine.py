"""TensorRT backend (TensorRT 10/11 + pycuda): deserialised once, buffers allocated once, one stream.

Follows TensorRT's python samples (common_runtime.py); refuses engines built for another GPU or version. The
GPU is identified by name, compute capability, SM count and memory: every Jetson Orin module reports the name
"Orin" and sm 8.7, so only the last two tell an AGX Orin from an Orin Nano.

pycuda (doc/source/driver.rst): `Device.total_memory()`, `Device.get_attribute(device_attribute.
MULTIPROCESSOR_COUNT)`, `retain_primary_context()` + `Context.push/pop/detach`, `mem_alloc` ->
`DeviceAllocation.free()`, `pagelocked_empty` -> an ndarray whose `.base` is the PagelockedHostAllocation
(`free()`). Everything allocated is freed explicitly while the primary context is pushed, before `detach`
releases it: left to the garbage collector it would be freed into a context that may be gone.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import structlog

from common.manifest import INPUT_NAME, OUTPUT_NAMES, Manifest, TensorRTInfo, sha256_file
from engines.base import InferResult, check_batch
from engines.errors import EngineError, first_line

log = structlog.get_logger("engines")

MEMORY_TOLERANCE = 0.10   # the memory a driver reports moves a little between releases; modules differ by 2x
_LIBRARY = re.compile(r"(lib[A-Za-z0-9_+-]+\.so(?:\.[0-9]+)*)")


@dataclass(frozen=True)
class GpuIdentity:
    name: str
    compute_capability: str   # "8.7"
    sm_count: int             # multiprocessors
    total_memory: int         # bytes

    def describe(self) -> str:
        return f"{self.name} (sm {self.compute_capability}, {self.sm_count} SMs, {_gib(self.total_memory)} GiB)"


def _gib(nbytes: int) -> str:
    return f"{nbytes / (1 << 30):.1f}"


def cuda_errors(cuda: Any) -> tuple[type[BaseException], ...]:
    """pycuda.driver.Error (the base of pycuda's errors) as an except clause; () when there is none."""
    error = getattr(cuda, "Error", None)
    return (error,) if isinstance(error, type) and issubclass(error, BaseException) else ()


def _library_fix(library: str | None) -> str:
    if library and library.startswith("libcuda.so"):
        return ("it is the NVIDIA driver's library: install the driver (`nvidia-smi` must work; on Jetson it "
                "comes with JetPack), and in a container run it with the NVIDIA container runtime")
    if library and library.startswith(("libnvinfer", "libnvonnxparser")):
        return ("it is TensorRT's own library: on Jetson `sudo apt install python3-libnvinfer` (JetPack 6), on an "
                "x86 box `pip install '.[tensorrt-cu12]'` (CUDA 12) or `'.[tensorrt-cu13]'` (CUDA 13), or put "
                "its folder on LD_LIBRARY_PATH")
    if library and library.startswith(("libcudart", "libcublas", "libcudnn", "libnvrtc", "libnvJitLink")):
        return ("it is a CUDA library of the CUDA version TensorRT was built for: install the `tensorrt-cuXX` "
                "extra matching this box's CUDA (it brings it) or that CUDA toolkit, or put its folder on "
                "LD_LIBRARY_PATH")
    return "reinstall it for this box's CUDA version (deploy/install.sh picks the right packages)"


def _import(module: str) -> ModuleType:
    """importlib.import_module, with a shared library that cannot be loaded turned into one EngineError."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:
        found = _LIBRARY.search(str(exc))
        library = found.group(1) if found else None
        what = f"{library} could not be loaded" if library else first_line(exc)
        raise EngineError(f"TensorRT backend unavailable: `import {module}` failed: {what}; "
                          f"{_library_fix(library)}; or use backend onnxruntime") from None


def import_runtime() -> tuple[ModuleType, ModuleType]:
    """(tensorrt, pycuda.driver), or an EngineError saying what to install."""
    missing = [m for m in ("tensorrt", "pycuda") if importlib.util.find_spec(m) is None]
    if missing:
        raise EngineError(f"TensorRT backend unavailable: {' and '.join(missing)} not importable; on Jetson "
                          "use JetPack's python (venv with --system-site-packages) and `pip install '.[jetson]'`, "
                          "on an x86 box `pip install '.[tensorrt-cu12]'` (CUDA 12) or `'.[tensorrt-cu13]'` "
                          "(CUDA 13); deploy/install.sh picks it")
    return _import("tensorrt"), _import("pycuda.driver")


def gpu_identity(cuda: Any, device: int = 0) -> GpuIdentity:
    """Name, compute capability, SM count and memory of a CUDA device, through pycuda."""
    try:
        cuda.init()
        if cuda.Device.count() <= device:
            raise EngineError(f"no CUDA device {device} on this machine; use backend onnxruntime")
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        sm_count = int(dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT))
        return GpuIdentity(str(dev.name()), f"{major}.{minor}", sm_count, int(dev.total_memory()))
    except cuda_errors(cuda) as exc:
        raise EngineError(f"CUDA unusable here: {first_line(exc)}; check the driver with `nvidia-smi` (on "
                          "Jetson: JetPack), or use backend onnxruntime") from None


def tensorrt_available() -> tuple[bool, str]:
    """Whether TensorRT, pycuda and a GPU are all present here, and if not, why (one line)."""
    missing = [m for m in ("tensorrt", "pycuda") if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"{' and '.join(missing)} not importable"
    try:
        _, cuda = import_runtime()
        gpu = gpu_identity(cuda)
    except EngineError as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - a broken driver or binding can raise anything
        return False, f"CUDA unusable: {first_line(exc)}"
    return True, f"GPU {gpu.describe()}"


def rebuild_hint(engine_file: Path, info: TensorRTInfo | None) -> str:
    onnx = engine_file.with_suffix(".onnx").name
    flags = f" --max-batch {info.max_batch} --opt-batch {info.opt_batch}" if info else ""
    fp16 = " --fp16" if info is None or info.precision == "fp16" else ""
    return f"rebuild it on this machine: `engines build {onnx} --out {engine_file.name}{flags}{fp16}`"


def _same_memory(built: int, here: int) -> bool:
    return abs(built - here) <= MEMORY_TOLERANCE * max(built, here)


def check_compatibility(engine_file: Path, info: TensorRTInfo | None, trt_version: str,
                        gpu: GpuIdentity) -> list[str]:
    """EngineError unless the engine was built by this TensorRT version for this GPU model (name, compute
    capability, SM count, memory); returns warnings (a manifest from before SM count and memory were kept)."""
    if info is None:
        raise EngineError(f"the manifest of {engine_file.name} has no tensorrt section, so nothing says "
                          f"where the engine was built; {rebuild_hint(engine_file, info)}")
    problems = []
    if info.version != trt_version:
        problems.append(f"TensorRT {info.version} (here {trt_version})")
    if info.gpu_name != gpu.name:
        problems.append(f"GPU {info.gpu_name!r} (here {gpu.name!r})")
    if info.compute_capability != gpu.compute_capability:
        problems.append(f"compute capability {info.compute_capability} (here {gpu.compute_capability})")
    if info.sm_count is not None and info.sm_count != gpu.sm_count:
        problems.append(f"{info.sm_count} SMs (here {gpu.sm_count})")
    if info.total_memory is not None and not _same_memory(info.total_memory, gpu.total_memory):
        problems.append(f"{_gib(info.total_memory)} GiB of GPU memory (here {_gib(gpu.total_memory)} GiB)")
    if problems:
        raise EngineError(f"{engine_file.name} was built for {', '.join(problems)}; TensorRT engines are not "
                          f"portable across GPU models or TensorRT versions: {rebuild_hint(engine_file, info)}")
    if info.sm_count is None or info.total_memory is None:
        return [f"the manifest of {engine_file.name} has no SM count or GPU memory (built before they were "
                "recorded), so an engine from another module of the same name (an AGX Orin on an Orin Nano) "
                f"would go unnoticed; {rebuild_hint(engine_file, info)} to record them"]
    return []


def check_engine_file(engine_file: Path, info: TensorRTInfo | None) -> None:
    """EngineError unless the engine file is the one its manifest was written for (sha256), e.g. after a build
    stopped between writing the engine and its manifest."""
    if info is not None and info.engine_sha256 is not None and sha256_file(engine_file) != info.engine_sha256:
        raise EngineError(f"{engine_file.name} does not match its manifest (sha256 differs: a build that did not "
                          f"finish, or files copied from different builds); {rebuild_hint(engine_file, info)}")


def _host_allocation(array: np.ndarray) -> Any:
    """The PagelockedHostAllocation behind a pagelocked_empty array (its `.base`), or None."""
    base = array.base
    while base is not None and not hasattr(base, "free"):
        base = getattr(base, "base", None)
    return base


class TensorRTEngine:
    """Engine over a serialised TensorRT engine; `infer` is serialised by a lock (one context, one stream).

    Any thread may create it, call `infer` and `close`: every CUDA call runs with the device's primary context
    pushed on the calling thread. A `max_batch` larger than the engine's profile is capped to it (see `notes`).
    """

    backend = "tensorrt"

    def __init__(self, engine_file: str | Path, manifest: Manifest, max_batch: int | None = None,
                 device: int = 0) -> None:
        self.path = Path(engine_file)
        self.manifest = manifest
        self.input_shape = manifest.input_shape
        self.notes: list[str] = []
        self._lock = threading.Lock()
        self._closed = True                     # until loaded
        self._ctx: Any = None
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, Any] = {}
        self._context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self._stream: Any = None
        if max_batch is not None and max_batch < 1:
            raise EngineError(f"max_batch must be at least 1, got {max_batch}")
        trt, cuda = import_runtime()
        self._trt, self._cuda = trt, cuda
        self.gpu = gpu_identity(cuda, device)
        self.notes += check_compatibility(self.path, manifest.tensorrt, trt.__version__, self.gpu)
        check_engine_file(self.path, manifest.tensorrt)
        errors = cuda_errors(cuda)
        # The primary context is the one TensorRT's CUDA runtime calls use; push it around every CUDA call.
        try:
            self._ctx = cuda.Device(device).retain_primary_context()
            self._ctx.push()
        except errors as exc:
            self._detach()
            raise EngineError(f"CUDA context on device {device} unusable: {first_line(exc)}") from None
        try:
            self._load(max_batch)
        except BaseException as exc:
            try:
                self._release()
            finally:
                self._ctx.pop()
                self._detach()
            if isinstance(exc, errors):
                raise EngineError(f"loading {self.path.name} on the GPU failed: {first_line(exc)}; free GPU "
                                  "memory (other processes, other stations) or rebuild with a smaller "
                                  "--max-batch") from None
            raise
        self._ctx.pop()
        self._closed = False
        for note in self.notes:
            log.warning("engine_note", engine=str(self.path), note=note)

    def _load(self, max_batch: int | None) -> None:
        """Runtime, engine, context, stream and the buffers for the largest batch; each kept as soon as it
        exists, so that _release frees a partial load as well."""
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
        self.max_batch = engine_max if max_batch is None else min(max_batch, engine_max)
        if max_batch is not None and max_batch > engine_max:
            self.notes.append(f"max_batch {max_batch} capped to {engine_max}, the largest batch {self.path.name} "
                              f"was built for: each call carries at most {engine_max} images (for more, "
                              f"rebuild with `engines build ... --max-batch {max_batch}`)")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(f"TensorRT could not create an execution context for {self.path.name} "
                              "(out of GPU memory?)")
        self._stream = cuda.Stream()
        shapes = self.manifest.tensor_shapes(self.max_batch)
        for name in expected:
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))   # FP16 engines may give float16
            self._host[name] = cuda.pagelocked_empty(shapes[name][0], dtype)
            self._device[name] = cuda.mem_alloc(self._host[name].nbytes)
            self._context.set_tensor_address(name, int(self._device[name]))
        self._shape_n = 0

    def infer(self, images: np.ndarray) -> InferResult:
        batch = check_batch(images, self.input_shape, self.max_batch)
        n = batch.shape[0]
        cuda = self._cuda
        with self._lock:
            if self._closed:
                raise EngineError(f"the TensorRT engine {self.path.name} is closed; load it again "
                                  "(engines.load_engine) to score more images")
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
            except cuda_errors(cuda) as exc:
                raise EngineError(f"TensorRT inference on {self.path.name} failed: {first_line(exc)}") from None
            finally:
                self._ctx.pop()
            return InferResult.copy_rows(self._host, n)

    def close(self) -> None:
        """Free the buffers, stream and TensorRT objects in the primary context, then release it; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._ctx.push()
            except cuda_errors(self._cuda) as exc:
                log.warning("engine_close_failed", engine=str(self.path), error=first_line(exc))
                self._host.clear()
                self._device.clear()
                self._detach()
                return
            try:
                self._release()
            finally:
                self._ctx.pop()
                self._detach()

    def _release(self) -> None:
        """Free what _load made, all of it or a part, with the primary context pushed: nothing in flight, then
        the execution context (it holds the buffers' addresses), device and pinned host buffers, the stream,
        the engine, the runtime."""
        errors = cuda_errors(self._cuda)
        if self._stream is not None:
            try:
                self._stream.synchronize()
            except errors as exc:
                log.warning("engine_release", step="synchronize", error=first_line(exc))
        self._context = None
        for name, dev in self._device.items():
            try:
                dev.free()
            except errors as exc:
                log.warning("engine_release", step=f"free device {name}", error=first_line(exc))
        self._device.clear()
        for name, host in self._host.items():
            alloc = _host_allocation(host)
            try:
                if alloc is not None:
                    alloc.free()
            except errors as exc:
                log.warning("engine_release", step=f"free pinned {name}", error=first_line(exc))
        self._host.clear()
        self._stream = None
        self._engine = None
        self._runtime = None

    def _detach(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            ctx.detach()
