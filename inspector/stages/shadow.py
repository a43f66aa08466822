"""The `shadow` topic's header (docs/protocol.md): the shadow model's verdict of a published part.

Built by the publishing thread beside the result it belongs to (same `sequence`), journaled in the
same row (journal.py's shadow columns) and sent after it. Header only, no images: the images are the
result's. The gateway never subscribes to this topic, so a shadow verdict never reaches the PLC.
"""

from __future__ import annotations

import math
from typing import Any

from inspector.records import Result, ShadowResult, Verdict

SHADOW_TYPE = "shadow"


def roi_verdict(score: float | None, threshold: float) -> Verdict:
    """An ROI's shadow verdict, as stages/decide.py decides production ROIs: above the threshold fails."""
    if score is None or not math.isfinite(score):
        return "error"
    return "fail" if score > threshold else "pass"


def shadow_header(result: Result, shadow: ShadowResult, sequence: int, station_id: str, run_id: str,
                  schema_version: int) -> dict[str, Any]:
    """The header of the `shadow` message for the result numbered `sequence`."""
    part = result.part
    rois = []
    for roi in part.rois:
        score = shadow.scores.get(roi.name)
        threshold = shadow.thresholds.get(roi.name, math.nan)
        rois.append({"name": roi.name, "score": None if score is None else round(float(score), 6),
                     "threshold": threshold,
                     "verdict": "error" if shadow.verdict == "error" else roi_verdict(score, threshold)})
    return {
        "schema_version": schema_version,
        "type": SHADOW_TYPE,
        "sequence": sequence,
        "station_id": station_id,
        "run_id": run_id,
        "part_id": part.part_id,
        "frame": part.frame.number,
        "captured_at": round(part.frame.t_wall, 6),
        "model_id": shadow.model_id,
        "verdict": shadow.verdict,
        "error": shadow.error,
        "production": {"model_id": result.model_id, "verdict": result.verdict},
        "agrees": shadow.verdict == result.verdict,
        "rois": rois,
    }
