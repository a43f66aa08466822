"""The figures `trainer evaluate` and `trainer bench` write: ROC curves, score histograms, example grids, bars.

matplotlib with the Agg backend (no display needed), imported when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from common.auroc import auroc


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(path: Path, labels: np.ndarray, kinds: list[str], scores: np.ndarray) -> None:
    """ROC curve overall and per defect type."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    kinds_arr = np.asarray(kinds)
    curves = [("all", np.ones(len(labels), bool))] + [(k, (kinds_arr == k) | (labels == 0))
                                                      for k in sorted(set(kinds) - {"good"})]
    for name, sel in curves:
        if len(np.unique(labels[sel])) == 2:
            fpr, tpr, _ = roc_curve(labels[sel], scores[sel])
            ax.plot(fpr, tpr, lw=2 if name == "all" else 1,
                    label=f"{name} ({auroc(labels[sel], scores[sel]):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (image level)")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_histogram(path: Path, kinds: list[str], scores: np.ndarray, threshold: float | None) -> None:
    """Score histogram: good against each defect type, with the shipped threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(float(scores.min()), float(scores.max()) + 1e-9, 40)
    kinds_arr = np.asarray(kinds)
    for kind in ["good"] + sorted(set(kinds) - {"good"}):
        ax.hist(scores[kinds_arr == kind], bins=bins, alpha=0.5, label=kind)
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label="threshold")
    ax.set(xlabel="anomaly score", ylabel="images", title="scores by type")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _example_indices(kinds: list[str], scores: np.ndarray, per_kind: int = 2, max_cols: int = 12) -> list[int]:
    order = np.argsort(-scores)
    picked: list[int] = []
    for kind in ["good"] + sorted(set(kinds) - {"good"}):
        picked += [int(i) for i in order if kinds[i] == kind][:per_kind]
    return picked[:max_cols]


def plot_examples(path: Path, images: np.ndarray, recons: np.ndarray, maps: np.ndarray, kinds: list[str],
                  scores: np.ndarray) -> None:
    """Columns of test images (highest-scoring per type); rows: input, reconstruction, heat map."""
    plt = _pyplot()
    idx = _example_indices(kinds, scores)
    vmax = float(np.percentile(maps, 99.5)) or 1.0
    fig, axes = plt.subplots(3, len(idx), figsize=(1.6 * len(idx), 5), squeeze=False)

    def rgb(img: np.ndarray) -> np.ndarray:
        return img[..., 0] if img.shape[2] == 1 else img[..., ::-1]

    for col, i in enumerate(idx):
        axes[0, col].imshow(rgb(images[i]), cmap="gray")
        axes[0, col].set_title(f"{kinds[i]}\n{scores[i]:.3f}", fontsize=7)
        axes[1, col].imshow(rgb(recons[i]), cmap="gray")
        axes[2, col].imshow(maps[i], cmap="jet", vmin=0, vmax=vmax)
        for row in range(3):
            axes[row, col].axis("off")
    for row, name in enumerate(["input", "G(E(x))", "anomaly map"]):
        axes[row, 0].text(-0.1, 0.5, name, transform=axes[row, 0].transAxes, rotation=90, va="center",
                          ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_bars(path: Path, records: list[dict[str, Any]], methods: list[str], grey: set[str]) -> None:
    """`trainer bench`'s bar chart: each row's mean image AUROC; the baselines (`grey`) in grey."""
    plt = _pyplot()
    aurocs = {m: [r["image_auroc"] for r in records if r["method"] == m] for m in methods}
    shown = [m for m in methods if aurocs[m]]
    means = [float(np.mean(aurocs[m])) for m in shown]
    fig, ax = plt.subplots(figsize=(1.1 * len(shown) + 2, 3.5))
    bars = ax.bar(shown, means, color=["#999999" if m in grey else "#3a6ea5" for m in shown])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_ylim(min([0.5, *means]) - 0.02, 1.0)
    ax.set_ylabel("image AUROC (mean)")
    ax.set_title("trainer bench")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
