"""The anomaly score A(x) = (1-λ)·L_R + λ·L_D and its pixel anomaly map, from x, G(E(x)) and D's features.

L_R: the smoothed (tolerant) residual map, per colour channel or of the channel mean, standardised per
pixel by the normal images (trainer/score_stats.py) and pooled by its mean or max; L_D: mean|f(x) - f(x̂)|
over D's feature vector. Means over elements, so a score does not depend on image or feature size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainer.score_stats import ScoreStats, pool_map


def l1_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per sample: N×... -> N."""
    return (a - b).abs().flatten(1).mean(dim=1)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of odd length covering ±3 sigma."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def smooth_map(residual: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of each H×W plane of N×H×W or N×K×H×W, replicated borders; mean preserved."""
    r = kernel.numel() // 2
    shape = residual.shape
    m = F.pad(residual.reshape(-1, 1, shape[-2], shape[-1]), (r, r, r, r), mode="replicate")
    m = F.conv2d(m, kernel.view(1, 1, 1, -1))
    m = F.conv2d(m, kernel.view(1, 1, -1, 1))
    return m.reshape(shape)


def channel_residual(x: torch.Tensor, x_hat: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Per-channel residual N×C×H×W: |x - x̂| (tolerance 0, the paper), or the distance from x to the
    range [min, max] of x̂ within ±tolerance px.

    A reconstruction that draws an edge blurred or a pixel off leaves a residual on every good part;
    the tolerant residual forgives exactly that and nothing else: a stain, a scratch or a missing piece
    is a value the reconstruction has nowhere nearby.
    """
    if tolerance <= 0:
        return (x - x_hat).abs()
    k = 2 * tolerance + 1
    hi = F.max_pool2d(x_hat, k, stride=1, padding=tolerance)
    lo = -F.max_pool2d(-x_hat, k, stride=1, padding=tolerance)
    return F.relu(x - hi) + F.relu(lo - x)


def tolerant_residual(x: torch.Tensor, x_hat: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """The channel mean of `channel_residual`, N×H×W."""
    return channel_residual(x, x_hat, tolerance).mean(dim=1)


def score_terms(x: torch.Tensor, x_hat: torch.Tensor, f_x: torch.Tensor, f_x_hat: torch.Tensor,
                kernel: torch.Tensor, tolerance: int = 0, channels: str = "mean",
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The score's raw parts: the smoothed residual maps N×K×H×W and L_D = mean|f(x) - f(x̂)| (N).

    channels "mean": one map (K = 1), the channel mean; "max": one map per colour channel (K = C),
    which the score standardises separately and then takes the max of (`anomaly_score`).
    """
    res = channel_residual(x, x_hat, tolerance)
    if channels == "mean":
        res = res.mean(dim=1, keepdim=True)
    elif channels != "max":
        raise ValueError(f"unknown score_channels {channels!r}")
    return smooth_map(res, kernel), l1_per_sample(f_x, f_x_hat)


def anomaly_score(x: torch.Tensor, x_hat: torch.Tensor, f_x: torch.Tensor, f_x_hat: torch.Tensor,
                  lam: float, kernel: torch.Tensor, reduce: str = "mean", tolerance: int = 0,
                  stats: ScoreStats | None = None, channels: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """A(x) = (1-λ)·L_R + λ·L_D and the anomaly map (N×H×W, in the map's units).

    map = the smoothed (tolerant) residual maps of `score_terms`, standardised by `stats` when given
    (ScoreStats), then their max over the channel maps (one map for channels "mean");
    L_R = the map's mean per image ("mean", the paper) or its max ("max"), standardised by `stats`;
    L_D = mean|f(x) - f(x̂)| over D's feature vector, standardised by `stats` when given.
    """
    maps, l_d = score_terms(x, x_hat, f_x, f_x_hat, kernel, tolerance, channels)
    if stats is not None:
        maps, l_d = stats(maps, l_d)
    amap = maps.amax(dim=1)
    l_r = pool_map(amap, reduce)
    if stats is not None:
        l_r = stats.pooled(l_r)
    return (1.0 - lam) * l_r + lam * l_d, amap


def judge_map(logits: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """A pixel judge's anomaly map: its probabilities (N×1×H×W logits -> N×H×W), smoothed."""
    return smooth_map(torch.sigmoid(logits[:, 0]), kernel)


def top_share(amap: torch.Tensor, share: float) -> torch.Tensor:
    """The mean of the `share` of highest pixels of each map (N×H×W -> N), at least one pixel: one stray
    pixel of a texture does not fail a part while a defect of a few dozen pixels does."""
    flat = amap.flatten(1)
    k = max(1, int(round(share * flat.shape[1])))
    return flat.topk(k, dim=1).values.mean(dim=1)

