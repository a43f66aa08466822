"""The score's tolerant residual and per-pixel standardisation (trainer/score_stats.py), on hand-made maps.

Also: a checkpoint saved before these options existed keeps scoring the way it did.
"""

from __future__ import annotations

import pytest
import torch

from trainer.config import Config, build_config
from trainer.score import anomaly_score, gaussian_kernel, score_terms, tolerant_residual
from trainer.score_stats import SCALE_FLOOR, ScoreStats

torch.set_num_threads(1)


def _edge(col: int) -> torch.Tensor:
    """1×1×8×8: 0 left of `col`, 1 from `col` on."""
    x = torch.zeros(1, 1, 8, 8)
    x[..., col:] = 1.0
    return x


def test_tolerance_forgives_a_shifted_edge_but_not_a_spot() -> None:
    x, x_hat = _edge(4), _edge(5)            # the reconstruction draws the edge one pixel late
    assert tolerant_residual(x, x_hat, 0).sum().item() == pytest.approx(8.0)   # one column of 8 pixels
    assert tolerant_residual(x, x_hat, 1).abs().sum().item() == 0.0
    spot = x.clone()
    spot[0, 0, 2, 1] = 0.7                     # a value the reconstruction has nowhere within ±1 px (all 0 there)
    r = tolerant_residual(spot, x_hat, 1)
    assert r[0, 2, 1].item() == pytest.approx(0.7)
    assert r.abs().sum().item() == pytest.approx(0.7)


def test_tolerance_is_a_distance_to_the_neighbourhood_range_per_channel() -> None:
    x_hat = torch.zeros(1, 2, 5, 5)
    x_hat[0, 0, 2, 3] = 0.5                    # channel 0 reaches 0.5 one pixel away from the centre
    x = torch.zeros(1, 2, 5, 5)
    x[0, :, 2, 2] = torch.tensor([0.8, -0.4])  # above that range by 0.3; below channel 1's by 0.4
    r = tolerant_residual(x, x_hat, 1)
    assert r[0, 2, 2].item() == pytest.approx((0.3 + 0.4) / 2)   # the channel mean


def test_score_stats_standardise_each_pixel() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.linspace(0.0, 1.0, 16).view(4, 4)
    spreads = torch.linspace(0.1, 2.0, 16).view(4, 4)
    maps = means + spreads * torch.randn(500, 4, 4, generator=g)
    l_d = 3.0 + 0.5 * torch.randn(500, generator=g)
    stats = ScoreStats(4)
    same, same_d = stats(maps, l_d)            # identity until fitted
    assert torch.equal(same, maps) and torch.equal(same_d, l_d)
    stats.fit(maps, l_d)
    z, z_d = stats(maps, l_d)
    floor = SCALE_FLOOR * maps.std(dim=0).mean()
    expected_std = maps.std(dim=0) / (maps.std(dim=0) + floor)
    assert torch.allclose(z.mean(dim=0), torch.zeros(4, 4), atol=1e-5)
    assert torch.allclose(z.std(dim=0), expected_std, atol=1e-4)
    assert z_d.mean().item() == pytest.approx(0.0, abs=1e-5) and z_d.std().item() == pytest.approx(1.0, abs=1e-4)
    # the same excess counts more on a quiet pixel than on a busy one
    bump = means.clone().unsqueeze(0).repeat(2, 1, 1)
    bump[0, 0, 0] += 0.5
    bump[1, 3, 3] += 0.5
    zb, _ = stats(bump, torch.zeros(2))
    assert zb[0, 0, 0] > 3 * zb[1, 3, 3]


