"""`trainer evaluate`: score the test split, calibrate the threshold on held-out normals, write metrics and plots.

The shipped threshold uses no test labels (trainer/threshold.py, from held-out normal scores); the F1-optimal
one is reported beside it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import precision_recall_curve
from torch import nn

from common.auroc import auroc
from common.errors import UserError
from common.manifest import reference_scores
from trainer import checkpoint
from trainer.config import Config, ScoreConfig
from trainer.detector import NORMAL_SCORES, detector_from, networks_from, score_anogan
from trainer.plots import plot_examples, plot_histogram, plot_roc
from trainer.tensors import resolve_device, to_images, to_tensor
from trainer.threshold import held_out_threshold, threshold_source


def score_images(cfg: Config, nets: dict[str, nn.Module], images: np.ndarray, batch: int = 128
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 N×H×W×C -> (scores N, reconstructions uint8 N×H×W×C, anomaly maps float32 N×H×W).

    E/G variants run the Detector forward (the exported graph); AnoGAN runs its Γ-step latent search.
    """
    device = next(nets["G"].parameters()).device
    for n in nets.values():
        n.eval()
    x_all = to_tensor(images)
    det = None if cfg.model.variant == "anogan" else detector_from(cfg, nets).to(device)
    scores, recons, maps = [], [], []
    for i in range(0, len(x_all), batch):
        x = x_all[i:i + batch].to(device)
        if det is not None:
            with torch.no_grad():
                s, r, m = det(x)
        else:
            s, r, m = score_anogan(cfg, nets, x, seed=cfg.train.seed + i)
        scores.append(s.cpu().numpy())
        recons.append(to_images(r))
        maps.append(m.cpu().numpy())
    return np.concatenate(scores), np.concatenate(recons), np.concatenate(maps).astype(np.float32)


def image_metrics(labels: np.ndarray, kinds: list[str], scores: np.ndarray) -> dict[str, Any]:
    """Image AUROC overall and per defect type (that type against the good images)."""
    kinds_arr = np.asarray(kinds)
    per_type = {}
    for kind in sorted(set(kinds) - {"good"}):
        sel = (kinds_arr == kind) | (labels == 0)
        per_type[kind] = auroc(labels[sel], scores[sel])
    counts = {k: int((kinds_arr == k).sum()) for k in sorted(set(kinds))}
    return {"image_auroc": auroc(labels, scores), "auroc_per_type": per_type, "counts": counts,
            "n_test": int(len(labels)), "n_good": int((labels == 0).sum()), "n_defect": int((labels == 1).sum())}


