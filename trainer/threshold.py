"""The shipped pass/fail threshold, from the held-out normal images' scores only (no test labels).

`threshold_rule = "sigma"` (default): mean + `threshold_sigmas` (3) standard deviations of the held-out
normal scores, the control limit of statistical process control that quality engineers already use.
It uses every held-out image, where the empirical 99th percentile of the few dozen a line usually
holds out is decided by its top one or two; and it leaves room for two optimistic biases of those
images (the shipped epoch is the one that reconstructed them best, and real production adds
variation they do not show). `"quantile"`: the `threshold_quantile` of the held-out scores.
"""

from __future__ import annotations

import numpy as np

from trainer.config import ScoreConfig


def held_out_threshold(scores: np.ndarray, s: ScoreConfig) -> float:
    """The threshold from held-out normal scores (at least 2 for "sigma", 1 for "quantile")."""
    v = np.asarray(scores, dtype=np.float64)
    if s.threshold_rule == "sigma" and len(v) >= 2:
        return float(v.mean() + s.threshold_sigmas * v.std(ddof=1))
    return float(np.quantile(v, s.threshold_quantile))


def threshold_source(s: ScoreConfig, n: int) -> str:
    rule = (f"mean + {s.threshold_sigmas:g} sd" if s.threshold_rule == "sigma" and n >= 2
            else f"q{s.threshold_quantile:g}")
    return f"{rule} of {n} held-out normals"
