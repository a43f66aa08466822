"""Cut a frame into its ROIs and bring each crop to the model's input: size (INTER_AREA) and channels.

This is the one place where camera pixels become model pixels; the engine graph does the normalisation.
"""

from __future__ import annotations

import cv2
import numpy as np

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


def to_model_input(image: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Resize to H×W with INTER_AREA and convert BGR↔grey to C channels; returns uint8 H×W×C."""
    h, w, c = input_shape
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        if image.ndim == 2:
            image = image[:, :, None]
    if image.shape[2] == 3 and c == 1:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]
    elif image.shape[2] == 1 and c == 3:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image, dtype=np.uint8)


def crop(image: np.ndarray, roi: Roi) -> np.ndarray:
    return image[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]
