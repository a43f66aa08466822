"""`engines bench MODEL [--batch 1,8,32] [--json OUT]`: images/s and p50/p99 latency per batch and backend.

Backends: ONNX Runtime (always), TensorRT (engine + GPU). Callers may add runners of their own
(`trainer bench-eager` adds torch eager of the same graph on the workstation).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.manifest import Manifest, read_manifest
from engines.errors import EngineError
from engines.onnxruntime_engine import OnnxRuntimeEngine, default_threads
from engines.select import engine_file_for, onnx_for
from engines.tensorrt_engine import tensorrt_available

Runner = Callable[[np.ndarray], Any]
Backend = tuple[str, Runner, Callable[[], None]]   # (name, run, close)


def parse_batches(text: str) -> list[int]:
    """"1,8,32" -> [1, 8, 32]; EngineError for anything else."""
    try:
        batches = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        batches = []
    if not batches or any(b < 1 for b in batches):
        raise EngineError(f"--batch wants positive integers separated by commas, e.g. 1,8,32; got {text!r}")
    return sorted(set(batches))


def measure(run: Runner, images: np.ndarray, min_iters: int = 10, min_seconds: float = 1.0,
            warmup: int = 3) -> dict[str, float]:
    """Latency of run(images) over at least min_iters calls and min_seconds; images/s from the total."""
    for _ in range(warmup):
        run(images)
    lat: list[float] = []
    start = time.perf_counter()
    while len(lat) < min_iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        run(images)
        lat.append(time.perf_counter() - t0)
    arr = np.array(lat)
    return {"images_per_s": float(len(images) * len(arr) / arr.sum()),
            "p50_ms": float(np.percentile(arr, 50) * 1e3), "p99_ms": float(np.percentile(arr, 99) * 1e3)}


def runners(model: Path, manifest: Manifest, max_batch: int, threads: int) -> tuple[list[Backend], list[str]]:
    """(name, run, close) for every engine backend available here, and notes on the ones skipped."""
    _, onnx_file = onnx_for(model)
    ort_engine = OnnxRuntimeEngine(onnx_file, manifest, max_batch, threads=threads)
    found: list[Backend] = [("onnxruntime", ort_engine.infer, ort_engine.close)]
    notes: list[str] = []
    engine_file = engine_file_for(model)
    trt_ok, why = tensorrt_available()
    if trt_ok and engine_file is not None:
        from engines.tensorrt_engine import TensorRTEngine

        trt_engine = TensorRTEngine(engine_file, read_manifest(engine_file), max_batch)
        found.append(("tensorrt", trt_engine.infer, trt_engine.close))
    else:
        missing = model.with_suffix(".engine").name
        notes.append(f"tensorrt skipped: {why if not trt_ok else f'no engine {missing}'}")
    return found, notes


def bench(model: str | Path, batches: list[int], threads: int | None = None, min_seconds: float = 1.0,
          extra: Sequence[Backend] = ()) -> tuple[list[dict[str, Any]], list[str]]:
    """Records {backend, batch, images_per_s, p50_ms, p99_ms} for every backend (and `extra`) and batch size."""
    path = Path(model)
    if not path.is_file():
        raise EngineError(f"model file {path} not found")
    manifest = read_manifest(path)
    threads = threads or default_threads()
    found, notes = runners(path, manifest, max(batches), threads)
    found += list(extra)
    h, w, c = manifest.input_shape
    rng = np.random.default_rng(0)
    records: list[dict[str, Any]] = []
    try:
        for batch in batches:
            images = rng.integers(0, 256, (batch, h, w, c), dtype=np.uint8)
            for name, run, _ in found:
                records.append({"backend": name, "batch": batch, **measure(run, images, min_seconds=min_seconds)})
    finally:
        for _, _, close in found:
            close()
    return records, notes


def format_table(records: list[dict[str, Any]]) -> str:
    head = f"{'backend':<14} {'batch':>5} {'images/s':>10} {'p50 ms':>9} {'p99 ms':>9}"
    rows = [f"{r['backend']:<14} {r['batch']:>5} {r['images_per_s']:>10.1f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f}"
            for r in records]
    return "\n".join([head, *rows])


def write_json(records: list[dict[str, Any]], out: str | Path) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(records, indent=2) + "\n")
