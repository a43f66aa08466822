"""The one interface every inference backend implements (docs/architecture.md, "engines").

An engine takes a uint8 N×H×W×C batch (BGR for colour) and returns scores, reconstructions and maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from engines.errors import EngineError
from engines.manifest import Manifest


@dataclass
class InferResult:
    scores: np.ndarray            # float32 N
    reconstructions: np.ndarray   # uint8 N×H×W×C
    maps: np.ndarray              # float32 N×H×W


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
