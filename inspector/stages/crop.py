"""Cut a frame into its ROIs and bring each crop to the model's input: size (INTER_AREA) and channels,
with common.images.fit_image, the one place where camera or file pixels become model pixels (the
trainer reads its images through it too); the engine graph does the normalisation.
"""

from __future__ import annotations

import numpy as np

from common.images import fit_image
from inspector.config import RoiConfig
from inspector.errors import InspectorError
from inspector.records import Roi


def resolve_rois(configured: list[RoiConfig], frame_shape: tuple[int, ...]) -> list[Roi]:
    """The configured ROIs, or one ROI "center": the centred square of the frame's height."""
    if configured:
        return [Roi(r.name, r.x, r.y, r.width, r.height) for r in configured]
    h, w = frame_shape[:2]
    side = min(h, w)
    return [Roi("center", (w - side) // 2, (h - side) // 2, side, side)]


def check_rois(rois: list[Roi], frame_shape: tuple[int, ...]) -> str | None:
    """None if every ROI lies inside the frame, else a message naming the first that does not."""
    h, w = frame_shape[:2]
    for r in rois:
        if r.x + r.width > w or r.y + r.height > h:
            return f"roi {r.name!r} ({r.x},{r.y} {r.width}x{r.height}) lies outside the {w}x{h} frame"
    return None


def frame_rois(configured: list[RoiConfig], frame_shape: tuple[int, ...]) -> list[Roi]:
    """resolve_rois, checked against the frame: InspectorError naming the ROI that does not fit."""
    rois = resolve_rois(configured, frame_shape)
    problem = check_rois(rois, frame_shape)
    if problem:
        raise InspectorError(f"rois: {problem}; fix [[rois]] in the configuration")
    return rois


def crop(image: np.ndarray, roi: Roi) -> np.ndarray:
    """The ROI of a frame at full resolution (a view, not a copy)."""
    return image[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]


def model_crops(image: np.ndarray, rois: list[Roi], input_shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Every ROI of a frame as model input: uint8 H×W×C of the engine's input_shape."""
    h, w, c = input_shape
    return [fit_image(crop(image, r), (h, w), c) for r in rois]
