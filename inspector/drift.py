"""Drift watch: are the scores of recent parts still those of the good parts the model was trained for?

The model ships the scores of its held-out normal images (manifest `normal_scores`, sorted; written by
`trainer fit`/`evaluate` and `trainer export`). `DriftWatch` keeps the crop scores of the most recent
`[drift] window` parts (every ROI's crop is one sample, comparable with one held-out image: the model scores
crops, not parts) and compares that window with the reference:

- `median_shift`: the window's median minus the reference's, in units of the reference's robust spread
  (IQR / 1.349, the standard deviation for normal data): the bulk of the distribution. The window's
  median is taken without its `set_aside` highest scores, as many as there are crops above their threshold
  beyond what good parts give: those may be real defects, so a burst of defects moves it not at all (without
  this, 20 % high scores move a median by about 0.3 spreads), while a lighting, camera or part change moves
  every good part's score and still shows.
- `ks`: the two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical CDFs), for
  information: defects raise it too, so it does not decide.
- `fail_rate_recent`: the share of the window's parts with an ROI score above its threshold;
  `fail_rate_expected`: the same for good parts, from the share of held-out normal scores above each
  threshold (1 - Π(1 - p_roi) per part). Defects raise the first; with the bulk unmoved the reason says so:
  real defects, or a group of good parts unlike the training images, not a change of the whole line.

State: "unknown" (no reference, or fewer than `min_parts` parts since the model started), "ok", "warning"
or "off" (`[drift] enabled = false`). "warning" has a `cause`: "shift" when |median_shift| >= `warn_shift`,
or "rejects" when `max_fail_rate` is set (> 0; off by default) and more than that share of the window's parts
fail: the one sign of a group of good parts unlike the training images while the bulk stays put, which
scores alone cannot tell from real defects (docs/research/bench/lifecycle/drift.md). A warning clears once
both numbers are below 0.75 × their limits (no flapping); entering "warning" logs one structlog warning.

Threads: `observe` is a publish hook (the publisher thread, once per part: an append, no statistics),
`status` is a status source (computes the statistics, at the status interval) and `use_model` is for the
model swap; one lock guards the window. No torch, only numpy.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import structlog

log = structlog.get_logger("inspector.drift")

MIN_REFERENCE = 8       # held-out normal scores needed for a reference
CLEAR_FRACTION = 0.75   # a warning clears once |median_shift| < CLEAR_FRACTION × warn_shift
IQR_TO_SD = 1.349       # IQR of a normal distribution in standard deviations
MAD_TO_SD = 1.4826


class DriftSettings(Protocol):
    """What the watch reads from the `[drift]` config section (inspector/config.py DriftConfig)."""

    enabled: bool
    window: int
    min_parts: int
    warn_shift: float
    max_fail_rate: float


@dataclass(frozen=True)
class Reference:
    """The held-out normal scores of one model, sorted, with their median and robust spread."""

    scores: np.ndarray
    median: float
    spread: float

    @classmethod
    def of(cls, scores: Sequence[float]) -> Reference | None:
        """None when there are fewer than MIN_REFERENCE finite scores."""
        v = np.sort(np.asarray([s for s in scores if np.isfinite(s)], dtype=np.float64))
        if len(v) < MIN_REFERENCE:
            return None
        return cls(v, float(np.median(v)), robust_spread(v))

    def exceedance(self, threshold: float) -> float:
        """The share of the reference scores above `threshold` (the decision is score > threshold)."""
        return float(len(self.scores) - np.searchsorted(self.scores, threshold, side="right")) / len(self.scores)


def robust_spread(v: np.ndarray) -> float:
    """A standard deviation estimated from the middle of the data: IQR/1.349, else MAD·1.4826, else the sd,
    else a tiny positive number (a constant reference)."""
    q1, q3 = np.quantile(v, [0.25, 0.75])
    for s in ((q3 - q1) / IQR_TO_SD, float(np.median(np.abs(v - np.median(v)))) * MAD_TO_SD, float(np.std(v))):
        if s > 0 and np.isfinite(s):
            return float(s)
    return max(abs(float(np.median(v))) * 1e-6, 1e-12)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov D = max |F_a - F_b| over all values (a and b sorted)."""
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %" if x < 0.1 else f"{100 * x:.0f} %"