def test_a_pixel_that_never_varies_cannot_explode() -> None:
    maps = torch.zeros(10, 2, 2)
    maps[:, 0, 0] = torch.linspace(0, 1, 10)   # one pixel varies, three never do
    stats = ScoreStats(2)
    stats.fit(maps, torch.zeros(10))            # constant L_D: scale stays 1
    assert torch.isfinite(stats.map_scale).all() and (stats.map_scale > 0).all()
    z, z_d = stats(maps + 0.01, torch.zeros(10))
    floor = SCALE_FLOOR * maps.std(dim=0).mean()   # a quiet pixel's scale is the floor, not 0
    assert torch.allclose(z[:, 1, 1], 0.01 / floor)
    assert stats.ld_scale.item() == 1.0 and torch.equal(z_d, torch.zeros(10))
    with pytest.raises(ValueError, match="at least 2"):
        stats.fit(maps[:1], torch.zeros(1))


def test_anomaly_score_uses_the_standardised_map_and_l_d() -> None:
    stats = ScoreStats(8)
    stats.map_mean.fill_(0.1)
    stats.map_scale.fill_(0.05)
    stats.ld_mean.fill_(1.0)
    stats.ld_scale.fill_(0.5)
    x, x_hat = torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.2)
    score, amap = anomaly_score(x, x_hat, torch.zeros(1, 4), torch.full((1, 4), 2.0), 0.1, gaussian_kernel(1.0),
                                "max", 0, stats)
    assert torch.allclose(amap, torch.full_like(amap, (0.2 - 0.1) / 0.05))
    assert score.item() == pytest.approx(0.9 * 2.0 + 0.1 * (2.0 - 1.0) / 0.5)


def test_old_checkpoints_keep_their_score_and_new_ones_get_the_defaults() -> None:
    new = build_config()
    assert (new.score.score_tolerance, new.score.score_normalize, new.score.smooth_sigma) == (1, "pixel", 0.0)
    stored = new.to_dict()
    for key in ("score_tolerance", "score_normalize"):
        del stored["train"][key]              # what a checkpoint from before these options holds
    old = Config.from_dict(stored)
    assert (old.score.score_tolerance, old.score.score_normalize) == (0, "none")
    assert old.score.smooth_sigma == pytest.approx(old.model.image_size / 32)   # their blur: size/32
    assert Config.from_dict(new.to_dict()).train == new.train
    assert Config.from_dict(new.to_dict()).score == new.score
    paper = build_config(sets=["recipe=paper"])
    assert (paper.score.score_tolerance, paper.score.score_normalize) == (0, "none")


def test_per_channel_maps_count_a_one_channel_defect_whole() -> None:
    """A stain that changes one colour channel: the channel mean dilutes it by C; per-channel maps do not,
    and each channel is standardised by its own normal spread (a busy channel does not hide a quiet one)."""
    g = torch.Generator().manual_seed(0)
    x_hat = torch.zeros(200, 3, 8, 8)
    normals = x_hat + torch.randn(200, 3, 8, 8, generator=g) * torch.tensor([0.3, 0.01, 0.01]).view(1, 3, 1, 1)
    kernel = gaussian_kernel(0.5)
    per_channel = ScoreStats(8, maps=3)
    per_channel.fit(*_raw(normals, x_hat, kernel, "max"))
    pooled = ScoreStats(8)
    pooled.fit(*_raw(normals, x_hat, kernel, "mean"))
    stain = torch.zeros(1, 3, 8, 8)
    stain[0, 2, 3:5, 3:5] = 0.2                   # the quiet third channel moves by 20 of its normal std
    zero = torch.zeros(1, 4)
    s_max, amap = anomaly_score(stain, x_hat[:1], zero, zero, 0.0, kernel, "max", 0, per_channel, "max")
    s_mean, _ = anomaly_score(stain, x_hat[:1], zero, zero, 0.0, kernel, "max", 0, pooled, "mean")
    normal_max = anomaly_score(normals, x_hat, torch.zeros(200, 4), torch.zeros(200, 4), 0.0, kernel, "max", 0,
                               per_channel, "max")[0]
    normal_mean = anomaly_score(normals, x_hat, torch.zeros(200, 4), torch.zeros(200, 4), 0.0, kernel, "max", 0,
                                pooled, "mean")[0]
    assert amap.shape == (1, 8, 8)
    assert s_max.item() > 3 * normal_max.max().item()      # far outside the normals, per channel
    assert s_mean.item() < normal_mean.max().item()        # pooled with the busy channel it looks normal


