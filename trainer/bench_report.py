"""`trainer bench`'s report: the tables of results.md (one data set, categories, MNIST digits) and its chart.

Image AUROC per method row, mean ± sample standard deviation over seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trainer.baselines import BASELINES
from trainer.config import VARIANTS
from trainer.plots import plot_bars

METHODS = (*VARIANTS, *BASELINES)


def _mean_std(values: list[float]) -> str:
    """The mean, ± the sample standard deviation (ddof 1) where there are several values."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def _by(records: list[dict[str, Any]], method: str, dataset: str | None = None) -> list[dict[str, Any]]:
    return [r for r in records if r["method"] == method and (dataset is None or r["dataset"] == dataset)]


def table_folder(records: list[dict[str, Any]], methods: list[str]) -> str:
    """The paper's Table 1: one row per method, image AUROC, per-defect AUROC, cost."""
    defects = sorted({k for r in records for k in r["per_defect_auroc"]})
    head = ["method", "image AUROC", *defects, "train s", "images/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        rs = _by(records, m)
        if not rs:
            continue
        cells = [m, _mean_std([r["image_auroc"] for r in rs])]
        cells += [_mean_std([r["per_defect_auroc"][d] for r in rs if d in r["per_defect_auroc"]]) for d in defects]
        cells += [f"{np.mean([r['train_seconds'] for r in rs]):.0f}", images_per_s_text(np.mean([r["images_per_s"] for r in rs]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def images_per_s_text(images_per_s: float) -> str:
    """Whole images per second, with a decimal below 10 so a slow method (AnoGAN's search) does not read 0."""
    return f"{images_per_s:.0f}" if images_per_s >= 10 else f"{images_per_s:.1f}"


def table_digits(records: list[dict[str, Any]], methods: list[str]) -> str:
    """MNIST one-class: a column per normal digit, then the mean over digits (± std over seeds)."""
    digits = sorted({r["dataset"] for r in records}, key=lambda s: int(s.split("_")[1]))
    head = ["method", *[d.split("_")[1] for d in digits], "mean", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        if not _by(records, m):
            continue
        cells = [m]
        for d in digits:
            cells.append(_mean_std([r["image_auroc"] for r in _by(records, m, d)]))
        seeds = sorted({r["seed"] for r in _by(records, m)})
        per_seed = [np.mean([r["image_auroc"] for r in _by(records, m) if r["seed"] == s]) for s in seeds]
        cells += [_mean_std([float(v) for v in per_seed]),
                  f"{np.mean([r['train_seconds'] for r in _by(records, m)]):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_categories(records: list[dict[str, Any]], methods: list[str]) -> str:
    """Several folder data sets (categories, e.g. surfaces): a column per category, its image AUROC; then
    the mean and the worst category (the mean over seeds first)."""
    cats = sorted({r["dataset"] for r in records})
    head = ["method", *cats, "mean", "worst", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        if not _by(records, m):
            continue
        cells = [m]
        means = []
        for c in cats:
            values = [r["image_auroc"] for r in _by(records, m, c)]
            cells.append(_mean_std(values))
            if values:
                means.append(float(np.mean(values)))
        complete = len(means) == len(cats)
        cells += [f"{np.mean(means):.3f}" if complete else "–", f"{min(means):.3f}" if complete else "–",
                  f"{np.mean([r['train_seconds'] for r in _by(records, m)]):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def row_order(labels: list[str]) -> list[str]:
    """Table rows: the plain methods in METHODS order, then ablation rows as they were first run."""
    plain = [m for m in METHODS if m in labels]
    return plain + [label for label in labels if label not in plain]


def write_report(out: Path, recs: list[dict[str, Any]], meta: dict[str, Any], mnist: bool, command: str) -> None:
    """results.md and results.png over every record of a results file (earlier runs' rows included)."""
    methods = row_order(list(dict.fromkeys(r["method"] for r in recs)))
    datasets = sorted({r["dataset"] for r in recs})
    if mnist:
        table = table_digits(recs, methods)
    elif len(datasets) > 1:
        table = table_categories(recs, methods) + "".join(
            f"\n\n### {d}\n\n" + table_folder([r for r in recs if r["dataset"] == d], methods) for d in datasets)
    else:
        table = table_folder(recs, methods)
    seeds = sorted({r["seed"] for r in recs})
    text = (f"# trainer bench results\n\nCommand: `{command}`\n\nMachine: {meta['machine']}\n\n"
            f"Image-level AUROC: the mean ± the sample standard deviation over seeds where a row has more than "
            f"one (seeds {', '.join(map(str, seeds))}).\n\n{table}\n")
    (out / "results.md").write_text(text)
    plot_bars(out / "results.png", recs, methods, grey=set(BASELINES))
