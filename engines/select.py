"""`load_engine`: resolve the backend once ("auto" = TensorRT when importable with a GPU, else ONNX Runtime).

An explicit backend that cannot be honoured is an EngineError that says why; the choice is logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import structlog

from common.manifest import Manifest, check_onnx_sha256, onnx_path, read_manifest
from engines.base import Engine
from engines.errors import EngineError
from engines.tensorrt_engine import tensorrt_available

Backend = Literal["auto", "tensorrt", "onnxruntime"]
BACKENDS = ("auto", "tensorrt", "onnxruntime")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")

log = structlog.get_logger("engines")


def engine_file_for(path: Path) -> Path | None:
    """The TensorRT engine for a model path: the path itself, or MODEL.engine beside MODEL.onnx."""
    if path.suffix in ENGINE_SUFFIXES:
        return path
    candidate = path.with_suffix(".engine")
    return candidate if candidate.is_file() else None


def resolve_backend(path: Path, backend: str) -> tuple[str, str]:
    """(backend, reason) for a model path and a requested backend; EngineError if it cannot be met."""
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    engine = engine_file_for(path)
    if backend == "onnxruntime":
        return "onnxruntime", "requested"
    trt_ok, trt_why = tensorrt_available()
    if backend == "tensorrt":
        if not trt_ok:
            raise EngineError(f"backend tensorrt requested but {trt_why} here; install TensorRT and pycuda "
                              "on the GPU box (deploy/install.sh picks them: `pip install '.[tensorrt-cu12]'` "
                              "or `'.[tensorrt-cu13]'` by the box's CUDA, on Jetson JetPack's TensorRT and "
                              "`'.[jetson]'`), or use backend onnxruntime")
        if engine is None:
            raise EngineError(f"backend tensorrt requested but there is no engine beside {path.name}; build "
                              f"one with `engines build {path.name} --out {path.with_suffix('.engine').name} "
                              "--fp16`")
        return "tensorrt", f"requested; {trt_why}"
    if trt_ok and engine is not None:
        return "tensorrt", f"auto: TensorRT importable, {trt_why}"
    if trt_ok:
        return "onnxruntime", (f"auto: TensorRT usable but no engine beside {path.name} "
                               "(build one with `engines build`)")
    return "onnxruntime", f"auto: {trt_why}"


def load_engine(path: str | Path, backend: str = "auto", max_batch: int | None = None,
                threads: int | None = None) -> Engine:
    """An Engine for MODEL.onnx or MODEL.engine (manifest MODEL.json beside it).

    threads: CPU threads of the ONNX Runtime backend (default: every core this process may use).
    """
    p = Path(path)
    if not p.is_file():
        raise EngineError(f"model file {p} not found")
    if max_batch is not None and max_batch < 1:
        raise EngineError(f"max_batch must be at least 1, got {max_batch}")
    chosen, reason = resolve_backend(p, backend)
    if chosen == "tensorrt":
        from engines.tensorrt_engine import TensorRTEngine

        engine_file = engine_file_for(p)
        assert engine_file is not None
        manifest = read_manifest(engine_file)
        trt_engine = TensorRTEngine(engine_file, manifest, max_batch)   # a larger max_batch is capped, noted
        log.info("engine_selected", backend=chosen, reason=reason, path=str(engine_file),
                 model_id=manifest.model_id, max_batch=trt_engine.max_batch, requested_max_batch=max_batch,
                 gpu=trt_engine.gpu.describe())
        return trt_engine

    from engines.onnxruntime_engine import OnnxRuntimeEngine

    manifest, onnx_file = onnx_for(p)
    ort_engine = OnnxRuntimeEngine(onnx_file, manifest, max_batch, threads=threads)
    log.info("engine_selected", backend=chosen, reason=reason, path=str(onnx_file),
             model_id=manifest.model_id, max_batch=ort_engine.max_batch, providers=ort_engine.providers,
             threads=ort_engine.threads, shards=ort_engine.shards)
    return ort_engine


def onnx_for(path: Path) -> tuple[Manifest, Path]:
    """The manifest and verified ONNX file for a model path (.onnx, or an engine whose manifest names one)."""
    manifest = read_manifest(path)
    onnx_file = path if path.suffix == ".onnx" else onnx_path(manifest, path)
    check_onnx_sha256(manifest, onnx_file)
    return manifest, onnx_file
