"""Verdicts: each ROI's score against its threshold; a part fails if any ROI fails, errors if scoring failed.

Thresholds: decision.roi_thresholds[name], else decision.threshold, else the model manifest's threshold.
A shadow model (`[shadow] model`) scores the very same stacked crops after the production model and is
decided against its own manifest's threshold; its result rides along as `Result.shadow` and can never
change the production verdict (a shadow failure is a shadow verdict "error").
"""

from __future__ import annotations

import math

import structlog

from inspector.config import DecisionConfig
from inspector.errors import InspectorError
from inspector.models.active import LoadedModel, ModelSet
from inspector.records import Part, Result, RoiResult, ShadowResult, Verdict
from inspector.stages.scoring import Scored, Stacked, score_stacked, stack_crops
from inspector.stats import Stats

log = structlog.get_logger("inspector.decide")


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
    if error is None and (scored.scores is None or len(scored.scores) != len(part.rois)):
        error = "engine returned no score for a crop"
    elif error is None and not all(math.isfinite(float(s)) for s in scored.scores):
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
    """One batch through the production model (and the shadow, when there is one): each part's Result.
    The crops are stacked once; both engines score that same array."""
    production = models.production
    batch = stack_crops(parts)
    results = [decide(s, production.thresholds, production.model_id)
               for s in score_stacked(production.engine, batch, stats=stats)]
    if models.shadow is not None:
        for result, shadow in zip(results, score_shadow(models.shadow, batch), strict=True):
            result.shadow = shadow
    return results


class _ShadowLog:
    """Logs a shadow failure when it starts or changes and when it ends, not once per batch."""

    error: str | None = None

    @classmethod
    def seen(cls, error: str | None, model_id: str) -> None:
        if error != cls.error:
            if error is not None:
                log.error("shadow model failed: production verdicts are unaffected", shadow_model_id=model_id,
                          error=error)
            else:
                log.info("shadow model scoring again", shadow_model_id=model_id)
            cls.error = error


def score_shadow(shadow: LoadedModel, batch: Stacked) -> list[ShadowResult]:
    """The shadow model's result for every part of the batch; whatever goes wrong is its verdict "error"."""
    try:
        scored = score_stacked(shadow.engine, batch, name="shadow engine", log_errors=False)
        out = [shadow_decide(s, shadow.thresholds, shadow.model_id) for s in scored]
    except Exception as e:  # noqa: BLE001 - nothing the shadow does may reach the production verdict
        message = f"shadow failed: {type(e).__name__}: {e}"
        out = [ShadowResult(shadow.model_id, {r.name: None for r in p.rois}, shadow.thresholds, "error", message)
               for p in batch.parts]
    failed = next((r.error for r in out if r.error is not None and r.error.startswith("shadow")), None)
    _ShadowLog.seen(failed, shadow.model_id)
    return out


def shadow_decide(scored: Scored, thresholds: dict[str, float], model_id: str) -> ShadowResult:
    """`decide` for the shadow, kept without the production result's images: per ROI score, the verdict
    and why it is an error. `thresholds` is shared, read-only."""
    r = decide(scored, thresholds, model_id)
    return ShadowResult(model_id, {x.name: x.score for x in r.rois}, thresholds, r.verdict, r.error)
