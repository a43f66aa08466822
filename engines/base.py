"""The one interface every inference backend implements (docs/architecture.md, "engines").

An engine takes a uint8 N×H×W×C batch (BGR for colour) and returns scores, reconstructions and maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from common.manifest import OUTPUT_NAMES, Manifest
from engines.errors import EngineError


@dataclass
class InferResult:
    scores: np.ndarray            # float32 N
    reconstructions: np.ndarray   # uint8 N×H×W×C
    maps: np.ndarray              # float32 N×H×W

    @classmethod
    def copy_rows(cls, buffers: Mapping[str, np.ndarray], n: int) -> InferResult:
        """The first n rows of an engine's output buffers (named as in the manifest), as copies the caller
        owns: the engine reuses its buffers on the next call."""
        score, reconstruction, anomaly_map = OUTPUT_NAMES
        return cls(scores=buffers[score][:n].astype(np.float32, copy=True),
                   reconstructions=buffers[reconstruction][:n].copy(),
                   maps=buffers[anomaly_map][:n].astype(np.float32, copy=True))

    @classmethod
    def concatenate(cls, parts: Sequence[InferResult]) -> InferResult:
        return cls(scores=np.concatenate([p.scores for p in parts]),
                   reconstructions=np.concatenate([p.reconstructions for p in parts]),
                   maps=np.concatenate([p.maps for p in parts]))


@runtime_checkable
class Engine(Protocol):
    manifest: Manifest
    max_batch: int
    input_shape: tuple[int, int, int]        # H, W, C
    backend: str                             # "onnxruntime" | "tensorrt"

    def infer(self, images: np.ndarray) -> InferResult: ...

    def close(self) -> None: ...


def check_batch(images: object, input_shape: tuple[int, int, int], max_batch: int) -> np.ndarray:
    """The batch as a C-contiguous uint8 N×H×W×C array, or an EngineError saying what is wrong."""
    if not isinstance(images, np.ndarray):
        raise EngineError(f"images must be a numpy array (uint8 N×H×W×C), got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise EngineError(f"images must be uint8 (as the camera or cv2.imread gives them), got {images.dtype}; "
                          "do not normalise them, the model does that itself")
    h, w, c = input_shape
    if images.ndim != 4:
        hint = "; add the batch axis with images[None]" if images.ndim == 3 else ""
        raise EngineError(f"images must be N×H×W×C = N×{h}×{w}×{c}, got shape {images.shape}{hint}")
    if images.shape[1:] != (h, w, c):
        raise EngineError(f"this model takes N×{h}×{w}×{c} images, got {'×'.join(map(str, images.shape))}; "
                          f"resize the crops to {w}×{h} with {c} channel(s)")
    n = images.shape[0]
    if not 1 <= n <= max_batch:
        raise EngineError(f"batch of {n} images is outside 1..{max_batch} (the engine's maximum batch); "
                          "split the batch, or load the engine with a larger max_batch")
    return np.ascontiguousarray(images)


def infer_in_batches(engine: Engine, images: np.ndarray) -> InferResult:
    """Any number of images through `engine`, in calls of at most engine.max_batch, as one result.

    A call that returns another number of results than it was given images is an EngineError."""
    parts = []
    for start in range(0, len(images), engine.max_batch):
        chunk = images[start : start + engine.max_batch]
        r = engine.infer(chunk)
        r = InferResult(scores=np.asarray(r.scores, dtype=np.float32).reshape(-1),
                        reconstructions=np.asarray(r.reconstructions), maps=np.asarray(r.maps, dtype=np.float32))
        if not len(r.scores) == len(r.reconstructions) == len(r.maps) == len(chunk):
            raise EngineError(f"engine returned {len(r.scores)} results for {len(chunk)} images")
        parts.append(r)
    return InferResult.concatenate(parts)
