"""Post-hoc sweep of the score's options on trained runs: same weights, the score rebuilt per variant.

    python scripts/score_sweep.py RUN_DIR [RUN_DIR ...] --try "score_tolerance=0" --try "smooth_sigma=2 lam=0.3"

Each --try is a space-separated list of KEY=VALUE score options (score_tolerance, smooth_sigma, lam,
score_reduce, score_channels, score_normalize); the score statistics are refitted on the run's
training images for each, as `trainer fit` does, and the test split is scored. Prints image AUROC
(and per defect for folder data), shipped first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from trainer import checkpoint, detector
from trainer.config import replace
from trainer.evaluate import image_metrics, run_splits, score_images


def aurocs(test, scores: np.ndarray) -> dict[str, float]:
    """Image AUROC, and per defect type for folder data (MNIST's nine other digits are left out)."""
    m = image_metrics(test.labels, test.kinds, scores)
    per_type = {} if any(k.startswith("digit") for k in test.kinds) else m["auroc_per_type"]
    return {"image": m["image_auroc"], **per_type}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--try", dest="tries", action="append", default=[])
    a = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    for run in a.runs:
        payload = checkpoint.load(run)
        cfg, nets = detector.networks_from(payload)
        x_fit, test = run_splits(payload, cfg)
        for label in ["shipped", *a.tries]:
            changes = {} if label == "shipped" else dict(item.split("=", 1) for item in label.split())
            var = replace(cfg, **changes)
            scored = {k: v for k, v in nets.items() if k != "S"}
            detector.attach_score_stats(var, scored)
            detector.fit_score_stats(var, scored, x_fit)
            res = aurocs(test, score_images(var, scored, test.images)[0])
            rows.setdefault(label, []).append(res)
            print(f"{run} | {label:40s} " + " ".join(f"{k} {v:.4f}" for k, v in res.items()), flush=True)
    print("== mean over runs")
    for label, rs in rows.items():
        print(f"{label:40s} " + " ".join(f"{k} {np.mean([r[k] for r in rs]):.4f}" for k in rs[0]))


if __name__ == "__main__":
    main()