class DriftWatch:
    """The rolling window of recent parts' scores against the running model's reference (module docstring).

    `reference(model_id)` (optional) returns the manifest of a model by id: when a result arrives from a
    model other than the watched one, the watch resets and takes that model's reference."""

    def __init__(self, cfg: DriftSettings, model_id: str, manifest: Any = None,
                 reference: Callable[[str], Any] | None = None) -> None:
        self.cfg = cfg
        self._lookup = reference
        self._lock = threading.Lock()
        self._window: deque[tuple[tuple[float, ...], tuple[float, ...]]] = deque(maxlen=cfg.window)
        self._state = "unknown"
        self._last: dict[str, Any] = {}
        self.model_id = ""
        self.reference: Reference | None = None
        self.warnings = 0  # times the state entered "warning" (for tests and logs)
        self.use_model(model_id, manifest)

    # --- inputs ----------------------------------------------------------------------------------
    def use_model(self, model_id: str, manifest: Any) -> None:
        """Watch a new model: the window restarts empty, the reference is its manifest's normal_scores."""
        ref = Reference.of(getattr(manifest, "normal_scores", None) or [])
        with self._lock:
            self.model_id, self.reference = str(model_id), ref
            self._window.clear()
            self._state = "unknown"
        log.info("drift watch: reference set", model_id=model_id,
                 normal_scores=0 if ref is None else len(ref.scores))

    def observe(self, header: dict[str, Any], images: Any = None) -> None:
        """A publish hook: take one published result's ROI scores (parts in error or without scores are
        skipped). A result from another model than the watched one restarts the window on that model."""
        if not self.cfg.enabled or header.get("verdict") == "error":
            return
        model_id = str(header.get("model_id") or "")
        if model_id and model_id != self.model_id:
            self.use_model(model_id, self._lookup(model_id) if self._lookup is not None else None)
        rois = [r for r in header.get("rois") or () if r.get("score") is not None]
        if not rois:
            return
        part = (tuple(float(r["score"]) for r in rois), tuple(float(r["threshold"]) for r in rois))
        with self._lock:
            self._window.append(part)

    # --- outputs ---------------------------------------------------------------------------------
    def status_source(self) -> dict[str, Any]:
        """The status topic's `drift` object (a publisher status source)."""
        return {"drift": self.status()}

    def status(self) -> dict[str, Any]:
        """{state, reason, window_n, median_shift, ks, fail_rate_recent, fail_rate_expected, ...}; logs a
        warning when the state enters "warning"."""
        cfg = self.cfg
        if not cfg.enabled:
            return {"state": "off", "reason": "drift watch off ([drift] enabled = false)"}
        with self._lock:
            parts = list(self._window)
            ref, model_id, before = self.reference, self.model_id, self._state
        out: dict[str, Any] = {"state": "unknown", "reason": "", "model_id": model_id, "window_n": len(parts),
                               "min_parts": cfg.min_parts, "reference_n": 0 if ref is None else len(ref.scores),
                               "warn_shift": cfg.warn_shift, "max_fail_rate": cfg.max_fail_rate, "cause": None,
                               "median_shift": None, "set_aside": None, "ks": None,
                               "fail_rate_recent": None, "fail_rate_expected": None}
        if ref is None:
            out["reason"] = (f"model {model_id} carries no held-out normal scores (exported before the drift watch, "
                             "or trained without held-out images): no reference to compare with; run `trainer "
                             "evaluate RUN_DIR` and `trainer export` again to add them")
        elif len(parts) < cfg.min_parts:
            out["reason"] = (f"collecting: {len(parts)} of the {cfg.min_parts} parts needed since model "
                             f"{model_id} started")
        else:
            out.update(self._compare(parts, ref))
            out["state"], out["reason"], out["cause"] = self._decide(before, out)
        with self._lock:
            if self.model_id == model_id:   # not reset by a model change meanwhile
                self._state = out["state"]
        if out["state"] == "warning" and before != "warning":
            self.warnings += 1
            what = ("scores have moved since the model was trained" if out["cause"] == "shift"
                    else "more parts fail than [drift] max_fail_rate allows")
            log.warning(f"drift warning: {what}", model_id=model_id, cause=out["cause"],
                        median_shift=out["median_shift"], ks=out["ks"], fail_rate_recent=out["fail_rate_recent"],
                        fail_rate_expected=out["fail_rate_expected"], window_n=out["window_n"], reason=out["reason"])
        elif out["state"] == "ok" and before == "warning":
            log.info("drift: scores are back to the model's reference", model_id=model_id,
                     median_shift=out["median_shift"])
        return out

    @staticmethod
    def _compare(parts: list[tuple[tuple[float, ...], tuple[float, ...]]], ref: Reference) -> dict[str, Any]:
        scores = np.fromiter((s for p in parts for s in p[0]), dtype=np.float64)
        thresholds = np.fromiter((t for p in parts for t in p[1]), dtype=np.float64)
        exceed = {t: ref.exceedance(t) for t in set(thresholds.tolist())}
        # crops above their threshold beyond what good parts give may be real defects: the bulk is measured
        # without as many of the highest scores (a defect burst then moves it not at all, a drift still does)
        expected_above = sum(exceed[t] for t in thresholds.tolist())
        set_aside = min(len(scores) - 1, max(0, round(int((scores > thresholds).sum()) - expected_above)))
        ordered = np.sort(scores)
        shift = (float(np.median(ordered[:len(ordered) - set_aside])) - ref.median) / ref.spread
        failed = sum(any(s > t for s, t in zip(*p, strict=True)) for p in parts)
        expected = float(np.mean([1 - np.prod([1 - exceed[t] for t in p[1]]) for p in parts]))
        return {"median_shift": round(shift, 3), "set_aside": set_aside,
                "ks": round(ks_statistic(ordered, ref.scores), 3),
                "fail_rate_recent": round(failed / len(parts), 4), "fail_rate_expected": round(expected, 4)}

    def _decide(self, before: str, m: dict[str, Any]) -> tuple[str, str, str | None]:
        """(state, reason, cause): cause "shift" (the bulk moved) or "rejects" (max_fail_rate exceeded)."""
        cfg = self.cfg
        relax = CLEAR_FRACTION if before == "warning" else 1.0   # hysteresis: a warning clears lower down
        shift, n = float(m["median_shift"]), m["window_n"]
        recent, expected = m["fail_rate_recent"], m["fail_rate_expected"]
        rates = f"{_pct(recent)} of the last {n} parts fail, {_pct(expected)} expected on good parts"
        if abs(shift) >= relax * cfg.warn_shift:
            where = "up" if shift > 0 else "down"
            effect = "False rejects will climb" if shift > 0 else "The model may now pass defects"
            who = "good-looking parts" if shift > 0 else "parts"
            return "warning", (
                f"scores of {who} have moved {where} by {abs(shift):.1f} normal spreads since the model was trained "
                f"(the median of the last {n} parts): lighting, camera or part change? {effect} ({rates}); check "
                "the camera, lighting and parts, or collect good parts at the station and retrain"), "shift"
        bulk = f"the bulk of the scores has not moved (median shift {shift:+.1f} normal spreads)"
        if cfg.max_fail_rate > 0 and recent > relax * cfg.max_fail_rate:
            return "warning", (
                f"{rates}, above the {_pct(cfg.max_fail_rate)} limit ([drift] max_fail_rate); {bulk}, so these are "
                "real defects or a group of good parts unlike the ones the model was trained on: look at the "
                "rejected parts' images; if they are good, label them and retrain on parts collected at the station"
            ), "rejects"
        reason = (f"scores of the last {n} parts match the model's held-out good parts (median shift {shift:+.1f} "
                  f"normal spreads, warning at ±{cfg.warn_shift:g})")
        if recent > max(2 * expected, expected + 0.02):
            reason = (f"{rates}, but {bulk}: real defects, or a group of good parts unlike the ones the model was "
                      "trained on (look at the rejected parts' images), not a change of the whole line")
        return "ok", reason, None
