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


@dataclass(frozen=True)
class Stacked:
    """A batch's crops stacked once (uint8 N×H×W×C: every crop of every part without an error, in order):
    the production engine and the shadow engine both score this very array (stages/decide.py)."""

    parts: list[Part]
    todo: list[int]  # indices into parts of those without an error
    images: np.ndarray | None  # None when there is no crop to score


def stack_crops(parts: list[Part]) -> Stacked:
    todo = [i for i, p in enumerate(parts) if p.error is None]
    crops = [c for i in todo for c in parts[i].crops]
    return Stacked(parts, todo, np.stack(crops) if crops else None)


def score_stacked(engine: Engine, batch: Stacked, stats: Stats | None = None, *, name: str = "engine",
                  log_errors: bool = True) -> list[Scored]:
    """Score a stacked batch, in engine calls of at most engine.max_batch crops; each call's outcome goes to
    `stats` (the status topic's `engine` object). A failing call gives every part in it the error
    "<name> failed: ...", never silence; a part that could not be cropped keeps its own error."""
    out = [Scored(p, error=p.error) for p in batch.parts]
    todo = [out[i] for i in batch.todo]
    if batch.images is None:
        return out
    try:
        r = infer_in_batches(engine, batch.images)  # in calls of at most engine.max_batch crops
    except Exception as e:
        message = f"{name} failed: {type(e).__name__}: {e}"
        if log_errors:
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


def score_batch(engine: Engine, parts: list[Part], stats: Stats | None = None) -> list[Scored]:
    """Score every crop of every part: stack_crops, then score_stacked."""
    return score_stacked(engine, stack_crops(parts), stats)
