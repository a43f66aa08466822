"""One-class AUROC on scikit-learn's real handwritten digits (8×8 upsampled to 32 px), detector vs PCA/kNN.

Per digit d: half of d's images (seeded) train, the other half plus every other digit test. Dev tool only.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from trainer.baselines import KNNBaseline, PCABaseline
from trainer.config import build_config, replace
from trainer.evaluate import score_images
from trainer.fit import fit_arrays


def digits_32() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    imgs = (d.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    up = np.stack([cv2.resize(im, (32, 32), interpolation=cv2.INTER_CUBIC) for im in imgs])
    return up[..., None], d.target


def split(images: np.ndarray, target: np.ndarray, digit: int, seed: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = np.flatnonzero(target == digit)
    idx = np.random.default_rng(seed).permutation(idx)
    tr, te_norm = idx[: len(idx) // 2], idx[len(idx) // 2:]
    te = np.concatenate([te_norm, np.flatnonzero(target != digit)])
    return images[tr], images[te], (target[te] != digit).astype(np.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="ours-proj")
    p.add_argument("--digits", default="0-9")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trace", action="store_true", help="print test AUROC per epoch (monitoring only)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    lo, _, hi = a.digits.partition("-")
    digits = list(range(int(lo), int(hi) + 1)) if hi else [int(x) for x in a.digits.split(",")]
    images, target = digits_32()
    rows = []
    for d in digits:
        tr, te, y = split(images, target, d, a.seed)
        cfg = build_config(a.model, {"image_size": 32, "channels": 1, "epochs": a.epochs, "seed": a.seed,
                                     "batch_size": 16}, a.set)
        trace: list[float] = []

        def hook(epoch: int, nets: dict, cfg=cfg, te=te, y=y, trace=trace) -> dict:
            if not a.trace or epoch % 10:
                return {}
            auc = float(roc_auc_score(y, score_images(cfg, nets, te)[0]))
            trace.append(round(auc, 3))
            for n in nets.values():
                n.train()
            return {"test_auroc": auc}

        t0 = time.time()
        res = fit_arrays(tr, cfg, on_epoch=hook, verbose=False)
        secs = time.time() - t0
        auc = float(roc_auc_score(y, score_images(cfg, res.nets, te)[0]))
        other = replace(cfg, score_reduce="mean" if cfg.score.score_reduce == "max" else "max")
        auc_other = float(roc_auc_score(y, score_images(other, res.nets, te)[0]))
        pca = float(roc_auc_score(y, PCABaseline(20).fit(tr).score(te)))
        knn = float(roc_auc_score(y, KNNBaseline(1).fit(tr).score(te)))
        row = {"digit": d, "auroc": round(auc, 4), f"auroc_{other.score.score_reduce}": round(auc_other, 4), "pca": round(pca, 4), "knn": round(knn, 4),
               "best_epoch": res.best_epoch, "z_norm": round(res.history[-1].get("z_norm", 0.0), 1),
               "recon": round(res.history[-1].get("recon", 0.0), 3), "secs": round(secs, 1), "trace": trace}
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if k.startswith("auroc") or k in ("pca", "knn")]
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
    print(json.dumps({"model": a.model, "set": a.set, "epochs": a.epochs, "mean": mean}), flush=True)


if __name__ == "__main__":
    main()
