"""Test AUROC of the weights that would ship, epoch by epoch: how long should a data set train?

    python scripts/epoch_curve.py DATA [--mnist-digit D] [--model ours-proj] [--epochs N]
        [--every K] [--seed S] [--set KEY=VALUE ...] [--json OUT.json]

Trains like `trainer fit` (same defaults, MNIST defaults for an IDX folder) and, every K epochs, fits
the score statistics on the training images and scores the test split with the averaged weights.
A study tool: the test labels are only read for the printed curve, never by training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from trainer import detector
from trainer.config import build_config, with_mnist_defaults
from trainer.datasets import load_split
from trainer.evaluate import image_metrics, score_images
from trainer.fit import fit_arrays, split_validation
from trainer.tensors import to_tensor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--mnist-digit", type=int, default=None)
    ap.add_argument("--model", default="ours-proj")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    mnist = a.mnist_digit is not None
    probe = build_config(a.model, with_mnist_defaults({}, mnist))
    train = load_split(a.data, "train", probe.model.image_size, None, a.mnist_digit)
    test = load_split(a.data, "test", probe.model.image_size, int(train.images.shape[3]), a.mnist_digit)
    overrides = {"channels": int(train.images.shape[3]), "seed": a.seed, "epochs": a.epochs}
    cfg = build_config(a.model, with_mnist_defaults(overrides, mnist), a.set)
    fit_idx, _ = split_validation(len(train.images), cfg.train.val_fraction, cfg.train.seed)
    x_fit = to_tensor(train.images[fit_idx])
    curve: list[dict] = []

    def hook(epoch: int, nets: dict) -> dict:
        if epoch % a.every and epoch != 1:
            return {}
        scored = dict(nets)
        detector.attach_score_stats(cfg, scored)
        detector.fit_score_stats(cfg, scored, x_fit)
        scores = score_images(cfg, scored, test.images)[0]
        m = image_metrics(test.labels, test.kinds, scores)
        row = {"epoch": epoch, "auroc": round(m["image_auroc"], 4)}
        if not mnist:
            row.update({k: round(v, 4) for k, v in m["auroc_per_type"].items()})
        curve.append(row)
        print(json.dumps(row), flush=True)
        return {"test_auroc": row["auroc"]}

    t0 = time.time()
    res = fit_arrays(train.images, cfg, on_epoch=hook, verbose=False)
    print(f"shipped epoch {res.best_epoch}; {time.time() - t0:.0f} s")
    if a.json:
        a.json.write_text(json.dumps({"sets": a.set, "curve": curve, "best_epoch": res.best_epoch}, indent=1))


if __name__ == "__main__":
    main()
