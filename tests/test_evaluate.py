"""Evaluation: metrics on known scores, thresholds, the checkpoint round trip, `trainer evaluate` end to end.

The end-to-end run trains a tiny model on a tiny synthetic line (32 px, one epoch).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import UserError
from trainer import checkpoint
from trainer.cli import main
from trainer.config import ScoreConfig, build_config
from trainer.detector import load_detector, networks_from
from trainer.evaluate import decision_stats, image_metrics, pixel_auroc, score_images, thresholds
from trainer.fit import fit_arrays
from trainer.tensors import to_tensor

torch.set_num_threads(1)
TINY = ["width=8", "max_width=32", "z_dim=16"]


def test_image_metrics_per_defect_type() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    kinds = ["good"] * 3 + ["scratch", "scratch", "stain", "stain"]
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.25, 0.05])
    m = image_metrics(labels, kinds, scores)
    assert m["auroc_per_type"]["scratch"] == 1.0
    assert m["auroc_per_type"]["stain"] == pytest.approx((2 + 0) / 6)  # 0.25 beats 0.1 and 0.2; 0.05 beats none
    assert m["image_auroc"] == pytest.approx((3 + 3 + 2 + 0) / 12)
    assert m["counts"] == {"good": 3, "scratch": 2, "stain": 2}
    assert (m["n_good"], m["n_defect"]) == (3, 4)
    assert image_metrics(np.zeros(3, int), ["good"] * 3, np.ones(3))["image_auroc"] is None


def test_thresholds_held_out_is_shipped_and_f1_reported() -> None:
    val = np.arange(101, dtype=float)  # 0..100: mean 50, sd 29.3; the 99th percentile is 99
    labels = np.array([0, 0, 1, 1])
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    t = thresholds(val, labels, scores, ScoreConfig())
    assert t["threshold"] == pytest.approx(50.0 + 3 * val.std(ddof=1))
    assert t["threshold_source"] == "mean + 3 sd of 101 held-out normals"
    q = thresholds(val, labels, scores, ScoreConfig(threshold_rule="quantile"))
    assert q["threshold"] == pytest.approx(99.0) and q["threshold_source"] == "q0.99 of 101 held-out normals"
    assert t["threshold_f1"] == 3.0 and t["f1_at_threshold_f1"] == 1.0
    fallback = thresholds(None, labels, scores, ScoreConfig())
    assert fallback["threshold"] == 3.0 and "F1" in fallback["threshold_source"]
    at = decision_stats(labels, scores, 2.5)["test_at_threshold"]
    assert (at["tpr"], at["fpr"], at["f1"]) == (1.0, 0.0, 1.0)


def test_pixel_auroc_against_masks() -> None:
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[1, :2, :2] = 255
    maps = np.zeros((2, 4, 4), np.float32)
    maps[1, :2, :2] = 1.0
    assert pixel_auroc(masks, maps) == 1.0
    assert pixel_auroc(masks, -maps) == 0.0
    assert pixel_auroc(None, maps) is None
    assert pixel_auroc(np.zeros_like(masks), maps) is None


def _tiny_fit(tmp_path: Path, variant: str = "ours-proj") -> tuple[Path, np.ndarray]:
    cfg = build_config(variant, {"image_size": 32, "channels": 3, "epochs": 1, "batch_size": 8}, TINY)
    cfg.score.anogan_steps = 3
    imgs = np.random.default_rng(0).integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    fit_arrays(imgs, cfg, out=tmp_path, verbose=False)
    return tmp_path, imgs


def test_checkpoint_round_trip_weights_only(tmp_path: Path) -> None:
    run, imgs = _tiny_fit(tmp_path)
    payload = torch.load(run / "model.pt", weights_only=True)
    assert {"format", "config", "input", "lambda", "threshold", "state", "metrics"} <= set(payload)
    assert payload["lambda"] == pytest.approx(0.1)
    det = load_detector(run)
    assert not det.training and det.variant == "ours-proj" and det.lam == pytest.approx(0.1)
    assert det.spec["size"] == 32 and det.threshold == payload["threshold"] and math.isfinite(det.threshold)
    assert not any(hasattr(m, "parametrizations") for m in det.modules())  # SN baked in for export
    x = to_tensor(imgs[:4])
    with torch.no_grad():
        score, recon, amap = det(x)
    assert score.shape == (4,) and recon.shape == (4, 3, 32, 32) and amap.shape == (4, 32, 32)
    assert recon.abs().max() <= 1.0
    cfg, nets = networks_from(payload)
    ref = score_images(cfg, nets, imgs[:4])[0]
    assert np.allclose(score.numpy(), ref, atol=1e-5)  # evaluation and the Detector agree
    assert load_detector(run / "model.pt").lam == det.lam


def test_anogan_scores_but_cannot_become_a_detector(tmp_path: Path) -> None:
    run, imgs = _tiny_fit(tmp_path, "anogan")
    with pytest.raises(UserError, match="cannot be exported"):
        load_detector(run)
    cfg, nets = networks_from(checkpoint.load(run))
    scores, recons, maps = score_images(cfg, nets, imgs[:3])
    assert scores.shape == (3,) and recons.shape == (3, 32, 32, 3) and maps.shape == (3, 32, 32)


def test_load_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no checkpoint"):
        load_detector(tmp_path)
    torch.save({"hello": 1}, tmp_path / "model.pt")
    with pytest.raises(UserError, match="not a format-1"):
        load_detector(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read"):
        load_detector(tmp_path)


def test_evaluate_cli_writes_metrics_plots_and_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from synth.run import synthesize

    data = tmp_path / "line"
    synthesize(data, seed=0, size=32, n_train=20, n_test=10)
    run = tmp_path / "run"
    argv = ["fit", str(data), "--out", str(run), "--epochs", "1", "--image-size", "32", "--batch-size", "4"]
    for s in TINY:
        argv += ["--set", s]
    assert main(argv) == 0
    fitted = torch.load(run / "model.pt", weights_only=True)   # fit alone: a deployable held-out threshold
    assert fitted["threshold"] is not None and fitted["metrics"]["n_held_out_normals"] == 2
    assert "threshold" in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["threshold"] == pytest.approx(fitted["threshold"], rel=1e-5)   # the same held-out images and quantile
    assert 0.0 <= m["image_auroc"] <= 1.0
    assert set(m["auroc_per_type"]) == {"scratch", "color", "missing", "flip"}
    assert m["pixel_auroc"] is not None
    assert m["n_held_out_normals"] == 2 and m["threshold"] == m["threshold_held_out"]
    for png in ("roc.png", "score_hist.png", "examples.png"):
        assert (run / png).stat().st_size > 1000
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["threshold"] == pytest.approx(m["threshold"])
    assert payload["metrics"]["image_auroc"] == m["image_auroc"]
    assert "image AUROC" in capsys.readouterr().out


def test_evaluate_cli_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and len(err.strip().splitlines()) == 1
