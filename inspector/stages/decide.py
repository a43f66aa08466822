"""Verdicts: each ROI's score against its threshold; a part fails if any ROI fails, errors if scoring failed.

Thresholds: decision.roi_thresholds[name], else decision.threshold, else the model manifest's threshold.
"""

from __future__ import annotations

import math

from inspector.config import DecisionConfig
from inspector.errors import InspectorError
from inspector.models.active import ModelSet
from inspector.records import Part, Result, RoiResult, Verdict
from inspector.stages.scoring import Scored, score_batch
from inspector.stats import Stats


def resolve_thresholds(roi_names: list[str], cfg: DecisionConfig, manifest_threshold: float | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in roi_names:
        t = cfg.roi_thresholds.get(name, cfg.threshold if cfg.threshold is not None else manifest_threshold)
        if t is None:
            raise InspectorError(f"no threshold for ROI {name!r}: the model's manifest has none; set "
                                 "[decision] threshold = ... (or roi_thresholds) in the configuration")
        if not math.isfinite(float(t)):
            raise InspectorError(f"threshold for ROI {name!r} is {t}: it must be a finite number")
        out[name] = float(t)
    return out


def decide(scored: Scored, thresholds: dict[str, float], model_id: str) -> Result:
    """The part's Result. A score above its threshold fails the ROI; no or non-finite scores are an error."""
    part = scored.part
    error = scored.error
    if error is None and scored.scores is not None and not all(math.isfinite(float(s)) for s in scored.scores):
        error = "engine returned a non-finite score"
    rois: list[RoiResult] = []
    for i, roi in enumerate(part.rois):
        threshold = thresholds.get(roi.name, math.nan)
        crop = part.crops[i] if i < len(part.crops) else None
        if error is not None or scored.scores is None:
            rois.append(RoiResult(roi.name, None, threshold, "error", crop=crop))
            continue
        score = float(scored.scores[i])
        verdict: Verdict = "fail" if score > threshold else "pass"
        rois.append(RoiResult(roi.name, score, threshold, verdict, crop=crop,
                              reconstruction=scored.reconstructions[i] if scored.reconstructions is not None else None,
                              anomaly_map=scored.maps[i] if scored.maps is not None else None))
    if error is not None:
        return Result(part, "error", rois, model_id, error=error)
    verdict: Verdict = "fail" if any(r.verdict == "fail" for r in rois) else "pass"
    return Result(part, verdict, rois, model_id)


def score_and_decide(models: ModelSet, parts: list[Part], stats: Stats | None = None) -> list[Result]:
    """One batch through the production model (and the shadow, when there is one): each part's Result."""
    production = models.production
    return [decide(s, production.thresholds, production.model_id)
            for s in score_batch(production.engine, parts, stats=stats)]
