"""Call the engine on a batch of parts; a failing engine call gives every part in it an error, never silence.

The engine comes from `engines.load_engine` (TensorRT or ONNX Runtime) and is typed by `engines.Engine`;
`engines.base.infer_in_batches` splits a batch into calls of at most the engine's max batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from common.host import available_cores
from engines import Engine, load_engine
from engines.base import infer_in_batches
from inspector.config import EngineConfig
from inspector.errors import InspectorError
from inspector.records import Part
from inspector.stats import Stats

log = structlog.get_logger("inspector.scoring")


@dataclass
class Scored:
    part: Part
    scores: np.ndarray | None = None  # float32, one per ROI
    reconstructions: np.ndarray | None = None  # uint8 R×H×W×C
    maps: np.ndarray | None = None  # float32 R×H×W
    error: str | None = None


def open_engine(cfg: EngineConfig, path: Path | None = None) -> Engine:
    """Load the configured model through engines.load_engine; InspectorError with the fix if it cannot."""
    path = path or cfg.path
    if path is None:
        raise InspectorError("engine.path is not set: put `path = \"/path/model.onnx\"` under [engine] "
                             "or set INSPECTOR_ENGINE__PATH")
    if not Path(path).exists():
        raise InspectorError(f"engine.path: {path} does not exist (export it with `trainer export`, "
                             "build it with `engines build`)")
    try:  # TensorRT or ONNX Runtime, as [engine] backend says
        return load_engine(path, backend=cfg.backend, max_batch=cfg.max_batch, threads=engine_cpu_threads(cfg))
    except Exception as e:  # engines.errors.EngineError says what to do; anything else is shown as is
        raise InspectorError(f"engine {path}: {e}") from None


def engine_cpu_threads(cfg: EngineConfig) -> int | None:
    """ONNX Runtime's CPU threads for the daemon: [engine] cpu_threads; else ENGINES_ORT_THREADS (None:
    the engines package reads it); else every core this process may use but one, which stays with
    capture, trigger, cropping and image encoding, so a busy engine never starves the camera."""
    if cfg.cpu_threads is not None:
        return cfg.cpu_threads
    if os.environ.get("ENGINES_ORT_THREADS"):
        return None
    return max(1, available_cores() - 1)


def score_batch(engine: Engine, parts: list[Part], stats: Stats | None = None) -> list[Scored]:
    """Score every crop of every part, in engine calls of at most engine.max_batch crops; each call's
    outcome goes to `stats` (the status topic's `engine` object)."""
    out = [Scored(p, error=p.error) for p in parts]
    todo = [s for s in out if s.error is None]
    crops = [c for s in todo for c in s.part.crops]
    if not crops:
        return out
    try:
        r = infer_in_batches(engine, np.stack(crops))  # in calls of at most engine.max_batch crops
    except Exception as e:
        message = f"engine failed: {type(e).__name__}: {e}"
        log.error("scoring failed", error=message, parts=len(todo))
        for s in todo:
            s.error = message
        if stats is not None:
            stats.engine_call(message)
        return out
    if stats is not None:
        stats.engine_call(None)
    i = 0
    for s in todo:
        n = len(s.part.crops)
        s.scores, s.reconstructions, s.maps = r.scores[i : i + n], r.reconstructions[i : i + n], r.maps[i : i + n]
        i += n
    return out
