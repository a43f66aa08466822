"""The score's optional terms: D's verdict on the pair (L_P) and the code's Mahalanobis distance (L_Z).

Their statistics against scikit-learn's, the Detector's sum, old checkpoints, the exported graph
(FP32 and FP16 in ONNX Runtime), and the configuration's checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.covariance import LedoitWolf

from common.errors import UserError
from engines.fp16 import write_fp16
from trainer import detector
from trainer.config import build_config, replace
from trainer.export import export_detector, sample_images
from trainer.models import build_networks
from trainer.score_stats import ScoreStats

torch.set_num_threads(1)
TINY = ["width=8", "max_width=32", "z_dim=16"]


def _codes(n: int, seed: int) -> torch.Tensor:
    """Correlated Gaussian codes with very different spreads per direction (N×6)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.tensor([[3.0, 0, 0, 0, 0, 0], [2.0, 0.5, 0, 0, 0, 0], [0, 0, 0.1, 0, 0, 0],
                        [0, 0, 0.05, 1.0, 0, 0], [0, 0, 0, 0, 0.3, 0], [1.0, 0, 0, 0, 0, 0.02]])
    return torch.randn(n, 6, generator=g) @ mix.T + torch.tensor([1.0, -2.0, 0.5, 0, 0, 3.0])


def test_code_distance_is_ledoit_wolf_mahalanobis_and_standardised_on_the_normals() -> None:
    z = _codes(400, 0)
    stats = ScoreStats(4, 1, z_dim=6)
    stats.fit_code(z)
    lw = LedoitWolf().fit(z.double().numpy())
    other = _codes(50, 1)
    expected = lw.mahalanobis(other.double().numpy()) / 6                # sklearn gives the squared distance
    np.testing.assert_allclose(stats.code_distance(other).numpy(), expected, rtol=1e-4)
    own = stats.code(z)
    assert own.mean().item() == pytest.approx(0.0, abs=1e-4) and own.std().item() == pytest.approx(1.0, abs=1e-4)
    # Off the normal codes' shape, even by a small step along a quiet direction, is far: many sds.
    odd = z.mean(0, keepdim=True) + torch.tensor([[0, 0, 1.0, 0, 0, 0]])
    assert stats.code(odd).item() > 5.0
    assert stats.code(z.mean(0, keepdim=True)).item() < 0.0            # the centre is more normal than average


def test_pair_term_standardises_and_old_statistics_load_as_identity() -> None:
    stats = ScoreStats(4, 1, z_dim=3)
    l_p = torch.linspace(-5, 1, 100)
    stats.fit_pair(l_p)
    assert stats.pair(l_p).mean().item() == pytest.approx(0.0, abs=1e-5)
    assert stats.pair(l_p).std().item() == pytest.approx(1.0, abs=1e-5)
    old = {k: v for k, v in ScoreStats(4, 1).state_dict().items()
           if k not in ("code_mean", "code_whiten", "lz_mean", "lz_scale", "lp_mean", "lp_scale")}
    fresh = ScoreStats(4, 1, z_dim=3)
    fresh.load_state_dict(old)                                         # a checkpoint from before these terms
    assert torch.equal(fresh.code_whiten, torch.eye(3)) and fresh.lp_scale.item() == 1.0


def _detector(variant: str = "ours-proj", sets: tuple[str, ...] = ()) -> tuple[object, dict]:
    cfg = build_config(variant, {"image_size": 32, "channels": 1}, [*TINY, *sets])
    torch.manual_seed(0)
    nets = build_networks(cfg.model)
    for n in nets.values():
        n.eval()
    detector.attach_score_stats(cfg, nets)
    x = torch.rand(40, 1, 32, 32) * 2 - 1
    detector.fit_score_stats(cfg, nets, x)
    return cfg, nets


def test_detector_adds_each_weighted_term_to_the_papers_score() -> None:
    x = torch.rand(7, 1, 32, 32) * 2 - 1
    cfg, nets = _detector()
    base = detector.detector_from(cfg, nets)(x)[0]
    cfg_w, _ = _detector(sets=("score_pair_weight=0.5", "score_code_weight=2"))
    with torch.no_grad():
        score = detector.detector_from(cfg_w, nets)(x)[0]
        z = nets["E"](x)
        pair = nets["S"].pair(-nets["D"](x, z))                           # D's own forward, not the shortcut
        code = nets["S"].code(z)
    torch.testing.assert_close(score, base + 0.5 * pair + 2.0 * code, rtol=1e-5, atol=1e-5)
    assert pair.abs().max() > 0 and code.abs().max() > 0                # the terms are not zeros
    # The autoencoder has no D: its pair term is off, its code term still counts.
    cfg_ae, nets_ae = _detector("ae", ("score_pair_weight=1", "score_code_weight=1"))
    det = detector.detector_from(cfg_ae, nets_ae)
    assert det.pair_weight == 0.0 and det.code_weight == 1.0


def test_exported_graph_carries_the_terms_in_fp32_and_fp16(tmp_path: Path) -> None:
    cfg, nets = _detector(sets=("score_pair_weight=1", "score_code_weight=1"))
    det = detector.detector_from(cfg, nets, threshold=1.0, strip_sn=True)
    out = tmp_path / "m.onnx"
    manifest = export_detector(det, out)                               # checks ORT against torch itself
    assert manifest.metrics["score_terms"] == {"pair_weight": 1.0, "code_weight": 1.0}
    images = sample_images(6, 32, 1, seed=3)
    with torch.no_grad():
        ref = det(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1)[0].numpy()
    got = ort.InferenceSession(str(out)).run(["score"], {"images": images})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    half = ort.InferenceSession(str(write_fp16(out))).run(["score"], {"images": images})[0]
    assert np.isfinite(half).all()
    np.testing.assert_allclose(half, ref, rtol=0.05, atol=0.05 * np.abs(ref).max())


def test_configuration_checks_the_terms() -> None:
    with pytest.raises(UserError, match="score_normalize=none"):
        build_config("ours-proj", None, ["score_normalize=none", "score_code_weight=1"])
    with pytest.raises(UserError, match="0..10"):
        build_config("ours-proj", None, ["score_pair_weight=-1"])
    paper = build_config("ours-proj", {"score_pair_weight": 1.0, "score_code_weight": 1.0}, ["recipe=paper"])
    assert paper.score.score_pair_weight == 0.0 and paper.score.score_code_weight == 0.0
    # A copy changed by name (the study scripts' way) is held to the same rule, the original untouched.
    mnist_like = build_config("ours-proj", {"score_code_weight": 1.0})
    with pytest.raises(UserError, match="score_normalize=none"):
        replace(mnist_like, score_normalize="none")
    assert replace(mnist_like, score_normalize="none", score_code_weight=0.0).score.score_normalize == "none"
    assert mnist_like.score.score_normalize == "pixel"
