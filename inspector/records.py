"""The records that flow between pipeline stages: a captured frame, a triggered part, a decided result and
the encoded message it leaves as.

Plain dataclasses; images are uint8 H×W×C BGR (C = 1 or 3) as everywhere in the project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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


@dataclass(frozen=True)
class ShadowResult:
    """The shadow model's judgement of the same crops (docs/lifecycle.md "Shadow"): published on the `shadow`
    topic and journaled beside the production verdict, never sent to the PLC and never its verdict."""

    model_id: str
    scores: dict[str, float | None]  # per ROI name; None when the shadow could not score it
    thresholds: dict[str, float]  # the shadow manifest's threshold per ROI ([decision] overrides do not apply)
    verdict: Verdict
    error: str | None = None  # why the verdict is "error"


@dataclass
class Result:
    part: Part
    verdict: Verdict
    rois: list[RoiResult]
    model_id: str
    error: str | None = None  # why the verdict is "error"
    shadow: ShadowResult | None = None  # with [shadow] model set: the candidate's verdict of the same crops


@dataclass
class Outgoing:
    """One result ready to leave (stages/encode.py builds it): its header (and the exact JSON sent), the images
    sent after it, and the images kept in the image store for a failed or error part,
    {(roi, kind): (format, bytes)}. The publisher sends it, the recorder journals and stores it."""

    header: dict[str, Any]
    raw: bytes
    images: list[bytes]
    stored: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    shadow: dict[str, Any] | None = None  # the `shadow` topic's header (stages/shadow.py), journaled with the row
