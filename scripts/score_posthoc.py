"""Post-hoc score study on a trained run: the same checkpoint, several ways to turn E/G/D into A(x).

Every variant keeps the paper's form A = (1-λ)·L_R + λ·L_D with f an intermediate feature of D; what
changes is which feature, how its residual is standardised and λ. Statistics come from the run's
training images (never the test split), like the shipped ScoreStats.

    python scripts/score_posthoc.py RUN_DIR [RUN_DIR ...] [--data DATA] [--json OUT.json]

Prints one AUROC per variant and run (and per defect for folder data).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from trainer import checkpoint
from trainer.datasets import load_split
from trainer.detector import detector_from, networks_from
from trainer.evaluate import image_metrics
from trainer.tensors import to_tensor


@torch.no_grad()
def components(det: torch.nn.Module, x_all: torch.Tensor, batch: int = 256) -> dict[str, np.ndarray]:
    """Per image: shipped score, pooled L_R (shipped), and per-layer per-channel |φ_l(x) - φ_l(x̂)| means."""
    trunk = det.D.trunk
    acts = [i for i, m in enumerate(trunk) if isinstance(m, torch.nn.LeakyReLU)]
    out: dict[str, list[np.ndarray]] = {}

    def put(k: str, v: torch.Tensor) -> None:
        out.setdefault(k, []).append(v.double().cpu().numpy())

    for i in range(0, len(x_all), batch):
        x = x_all[i:i + batch]
        score, recon, amap = det(x)
        put("score", score)
        put("lr_max", amap.flatten(1).amax(1))
        put("lr_mean", amap.flatten(1).mean(1))
        hx, hr = x, recon
        for j, m in enumerate(trunk):
            hx, hr = m(hx), m(hr)
            if j in acts:
                layer = acts.index(j)
                put(f"l{layer}_chan", (hx - hr).abs().mean(dim=(2, 3)))          # N×C spatial L1 per channel
                put(f"l{layer}_gsp", (hx.sum(dim=(2, 3)) - hr.sum(dim=(2, 3))).abs())  # N×C pooled diff
    return {k: np.concatenate(v) for k, v in out.items()}


def standardise(train: np.ndarray, v: np.ndarray) -> np.ndarray:
    mu, sd = train.mean(0), train.std(0) + 1e-12
    return (v - mu) / sd


def variants(tr: dict[str, np.ndarray], te: dict[str, np.ndarray], reduce: str, n_layers: int) -> dict[str, np.ndarray]:
    """Test scores of each variant (λ applied to standardised terms)."""
    lr_tr, lr_te = tr[f"lr_{reduce}"], te[f"lr_{reduce}"]
    lr = standardise(lr_tr, lr_te)
    terms: dict[str, np.ndarray] = {}
    for layer in range(n_layers):
        for kind in ("gsp", "chan"):
            a_tr, a_te = tr[f"l{layer}_{kind}"], te[f"l{layer}_{kind}"]
            terms[f"L{layer}{kind}"] = standardise(a_tr.mean(1), a_te.mean(1))      # plain L1 over channels
            mu, sd = a_tr.mean(0), a_tr.std(0) + 1e-6 * a_tr.std(0).mean() + 1e-12
            z_tr, z_te = ((a_tr - mu) / sd).mean(1), ((a_te - mu) / sd).mean(1)
            terms[f"L{layer}{kind}_z"] = standardise(z_tr, z_te)                   # each channel standardised
    multi_tr = np.mean([standardise(tr[f"l{la}_chan"].mean(1), tr[f"l{la}_chan"].mean(1)) for la in range(n_layers)], 0)
    multi_te = np.mean([standardise(tr[f"l{la}_chan"].mean(1), te[f"l{la}_chan"].mean(1)) for la in range(n_layers)], 0)
    terms["Lallchan"] = standardise(multi_tr, multi_te)
    out = {"shipped": te["score"], "L_R": lr}
    for name, ld in terms.items():
        for lam in (0.1, 0.5, 0.9, 1.0):
            out[f"{name} λ{lam}"] = (1 - lam) * lr + lam * ld
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    table: dict[str, dict[str, float]] = {}
    for run in args.runs:
        payload = checkpoint.load(run)
        cfg, nets = networks_from(payload)
        det = detector_from(cfg, nets, strip_sn=True).eval()
        info = payload["run"]
        data = args.data or Path(info["data_dir"])
        digit = info.get("mnist_digit")
        size, ch = cfg.model.image_size, cfg.model.channels
        train = load_split(data, "train", size, ch, digit)
        held = set(info["val_indices"])
        fit_idx = [i for i in range(len(train.images)) if i not in held]
        test = load_split(data, "test", size, ch, digit)
        n_layers = sum(isinstance(m, torch.nn.LeakyReLU) for m in det.D.trunk)
        tr = components(det, to_tensor(train.images[fit_idx]))
        te = components(det, to_tensor(test.images))
        res: dict[str, float] = {}
        for name, s in variants(tr, te, cfg.score.score_reduce, n_layers).items():
            m = image_metrics(test.labels, test.kinds, s)
            res[name] = m["image_auroc"]
            if digit is None:
                res.update({f"{name} | {k}": v for k, v in m["auroc_per_type"].items()})
        table[str(run)] = res
        print(f"== {run}")
        for name, v in res.items():
            if " | " not in name:
                print(f"  {name:28s} {v:.4f}")
    if len(args.runs) > 1:
        print("== mean over runs")
        names = [n for n in next(iter(table.values())) if " | " not in n]
        for n in names:
            print(f"  {n:28s} {np.mean([t[n] for t in table.values()]):.4f}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
