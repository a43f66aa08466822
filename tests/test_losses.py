"""Consistency, adversarial and score formulas on known values; the anomaly map's smoothing.

Every expected number is worked out by hand in the test.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import consistency_loss, d_loss, eg_adv_loss, gan_g_loss
from trainer.score import anomaly_score, gaussian_kernel, smooth_map

torch.set_num_threads(1)


def test_consistency_on_known_values() -> None:
    x, x_hat = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    z, z_tilde = torch.ones(2, 5), -torch.ones(2, 5)
    # the paper's ||.||_1 per sample: 48 pixels × 0.5 = 24 and 5 latents × 2 = 10, averaged over the batch
    assert consistency_loss(x, x_hat, z, z_tilde).item() == pytest.approx(24.0 + 10.0)
    assert consistency_loss(x, x_hat, z, z_tilde, latent_weight=0.25).item() == pytest.approx(24.0 + 2.5)
    assert consistency_loss(x, x, z, z).item() == 0.0


def test_bce_losses_on_known_values() -> None:
    zero = torch.zeros(4)
    assert d_loss(zero, zero, "bce").item() == pytest.approx(2 * math.log(2))
    real, fake = torch.tensor([10.0]), torch.tensor([-10.0])
    assert d_loss(real, fake, "bce").item() == pytest.approx(2 * math.log1p(math.exp(-10)), rel=1e-4)
    # E/G want the opposite: the confident D above costs them about 20
    assert eg_adv_loss(real, fake, "bce").item() == pytest.approx(20.0, rel=1e-3)
    assert gan_g_loss(torch.zeros(3), "bce").item() == pytest.approx(math.log(2))


def test_hinge_losses_on_known_values() -> None:
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.0])
    # relu(1-2)=0, relu(1-0)=1 -> 0.5 ; relu(1-2)=0, relu(1+0)=1 -> 0.5
    assert d_loss(real, fake, "hinge").item() == pytest.approx(1.0)
    assert eg_adv_loss(real, fake, "hinge").item() == pytest.approx(1.0 - (-1.0))
    assert gan_g_loss(torch.tensor([3.0, 1.0]), "hinge").item() == pytest.approx(-2.0)
    with pytest.raises(ValueError):
        d_loss(real, fake, "wasserstein")


def test_score_formula_on_known_values() -> None:
    x, x_hat = torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.2)
    f_x, f_r = torch.zeros(2, 6), torch.ones(2, 6)
    score, amap = anomaly_score(x, x_hat, f_x, f_r, lam=0.1, kernel=gaussian_kernel(1.0))
    assert score.tolist() == pytest.approx([0.9 * 0.2 + 0.1 * 1.0] * 2)
    assert amap.shape == (2, 8, 8)
    assert torch.allclose(amap, torch.full_like(amap, 0.2))
    only_r, _ = anomaly_score(x, x_hat, f_x, f_r, lam=0.0, kernel=gaussian_kernel(1.0))
    assert only_r.tolist() == pytest.approx([0.2, 0.2])


def test_score_is_size_independent_and_per_image() -> None:
    k = gaussian_kernel(1.0)
    small = anomaly_score(torch.zeros(1, 1, 32, 32), torch.full((1, 1, 32, 32), 0.3), torch.zeros(1, 4),
                          torch.zeros(1, 4), 0.1, k)[0]
    big = anomaly_score(torch.zeros(1, 3, 64, 64), torch.full((1, 3, 64, 64), 0.3), torch.zeros(1, 9),
                        torch.zeros(1, 9), 0.1, k)[0]
    assert small.item() == pytest.approx(big.item())
    x = torch.zeros(2, 1, 8, 8)
    x_hat = x.clone()
    x_hat[1] = 1.0
    s, _ = anomaly_score(x, x_hat, torch.zeros(2, 1), torch.zeros(2, 1), 0.0, k)
    assert s.tolist() == pytest.approx([0.0, 1.0])


def test_max_reduction_finds_a_small_defect() -> None:
    x, x_hat = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    x_hat[0, 0, 10:14, 10:14] = 1.0  # 16 of 1024 pixels
    k = gaussian_kernel(1.0)
    mean, amap = anomaly_score(x, x_hat, torch.zeros(1, 1), torch.zeros(1, 1), 0.0, k, "mean")
    peak, _ = anomaly_score(x, x_hat, torch.zeros(1, 1), torch.zeros(1, 1), 0.0, k, "max")
    assert mean.item() == pytest.approx(16 / 1024)
    assert peak.item() == pytest.approx(amap.max().item())
    assert peak.item() > 0.5


def test_smoothing_keeps_mass_and_spreads_a_point() -> None:
    k = gaussian_kernel(1.5)
    assert k.sum().item() == pytest.approx(1.0)
    assert k.numel() % 2 == 1
    r = torch.zeros(1, 21, 21)
    r[0, 10, 10] = 1.0
    m = smooth_map(r, k)
    assert m.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert m[0, 10, 10] < 1.0
    assert m[0, 10, 11] > 0.0
    assert m[0, 10, 10] == m.max()
