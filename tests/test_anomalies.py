"""Simulated anomalies and the pixel judge: masks say exactly where an image changed, J learns from them
without touching E/G's objective, the judged score is the top share of its map, and it exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_train import discs, tiny_config

from common.errors import UserError
from trainer.anomalies import blob_mask, ellipse_mask, simulate, stroke_mask, visible_change
from trainer.config import build_config
from trainer.detector import detector_from, held_out_scores
from trainer.export import export_detector
from trainer.fit import fit_arrays
from trainer.losses import focal_loss
from trainer.models import PixelJudge, build_networks
from trainer.score import gaussian_kernel, judge_map, top_share
from trainer.steps import make_step
from trainer.tensors import to_tensor
from trainer.threshold import held_out_threshold

torch.set_num_threads(1)


def _batch(n: int = 8, seed: int = 0) -> torch.Tensor:
    return to_tensor(np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))


def test_fraction_zero_changes_nothing() -> None:
    x = _batch()
    out, masks = simulate(x, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and masks.shape == (8, 1, 32, 32) and masks.sum() == 0


def test_masks_mark_exactly_the_visible_changes() -> None:
    x = _batch(16)
    out, masks = simulate(x, 1.0, torch.Generator().manual_seed(1))
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    changed = (out - x).abs().amax(dim=1, keepdim=True)
    # Outside the blended region (the mask before the visibility test, grown by the 1-px blur) nothing moves:
    # every changed pixel lies within 2 px of a labelled one or is a sub-threshold change.
    grown = torch.nn.functional.max_pool2d(masks, 5, stride=1, padding=2)
    assert (changed[grown == 0] <= 0.08 + 1e-6).float().mean() > 0.99
    # Inside the labelled pixels the image did change visibly (3×3 mean of |Δ| above the threshold).
    assert torch.all(visible_change(x[0], out[0]) >= masks[0])
    assert (masks.flatten(1).sum(1) > 0).float().mean() >= 0.75     # most corruptions are visible


def test_same_generator_same_anomalies_global_generator_resumes() -> None:
    x = _batch()
    a = simulate(x, 0.5, torch.Generator().manual_seed(3))
    b = simulate(x, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.manual_seed(5)
    c = simulate(x, 0.5, None)
    torch.manual_seed(5)
    d = simulate(x, 0.5, None)
    assert torch.equal(c[0], d[0])


def test_mask_shapes() -> None:
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    for _ in range(20):
        blob = blob_mask(64, gen)
        assert 0.003 <= blob.mean() <= 0.3
        assert stroke_mask(64, rng).sum() > 0 and ellipse_mask(64, rng).sum() > 0


def test_focal_loss_known_values() -> None:
    logits, masks = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    assert focal_loss(logits, masks).item() == pytest.approx(0.25 * np.log(2), rel=1e-6)
    sure = torch.full((1, 1, 2, 2), 20.0)
    assert focal_loss(sure, masks).item() < 1e-10 < focal_loss(-sure, masks).item()


def test_judge_shapes() -> None:
    for size in (32, 64):
        cfg = build_config("ours-proj", {"image_size": size, "channels": 3}, ["judge=true", "simulate=0.5"])
        j = PixelJudge(cfg.model)
        assert j(torch.zeros(2, 3, size, size), torch.zeros(2, 3, size, size)).shape == (2, 1, size, size)


def test_judge_without_simulation_and_anogan_are_refused() -> None:
    with pytest.raises(UserError, match="simulate"):
        build_config("ours-proj", None, ["judge=true"])
    with pytest.raises(UserError, match="anogan"):
        build_config("anogan", None, ["simulate=0.5"])


def test_judge_step_trains_j_and_leaves_e_g_objective_alone() -> None:
    cfg = tiny_config(channels=3)
    cfg.model.judge, cfg.train.simulate = True, 1.0
    nets = build_networks(cfg.model)
    step = make_step(cfg, nets)
    before = [p.detach().clone() for p in nets["J"].parameters()]
    torch.manual_seed(0)
    figures = step.step(_batch(8))
    assert "loss_j" in figures and figures["loss_j"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, nets["J"].parameters(), strict=True))
    # J's loss does not reach G: with E/G's optimiser step skipped, J alone gives G no gradient.
    for p in nets["G"].parameters():
        p.grad = None
    x = _batch(4)
    step.simulation.judge(x, nets["G"](nets["E"](x)), torch.ones(4, 1, 32, 32))
    assert all(p.grad is None for p in nets["G"].parameters())
    step.simulation.judge(x, None, torch.ones(4, 1, 32, 32))       # restore=false: J reconstructs itself
    assert all(p.grad is None for p in nets["G"].parameters())


@pytest.mark.parametrize("variant", ["ours-proj", "ae"])
def test_judge_end_to_end_reaches_e_g_and_trains_j(variant: str) -> None:
    """With judge_end_to_end J's loss joins E/G's: from the same weights and randomness, one step leaves E
    with other weights than the detached step does, and J is trained in both."""
    def one_step(end_to_end: bool) -> tuple[dict[str, float], dict[str, torch.nn.Module], list[torch.Tensor]]:
        cfg = tiny_config(channels=3)
        cfg.model.variant = variant
        cfg.model.judge, cfg.train.simulate, cfg.train.judge_end_to_end = True, 1.0, end_to_end
        torch.manual_seed(0)
        nets = build_networks(cfg.model)
        step = make_step(cfg, nets)
        j_before = [p.detach().clone() for p in nets["J"].parameters()]
        torch.manual_seed(1)
        return step.step(_batch(8)), nets, j_before

    f_joint, joint, j0 = one_step(True)
    f_apart, apart, j1 = one_step(False)
    assert f_joint["loss_j"] > 0 and f_apart["loss_j"] > 0
    for nets, before in ((joint, j0), (apart, j1)):
        assert any(not torch.equal(a, b) for a, b in zip(before, nets["J"].parameters(), strict=True))
    assert any(not torch.allclose(a, b) for a, b in zip(joint["E"].parameters(), apart["E"].parameters(), strict=True))


def test_judged_score_is_the_top_share_of_the_map() -> None:
    logits = torch.full((1, 1, 10, 10), -10.0)
    logits[0, 0, :2, :5] = 10.0                         # 10 of 100 pixels certain
    delta = torch.tensor([1.0])                         # no smoothing
    amap = judge_map(logits, delta)
    assert amap.shape == (1, 10, 10) and top_share(amap, 0.1).item() == pytest.approx(1.0, abs=1e-4)
    assert top_share(amap, 0.2).item() == pytest.approx(0.5, abs=1e-3)
    assert top_share(judge_map(logits, gaussian_kernel(1.0)), 0.01).item() < 1.0   # smoothed, then pooled


@pytest.mark.slow
def test_judged_detector_fits_scores_and_exports(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=3)
    cfg.model.judge, cfg.train.simulate, cfg.score.judge_normalize = True, 0.5, True
    res = fit_arrays(discs(48, 3), cfg, verbose=False)
    assert "J" in res.nets and "S" in res.nets          # J's map standardised per pixel on the normal images
    scores = held_out_scores(cfg, res.nets, to_tensor(discs(8, 6)))
    threshold = None if scores is None else held_out_threshold(scores, cfg.score)
    assert threshold is not None and np.isfinite(threshold)
    det = detector_from(cfg, res.nets, threshold)
    manifest = export_detector(det, tmp_path / "m.onnx")
    images = np.concatenate([discs(3, 4), discs(3, 5, defect=True)])
    score, _, amap = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": images})
    with torch.inference_mode():
        ref_score, _, ref_map = det(to_tensor(images))
    np.testing.assert_allclose(score, ref_score.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(amap, ref_map.numpy(), atol=5e-4)   # standard deviations above normal
    assert manifest.threshold == pytest.approx(threshold)


def test_judged_detector_without_normalisation_scores_probabilities() -> None:
    cfg = tiny_config(epochs=1)
    cfg.model.judge, cfg.train.simulate = True, 0.5
    res = fit_arrays(discs(24, 3), cfg, verbose=False)
    assert "S" not in res.nets                          # judge_normalize is off by default
    with torch.inference_mode():
        score, _, amap = detector_from(cfg, res.nets)(to_tensor(discs(4, 4)))
    assert float(score.min()) >= 0.0 and float(score.max()) <= 1.0 and float(amap.max()) <= 1.0
