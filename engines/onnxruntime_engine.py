"""ONNX Runtime backend: tuned sessions, output buffers allocated once for the maximum batch.

CPU everywhere; the CUDA provider first when onnxruntime-gpu is installed.

On CPU a batch is run one of two ways. Small batches go through one session whose operators use all
the threads (lowest latency for one part). Batches of at least `SHARD_MIN_IMAGES` per thread are cut
into one contiguous shard per thread, each run concurrently on a second, single-threaded session of
the same graph (ONNX Runtime allows concurrent `Run` calls on one session and releases the GIL):
no per-operator synchronisation and each shard's activations stay in one core's cache, which is
what makes large batches faster per image than intra-operator threading (docs/engines.md).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from common.host import available_cores
from common.manifest import INPUT_NAME, OUTPUT_NAMES, Manifest
from engines.base import InferResult, check_batch
from engines.errors import EngineError

DEFAULT_MAX_BATCH = 32
SHARD_MIN_IMAGES = 2   # a batch is sharded across threads once every thread gets at least this many images
_ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}


def default_threads() -> int:
    """Threads for one session: the cores this process may use (ENGINES_ORT_THREADS overrides)."""
    env = os.environ.get("ENGINES_ORT_THREADS")
    if env:
        return max(1, int(env))
    return available_cores()


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


def _open_session(onnx_file: str | Path | bytes, threads: int) -> ort.InferenceSession:
    try:
        model = onnx_file if isinstance(onnx_file, bytes) else str(onnx_file)
        return ort.InferenceSession(model, sess_options=session_options(threads), providers=providers())
    except Exception as exc:  # noqa: BLE001 - ORT raises several types; all mean "cannot load"
        name = "the graph" if isinstance(onnx_file, bytes) else onnx_file
        raise EngineError(f"ONNX Runtime cannot load {name}: {str(exc).splitlines()[0]}") from None


def providers() -> list[str]:
    available = ort.get_available_providers()
    chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
    return chosen + ["CPUExecutionProvider"]


class OnnxRuntimeEngine:
    """Engine over an ONNX graph; `infer` is serialised by a lock (one IOBinding, reused)."""

    backend = "onnxruntime"

    def __init__(self, onnx_file: str | Path | bytes, manifest: Manifest, max_batch: int | None = None,
                 threads: int | None = None, shard: bool = True) -> None:
        self.manifest = manifest
        self.max_batch = int(max_batch or DEFAULT_MAX_BATCH)
        if self.max_batch < 1:
            raise EngineError(f"max_batch must be at least 1, got {self.max_batch}")
        self.input_shape = manifest.input_shape
        self.threads = threads or default_threads()
        self._session = _open_session(onnx_file, self.threads)
        self.providers = self._session.get_providers()
        self._check_graph()
        self._lock = threading.Lock()
        self._binding = self._session.io_binding()
        shapes = manifest.tensor_shapes(self.max_batch)
        self._out = {name: np.empty(*shapes[name]) for name in OUTPUT_NAMES}
        self._bound_n = 0
        # Sharding is a CPU technique: with the CUDA provider the GPU already runs the batch at once.
        self.shards = self.threads if shard and self.threads > 1 and self.providers[0] == "CPUExecutionProvider" else 1
        self._shard_session: ort.InferenceSession | None = None
        self._shard_bindings: list[ort.IOBinding] = []
        self._pool: ThreadPoolExecutor | None = None
        if self.shards > 1:
            self._shard_session = _open_session(onnx_file, 1)
            self._shard_bindings = [self._shard_session.io_binding() for _ in range(self.shards)]
            self._pool = ThreadPoolExecutor(self.shards, thread_name_prefix="ort-shard")

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

    def _bind_rows(self, binding: ort.IOBinding, lo: int, hi: int) -> None:
        """Bind every output of `binding` to rows lo..hi-1 of the pre-allocated output buffers."""
        binding.clear_binding_outputs()
        for name in OUTPUT_NAMES:
            buf = self._out[name][lo:hi]
            binding.bind_output(name, "cpu", 0, buf.dtype, buf.shape, buf.ctypes.data)

    def _bind_outputs(self, n: int) -> None:
        self._bind_rows(self._binding, 0, n)
        self._bound_n = n

    def _run_shard(self, k: int, batch: np.ndarray, lo: int, hi: int) -> None:
        """Shard k: images lo..hi-1 through the single-threaded session, outputs straight into their rows."""
        assert self._shard_session is not None
        binding = self._shard_bindings[k]
        binding.bind_cpu_input(INPUT_NAME, batch[lo:hi])
        self._bind_rows(binding, lo, hi)
        self._shard_session.run_with_iobinding(binding)

    def _run_sharded(self, batch: np.ndarray) -> None:
        assert self._pool is not None
        bounds = np.linspace(0, batch.shape[0], self.shards + 1).round().astype(int)
        jobs = [self._pool.submit(self._run_shard, k, batch, int(lo), int(hi))
                for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
        for job in jobs:
            job.result()   # re-raises a shard's failure in the caller

    def infer(self, images: np.ndarray) -> InferResult:
        batch = check_batch(images, self.input_shape, self.max_batch)
        n = batch.shape[0]
        with self._lock:
            if self._session is None:
                raise EngineError("this engine was closed; load it again with load_engine")
            if self.shards > 1 and n >= self.shards * SHARD_MIN_IMAGES:
                self._run_sharded(batch)
            else:
                self._binding.bind_cpu_input(INPUT_NAME, batch)
                if n != self._bound_n:
                    self._bind_outputs(n)
                self._session.run_with_iobinding(self._binding)
            # Copies: the buffers are reused by the next call, the result belongs to the caller.
            return InferResult.copy_rows(self._out, n)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            self._binding = None  # type: ignore[assignment]
            self._shard_bindings = []
            self._session = None  # type: ignore[assignment]
            self._shard_session = None