def _raw(x: torch.Tensor, x_hat: torch.Tensor, kernel: torch.Tensor, channels: str) -> tuple[torch.Tensor, torch.Tensor]:
    maps, _ = score_terms(x, x_hat, torch.zeros(len(x), 4), torch.zeros(len(x), 4), kernel, 0, channels)
    return maps, torch.zeros(len(x))


def test_checkpoints_from_before_per_channel_maps_load_and_score_the_channel_mean() -> None:
    new = build_config()
    assert new.score.score_channels == "max"
    stored = new.to_dict()
    del stored["train"]["score_channels"]          # a checkpoint saved before the option existed
    assert Config.from_dict(stored).score.score_channels == "mean"
    old = ScoreStats(4)
    state = {"map_mean": torch.full((4, 4), 0.5), "map_scale": torch.full((4, 4), 2.0),   # the old H×W buffers
             "ld_mean": torch.zeros(()), "ld_scale": torch.ones(())}
    old.load_state_dict(state)
    z, _ = old(torch.full((1, 1, 4, 4), 1.5), torch.zeros(1))
    assert torch.allclose(z, torch.full((1, 1, 4, 4), 0.5))


def test_checkpoints_from_before_the_sigma_rule_keep_the_quantile() -> None:
    new = build_config()
    assert (new.score.threshold_rule, new.score.threshold_sigmas) == ("sigma", 3.0)
    stored = new.to_dict()
    del stored["train"]["threshold_rule"]
    assert Config.from_dict(stored).score.threshold_rule == "quantile"


def test_pooled_l_r_is_standardised_so_lambda_weighs_like_with_like() -> None:
    torch.manual_seed(0)
    kernel = gaussian_kernel(1.0)
    normals = torch.rand(64, 1, 8, 8) * 0.2 - 0.1
    x_hat = torch.zeros(64, 1, 8, 8)
    f_x, f_r = torch.zeros(64, 4), torch.rand(64, 4)
    maps, l_d = score_terms(normals, x_hat, f_x, f_r, kernel, 0, "mean")
    stats = ScoreStats(8)
    stats.fit(maps, l_d, "mean")
    # on the normal images both terms are now standard scores: mean 0, spread 1
    only_r, _ = anomaly_score(normals, x_hat, f_x, f_r, 0.0, kernel, "mean", 0, stats)
    only_d, _ = anomaly_score(normals, x_hat, f_x, f_r, 1.0, kernel, "mean", 0, stats)
    for s in (only_r, only_d):
        assert abs(s.mean().item()) < 1e-4 and s.std().item() == pytest.approx(1.0, abs=1e-4)
    # a map mean averages many pixels, so before this step it spread far less than L_D
    unpooled = ScoreStats(8)
    unpooled.fit(maps, l_d)
    raw_r, _ = anomaly_score(normals, x_hat, f_x, f_r, 0.0, kernel, "mean", 0, unpooled)
    assert raw_r.std().item() < 0.5
    # the heat map stays in per-pixel standard scores, whatever the pooling
    _, amap = anomaly_score(normals, x_hat, f_x, f_r, 0.0, kernel, "mean", 0, stats)
    _, amap_raw = anomaly_score(normals, x_hat, f_x, f_r, 0.0, kernel, "mean", 0, unpooled)
    assert torch.allclose(amap, amap_raw)


def test_stats_saved_before_l_r_was_standardised_leave_the_score_unchanged() -> None:
    state = {"map_mean": torch.zeros(1, 4, 4), "map_scale": torch.ones(1, 4, 4),
             "ld_mean": torch.zeros(()), "ld_scale": torch.ones(())}
    old = ScoreStats(4)
    old.load_state_dict(state)
    assert old.lr_mean.item() == 0.0 and old.lr_scale.item() == 1.0
    l_r = torch.tensor([0.3, 2.0])
    assert torch.equal(old.pooled(l_r), l_r)
