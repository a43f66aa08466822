"""Post-hoc study: which signals of a trained E/G/D rank a run's test split, alone and combined.

    python scripts/score_components.py RUN_DIR [RUN_DIR ...]

For each run, on the same weights: the shipped score, its two terms (L_R, L_D), L_R with squared
residuals, and the Mahalanobis distance of the encoder's code E(x) and of D's pooled features f(x)
to the training images' (Gaussian fitted on the training split, Ledoit-Wolf shrinkage), each
standardised on the training images and summed with the shipped score. A study tool: test labels
are only read for the printed AUROCs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from trainer import checkpoint
from trainer.detector import detector_from, networks_from
from trainer.evaluate import run_splits
from trainer.tensors import to_tensor


@torch.no_grad()
def signals(det, x: torch.Tensor, batch: int = 256) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        score, recon, _ = det(xb)
        maps, l_d, z, l_p = det.raw(xb)
        f_x = det.D.features(xb, z) if det.D is not None else xb.new_zeros(len(xb), 1)
        f_r = det.D.features(recon, z) if det.D is not None else f_x
        parts = {"shipped": score, "z": z, "f": f_x, "l_d": l_d, "map_mean": maps.flatten(1).mean(1),
                 "sq_mean": (xb - recon).pow(2).flatten(1).mean(1), "fdiff": (f_x - f_r)}
        if det.D is not None:
            parts["d_logit"] = l_p                              # L_P = -D(x, E(x)), as the score has it
            parts["d_logit_recon"] = -det.D.judge(f_r, z)
        for k, v in parts.items():
            out.setdefault(k, []).append(v.double().cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def mahalanobis(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lw = LedoitWolf().fit(train)
    return lw.mahalanobis(train), lw.mahalanobis(test)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    a = ap.parse_args()
    table: dict[str, list[float]] = {}
    for run in a.runs:
        payload = checkpoint.load(run)
        cfg, nets = networks_from(payload)
        det = detector_from(cfg, nets).eval()
        x_fit, test = run_splits(payload, cfg)
        s_tr, s_te = signals(det, x_fit), signals(det, to_tensor(test.images))
        y = test.labels
        cand_tr: dict[str, np.ndarray] = {}
        cand_te: dict[str, np.ndarray] = {}
        for k in ("shipped", "l_d", "map_mean", "sq_mean", "d_logit", "d_logit_recon"):
            if k in s_tr:
                cand_tr[k], cand_te[k] = s_tr[k], s_te[k]
        for k in ("z", "f", "fdiff"):
            cand_tr[f"maha_{k}"], cand_te[f"maha_{k}"] = mahalanobis(s_tr[k], s_te[k])
        std = {k: (cand_te[k] - cand_tr[k].mean()) / (cand_tr[k].std() + 1e-12) for k in cand_te}
        np.savez(run / "score_components.npz", labels=y, **{f"test_{k}": v for k, v in std.items()})
        for k in list(std):
            if k != "shipped":
                for w in (0.25, 1.0):
                    std[f"shipped+{w}*{k}"] = std["shipped"] + w * std[k]
        line = []
        for k, v in std.items():
            auc = roc_auc_score(y, v)
            table.setdefault(k, []).append(auc)
            line.append(f"{k} {auc:.4f}")
        print(run, " | ".join(line), flush=True)
    print("== mean over runs")
    for k, v in table.items():
        print(f"{k:32s} {np.mean(v):.4f}  " + " ".join(f"{x:.4f}" for x in v))


if __name__ == "__main__":
    main()
