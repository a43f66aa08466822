"""Issue 21, round 2 (research, not product): a judged run's scores, apart and combined.

    python scripts/surface_combine.py RUN DATA OUT.json

Scores the test split of DATA with (1) the run's own judged score (the pixel judge J's pooled map),
(2) the residual score of the same E/G (the shipped score: per-pixel statistics fitted on the run's
training images), (3) the raw-pixel patch kNN on those training images; each is standardised by the
run's held-out normal images (its own validation split, no test labels), then combined by sum and by
max. Prints image AUROC overall and per defect kind; writes them as JSON.
"""
import copy
import json
import sys

import numpy as np
import torch

from common.auroc import auroc
from trainer import checkpoint
from trainer.baselines import PatchKNNBaseline
from trainer.datasets import load_split
from trainer.detector import attach_score_stats, detector_from, fit_score_stats, networks_from
from trainer.fit import split_validation
from trainer.tensors import to_tensor


def per_kind(kinds: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """AUROC of each defect kind against the good images."""
    good = s[kinds == "good"]
    return {str(k): round(auroc(np.r_[np.zeros(len(good)), np.ones((kinds == k).sum())], np.r_[good, s[kinds == k]]), 3)
            for k in sorted(set(kinds)) if k != "good"}


def main(run: str, data: str, out_json: str) -> None:
    torch.set_num_threads(1)
    payload = checkpoint.load(run)
    cfg, nets = networks_from(payload)
    size = cfg.model.image_size
    tr = load_split(data, "train", size)
    te = load_split(data, "test", size)
    tri, vai = split_validation(len(tr.images), cfg.train.val_fraction, cfg.train.seed)

    def scores(det: torch.nn.Module, imgs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([det(to_tensor(imgs[i:i + 64]))[0] for i in range(0, len(imgs), 64)]).numpy()

    det_j = detector_from(cfg, nets).eval()
    cfg_r = copy.deepcopy(cfg)
    cfg_r.model.judge = False
    nets_r = {k: v for k, v in nets.items() if k in ("E", "G", "D")}
    attach_score_stats(cfg_r, nets_r)
    fit_score_stats(cfg_r, nets_r, to_tensor(tr.images[tri]))
    det_r = detector_from(cfg_r, nets_r).eval()
    pk = PatchKNNBaseline().fit(tr.images[tri])
    z = {}
    for name, f in (("judge", lambda im: scores(det_j, im)), ("residual", lambda im: scores(det_r, im)),
                    ("patchknn", pk.score)):
        v, t = f(tr.images[vai]), f(te.images)
        z[name] = (t - v.mean()) / (v.std(ddof=1) + 1e-9)
    combos = dict(z)
    combos["judge+residual sum"] = z["judge"] + z["residual"]
    combos["judge+residual max"] = np.maximum(z["judge"], z["residual"])
    combos["judge+patchknn sum"] = z["judge"] + z["patchknn"]
    combos["judge+patchknn max"] = np.maximum(z["judge"], z["patchknn"])
    combos["all three sum"] = z["judge"] + z["residual"] + z["patchknn"]
    kinds = np.array(te.kinds)
    res = {}
    for k, s in combos.items():
        res[k] = {"auroc": round(auroc(te.labels, s), 3), **per_kind(kinds, s)}
        print(f"{k:22s} {res[k]['auroc']:.3f} {per_kind(kinds, s)}")
    with open(out_json, "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: surface_combine.py RUN DATA OUT.json")
    main(*sys.argv[1:])
