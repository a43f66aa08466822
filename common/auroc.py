"""Area under the ROC curve: one implementation for the workstation and the edge box (numpy only)."""

from __future__ import annotations

import numpy as np


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """P(score of an anomalous item > score of a normal one), ties counted half (label 1 = anomalous).

    Rank-based (Mann-Whitney U), identical to sklearn.metrics.roc_auc_score; None when only one class is
    present, where the area is undefined.
    """
    y = np.asarray(labels).astype(bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(y) != len(s):
        raise ValueError(f"auroc: {len(y)} labels for {len(s)} scores")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)   # 1-based ranks, ties averaged
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))