def pixel_auroc(masks: np.ndarray | None, maps: np.ndarray, max_pixels: int = 4_000_000) -> float | None:
    """AUROC of the anomaly map against ground-truth masks over all test pixels (strided when huge)."""
    if masks is None or not (masks > 0).any():
        return None
    y, s = (masks > 0).ravel(), maps.ravel()
    step = max(1, len(y) // max_pixels)
    return auroc(y[::step].astype(np.int64), s[::step])


def thresholds(val_scores: np.ndarray | None, labels: np.ndarray, scores: np.ndarray, s: ScoreConfig
               ) -> dict[str, Any]:
    """The held-out threshold (shipped: uses no test labels; trainer/threshold.py) and the test F1-optimal one."""
    out: dict[str, Any] = {"threshold_held_out": None, "threshold_f1": None, "f1_at_threshold_f1": None}
    if val_scores is not None and len(val_scores):
        out["threshold_held_out"] = held_out_threshold(val_scores, s)
    if len(np.unique(labels)) == 2:
        prec, rec, thr = precision_recall_curve(labels, scores)
        f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
        best = int(np.argmax(f1))
        out["threshold_f1"], out["f1_at_threshold_f1"] = float(thr[best]), float(f1[best])
    if out["threshold_held_out"] is not None:
        out["threshold"], out["threshold_source"] = out["threshold_held_out"], threshold_source(s, len(val_scores))
    else:
        out["threshold"], out["threshold_source"] = out["threshold_f1"], "F1-optimal on test (no held-out normals)"
    return out


def decision_stats(labels: np.ndarray, scores: np.ndarray, thr: float | None) -> dict[str, Any]:
    """Rates of the test split at the shipped threshold (score > thr = defective)."""
    if thr is None:
        return {}
    pred = scores > thr
    tp, fp = int((pred & (labels == 1)).sum()), int((pred & (labels == 0)).sum())
    fn = int((~pred & (labels == 1)).sum())
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    return {"test_at_threshold": {"tpr": rec, "fpr": fp / max(int((labels == 0).sum()), 1),
                                  "precision": prec, "f1": 2 * prec * rec / max(prec + rec, 1e-12)}}


def _held_out_scores(payload: dict[str, Any], cfg: Config, nets: dict[str, nn.Module]) -> np.ndarray | None:
    """Scores of the training run's held-out normal images (same data folder, same stored indices)."""
    from trainer.datasets import load_split

    run = payload.get("run", {})
    idx, data_dir = run.get("val_indices") or [], run.get("data_dir")
    if not idx or not data_dir or not Path(data_dir).exists():
        return None
    train = load_split(data_dir, "train", cfg.model.image_size, cfg.model.channels, run.get("mnist_digit"))
    names = run.get("val_names")
    if max(idx) >= len(train.images) or (names and [train.names[i] for i in idx] != names):
        print("warning: the training folder changed since fit; no held-out threshold", flush=True)
        return None
    return score_images(cfg, nets, train.images[np.asarray(idx)])[0]


def run_splits(payload: dict[str, Any], cfg: Config) -> tuple[torch.Tensor, Any]:
    """A run's training images less its held-out ones (N×C×H×W in [-1, 1]: what its score statistics were
    fitted on) and its test split (ImageSet), from the data folder and indices the checkpoint records."""
    from trainer.datasets import load_split

    info = payload["run"]
    digit = info.get("mnist_digit")
    train = load_split(info["data_dir"], "train", cfg.model.image_size, cfg.model.channels, digit)
    held = set(info["val_indices"])
    x_fit = to_tensor(train.images[[i for i in range(len(train.images)) if i not in held]])
    return x_fit, load_split(info["data_dir"], "test", cfg.model.image_size, cfg.model.channels, digit)


@dataclass(frozen=True)
class EvaluateOptions:
    """`trainer evaluate RUN_DIR [--data DIR]`."""

    run_dir: Path
    data: Path | None = None   # the data set; None: the one the run trained on


def run_evaluate(opts: EvaluateOptions) -> dict[str, Any]:
    """metrics.json, roc.png, score_hist.png, examples.png in RUN_DIR; threshold and metrics into model.pt."""
    from trainer.datasets import load_split

    run_dir = opts.run_dir
    payload = checkpoint.load(run_dir)
    cfg, nets = networks_from(payload)
    device = resolve_device("auto")
    for n in nets.values():
        n.to(device)
    run = payload.get("run", {})
    data = opts.data or run.get("data_dir")
    if data is None or not Path(data).exists():
        raise UserError(f"data folder {data} does not exist; pass --data DIR")
    test = load_split(data, "test", cfg.model.image_size, cfg.model.channels, run.get("mnist_digit"))
    scores, recons, maps = score_images(cfg, nets, test.images)
    labels = np.asarray(test.labels, dtype=np.int64)
    val_scores = _held_out_scores(payload, cfg, nets)
    metrics: dict[str, Any] = {"variant": cfg.model.variant, "data": str(data), **image_metrics(labels, test.kinds, scores),
                               "pixel_auroc": pixel_auroc(test.masks, maps)}
    metrics.update(thresholds(val_scores, labels, scores, cfg.score))
    metrics.update(decision_stats(labels, scores, metrics["threshold"]))
    metrics["n_held_out_normals"] = 0 if val_scores is None else int(len(val_scores))
    # the drift watch's reference (manifest normal_scores): these scores, else the ones fit stored
    metrics[NORMAL_SCORES] = (reference_scores(val_scores) if val_scores is not None
                              else list((payload.get("metrics") or {}).get(NORMAL_SCORES) or []))
    metrics["best_epoch"], metrics["epochs"] = run.get("best_epoch"), run.get("epochs")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_roc(run_dir / "roc.png", labels, test.kinds, scores)
    plot_histogram(run_dir / "score_hist.png", test.kinds, scores, metrics["threshold"])
    plot_examples(run_dir / "examples.png", test.images, recons, maps, test.kinds, scores)
    payload["threshold"], payload["metrics"] = metrics["threshold"], metrics
    checkpoint.save(checkpoint.resolve(run_dir), payload)
    print(format_table(metrics))
    return metrics


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def format_table(m: dict[str, Any]) -> str:
    lines = [f"{'variant':<22}{m['variant']}", f"{'image AUROC':<22}{_fmt(m['image_auroc'])}"]
    lines += [f"  {k:<20}{_fmt(v)}  (n={m['counts'].get(k, 0)})" for k, v in m["auroc_per_type"].items()]
    lines.append(f"{'pixel AUROC':<22}{_fmt(m['pixel_auroc'])}")
    lines.append(f"{'threshold (shipped)':<22}{_fmt(m['threshold'])}  [{m['threshold_source']}]")
    lines.append(f"{'threshold F1-optimal':<22}{_fmt(m['threshold_f1'])}  (F1 {_fmt(m['f1_at_threshold_f1'])})")
    at = m.get("test_at_threshold")
    if at:
        lines.append(f"{'at shipped threshold':<22}TPR {_fmt(at['tpr'])}  FPR {_fmt(at['fpr'])}  F1 {_fmt(at['f1'])}")
    lines.append(f"{'test images':<22}{m['n_good']} good, {m['n_defect']} defective")
    return "\n".join(lines)
