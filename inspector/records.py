"""The records that flow between pipeline stages: a captured frame, a triggered part, a decided result.

Plain dataclasses; images are uint8 H×W×C BGR (C = 1 or 3) as everywhere in the project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Verdict = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class Frame:
    number: int  # monotonically increasing from 0 for the life of the capture (survives reconnects)
    image: np.ndarray  # uint8 H×W×C, BGR
    t_mono: float  # time.monotonic() when read: latencies are measured from here
    t_wall: float  # time.time() when read: the capture timestamp subscribers see


@dataclass(frozen=True)
class Roi:
    name: str
    x: int
    y: int
    width: int
    height: int


@dataclass
class Part:
    """A frame chosen by the trigger, cut into one model-sized crop per ROI."""

    part_id: str
    frame: Frame
    trigger: str  # "continuous" | "presence" | "external"
    rois: list[Roi]
    crops: list[np.ndarray] = field(default_factory=list)  # model input, one per ROI (empty on error)
    error: str | None = None  # cropping failed: the part gets verdict "error"


@dataclass
class RoiResult:
    name: str
    score: float | None
    threshold: float
    verdict: Verdict
    crop: np.ndarray | None = None  # model input
    reconstruction: np.ndarray | None = None
    anomaly_map: np.ndarray | None = None  # float32 H×W, same units as the score


@dataclass
class Result:
    part: Part
    verdict: Verdict
    rois: list[RoiResult]
    model_id: str
    error: str | None = None  # why the verdict is "error"
