"""ONNX Runtime backend: one tuned session, output buffers allocated once for the maximum batch.

CPU everywhere; the CUDA provider first when onnxruntime-gpu is installed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engines.base import InferResult, check_batch
from engines.errors import EngineError
from engines.manifest import INPUT_NAME, OUTPUT_NAMES, Manifest

DEFAULT_MAX_BATCH = 32
_ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}


def default_threads() -> int:
    """Threads for one session: the cores this process may use (ENGINES_ORT_THREADS overrides)."""
    env = os.environ.get("ENGINES_ORT_THREADS")
    if env:
        return max(1, int(env))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def session_options(threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL   # one chain of convs: no inter-op parallelism
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_cpu_mem_arena = True
    so.enable_mem_pattern = True
    so.log_severity_level = 3
    return so


def providers() -> list[str]:
    available = ort.get_available_providers()
    chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
    return chosen + ["CPUExecutionProvider"]


class OnnxRuntimeEngine:
    """Engine over an ONNX graph; `infer` is serialised by a lock (one IOBinding, reused)."""

    backend = "onnxruntime"

    def __init__(self, onnx_file: str | Path | bytes, manifest: Manifest, max_batch: int | None = None,
                 threads: int | None = None) -> None:
        self.manifest = manifest
        self.max_batch = int(max_batch or DEFAULT_MAX_BATCH)
        if self.max_batch < 1:
            raise EngineError(f"max_batch must be at least 1, got {self.max_batch}")
        self.input_shape = manifest.input_shape
        self.threads = threads or default_threads()
        try:
            model = onnx_file if isinstance(onnx_file, bytes) else str(onnx_file)
            self._session = ort.InferenceSession(model, sess_options=session_options(self.threads),
                                                 providers=providers())
        except Exception as exc:  # noqa: BLE001 - ORT raises several types; all mean "cannot load"
            name = "the graph" if isinstance(onnx_file, bytes) else onnx_file
            raise EngineError(f"ONNX Runtime cannot load {name}: {str(exc).splitlines()[0]}") from None
        self.providers = self._session.get_providers()
        self._check_graph()
        self._lock = threading.Lock()
        self._binding = self._session.io_binding()
        h, w, c = self.input_shape
        n = self.max_batch
        self._out = {"score": np.empty((n,), np.float32),
                     "reconstruction": np.empty((n, h, w, c), np.uint8),
                     "anomaly_map": np.empty((n, h, w), np.float32)}
        self._bound_n = 0

    def _check_graph(self) -> None:
        """The graph's inputs and outputs must be the manifest's (names, types, static H×W×C)."""
        got = {a.name: a for a in self._session.get_inputs() + self._session.get_outputs()}
        for spec in self.manifest.inputs + self.manifest.outputs:
            arg = got.get(spec.name)
            if arg is None:
                raise EngineError(f"the ONNX graph has no tensor {spec.name!r} that its manifest lists; "
                                  "re-export the model with `trainer export`")
            dims = [d if isinstance(d, int) else -1 for d in arg.shape]
            if arg.type != _ORT_TYPES[spec.dtype] or dims[1:] != spec.shape[1:]:
                raise EngineError(f"ONNX tensor {spec.name!r} is {arg.type} {arg.shape}, the manifest says "
                                  f"{spec.dtype} {spec.shape}; re-export the model")
        names = [a.name for a in self._session.get_inputs()]
        if names != [INPUT_NAME]:
            raise EngineError(f"the ONNX graph takes {names}, expected one input {INPUT_NAME!r}")

    def _bind_outputs(self, n: int) -> None:
        self._binding.clear_binding_outputs()
        for name in OUTPUT_NAMES:
            buf = self._out[name][:n]
            self._binding.bind_output(name, "cpu", 0, buf.dtype, buf.shape, buf.ctypes.data)
        self._bound_n = n

    def infer(self, images: np.ndarray) -> InferResult:
        batch = check_batch(images, self.input_shape, self.max_batch)
        n = batch.shape[0]
        with self._lock:
            if self._session is None:
                raise EngineError("this engine was closed; load it again with load_engine")
            self._binding.bind_cpu_input(INPUT_NAME, batch)
            if n != self._bound_n:
                self._bind_outputs(n)
            self._session.run_with_iobinding(self._binding)
            # Copies: the buffers are reused by the next call, the result belongs to the caller.
            return InferResult(scores=self._out["score"][:n].copy(),
                               reconstructions=self._out["reconstruction"][:n].copy(),
                               maps=self._out["anomaly_map"][:n].copy())

    def close(self) -> None:
        with self._lock:
            self._binding = None  # type: ignore[assignment]
            self._session = None  # type: ignore[assignment]
