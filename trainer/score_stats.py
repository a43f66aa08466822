"""Standardisation of the anomaly score by the normal images' own variation (`score_normalize = "pixel"`).

A reconstruction is never equally good everywhere: part edges, arm tips and textured background leave
a residual on every good image, a flat face leaves almost none. Dividing the anomaly map, pixel by
pixel, by how much it varies over the normal training images (after subtracting its mean there) turns
it into "standard deviations above normal at this place", so a faint defect on a quiet face counts as
much as a strong one where good parts already differ. L_D is standardised the same way (one mean and
scale), and so is L_R, the map pooled to one number per image (its mean or max over the normal
images): only then does λ weigh two quantities on the same scale. Without that last step the mean of
a standardised map spreads far less than a standardised L_D, and λ = 0.3 already let L_D decide.
Statistics come from the training split only: the held-out normals stay held out for the threshold.

Two optional terms of the score live here too (`score_pair_weight`, `score_code_weight`): D's verdict on
the pair (x, E(x)), and how far the code E(x) lies from the normal images' codes: the squared
Mahalanobis distance under their mean and Ledoit-Wolf-shrunk covariance, computed as the mean square
of the whitened code (numbers that stay inside FP16's range). Both are standardised like L_D.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

CODE_CAP = 200.0    # |whitened code coordinate| cap: 200² stays inside FP16's range (65,504)
SCALE_FLOOR = 0.1   # scale = std + SCALE_FLOOR · mean std: a pixel that never varies cannot explode a tiny change


def pool_map(amap: torch.Tensor, reduce: str) -> torch.Tensor:
    """L_R before standardisation: the anomaly map (N×H×W) pooled per image by its mean or max -> N."""
    flat = amap.flatten(1)
    return flat.mean(dim=1) if reduce == "mean" else flat.amax(dim=1)


def _mean_scale(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    std = v.std()
    return v.mean(), std if std > 1e-12 else torch.ones(())


class ScoreStats(nn.Module):
    """Mean and scale of the anomaly maps (K×H×W: one per scored channel map), of L_D and of the pooled
    L_R (scalars); identity until fitted."""

    def __init__(self, size: int, maps: int = 1, z_dim: int = 1) -> None:
        super().__init__()
        self.register_buffer("map_mean", torch.zeros(maps, size, size))
        self.register_buffer("map_scale", torch.ones(maps, size, size))
        self.register_buffer("ld_mean", torch.zeros(()))
        self.register_buffer("ld_scale", torch.ones(()))
        self.register_buffer("lr_mean", torch.zeros(()))
        self.register_buffer("lr_scale", torch.ones(()))
        self.register_buffer("code_mean", torch.zeros(z_dim))       # the normal codes' mean ...
        self.register_buffer("code_whiten", torch.eye(z_dim))       # ... and W with W Wᵀ = their precision
        self.register_buffer("lz_mean", torch.zeros(()))
        self.register_buffer("lz_scale", torch.ones(()))
        self.register_buffer("lp_mean", torch.zeros(()))
        self.register_buffer("lp_scale", torch.ones(()))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name in ("map_mean", "map_scale"):   # checkpoints before per-channel maps stored one H×W map
            key = prefix + name
            if key in state_dict and state_dict[key].dim() == 2:
                state_dict[key] = state_dict[key].unsqueeze(0)
        for name, identity in (("lr_mean", 0.0), ("lr_scale", 1.0)):  # before L_R was standardised: unchanged score
            state_dict.setdefault(prefix + name, torch.tensor(identity))
        for name in ("code_mean", "code_whiten", "lz_mean", "lz_scale", "lp_mean", "lp_scale"):
            state_dict.setdefault(prefix + name, getattr(self, name).clone())   # saved before those terms existed
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, amap: torch.Tensor, l_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (amap - self.map_mean) / self.map_scale, (l_d - self.ld_mean) / self.ld_scale

    def pooled(self, l_r: torch.Tensor) -> torch.Tensor:
        """The pooled L_R (N) in standard deviations above the normal images' mean."""
        return (l_r - self.lr_mean) / self.lr_scale

    def code_distance(self, z: torch.Tensor) -> torch.Tensor:
        """Raw L_Z: the squared Mahalanobis distance of codes N×z_dim to the normal codes, / z_dim.

        Each whitened coordinate is capped at ±CODE_CAP standard deviations, so an FP16 graph cannot
        overflow; a code that far out scores far above any threshold either way.
        """
        return ((z - self.code_mean) @ self.code_whiten).clamp(-CODE_CAP, CODE_CAP).pow(2).mean(dim=1)

    def code(self, z: torch.Tensor) -> torch.Tensor:
        """L_Z (N) in standard deviations of the normal images' own distances."""
        return (self.code_distance(z) - self.lz_mean) / self.lz_scale

    def pair(self, l_p: torch.Tensor) -> torch.Tensor:
        """L_P = -D(x, E(x)) (N) in standard deviations above the normal images' mean."""
        return (l_p - self.lp_mean) / self.lp_scale

    @torch.no_grad()
    def fit_code(self, z: torch.Tensor) -> None:
        """The normal codes' mean and whitening (Ledoit-Wolf shrinkage: well-conditioned with few images),
        then the spread of their own distances. z: N×z_dim codes of normal training images (N ≥ 2)."""
        from sklearn.covariance import ledoit_wolf

        zs = z.double().cpu().numpy()
        cov, _ = ledoit_wolf(zs)
        vals, vecs = np.linalg.eigh(cov)
        whiten = vecs / np.sqrt(np.maximum(vals, 1e-12 * max(float(vals.max()), 1e-30)))
        self.code_mean.copy_(torch.from_numpy(zs.mean(axis=0)))
        self.code_whiten.copy_(torch.from_numpy(whiten))
        mean, scale = _mean_scale(self.code_distance(z.to(self.code_mean.dtype)))
        self.lz_mean.copy_(mean)
        self.lz_scale.copy_(scale)

    @torch.no_grad()
    def fit_pair(self, l_p: torch.Tensor) -> None:
        """Mean and spread of -D(x, E(x)) over normal training images."""
        mean, scale = _mean_scale(l_p)
        self.lp_mean.copy_(mean)
        self.lp_scale.copy_(scale)

    @torch.no_grad()
    def fit(self, maps: torch.Tensor, l_d: torch.Tensor, reduce: str | None = None) -> None:
        """Set the statistics from raw maps (N×K×H×W, or N×H×W for one) and raw L_D (N) of normal images
        (N ≥ 2); with `reduce` ("mean" or "max", the score's pooling) also those of the pooled L_R."""
        if maps.shape[0] < 2:
            raise ValueError("score statistics need at least 2 normal images")
        maps = maps.reshape(maps.shape[0], *self.map_mean.shape)
        std = maps.std(dim=0)
        self.map_mean.copy_(maps.mean(dim=0))
        self.map_scale.copy_(std + SCALE_FLOOR * std.mean() + 1e-12)
        ld_mean, ld_scale = _mean_scale(l_d)
        self.ld_mean.copy_(ld_mean)
        self.ld_scale.copy_(ld_scale)
        self.lr_mean.zero_()
        self.lr_scale.fill_(1.0)
        if reduce is not None:
            lr_mean, lr_scale = _mean_scale(pool_map(self(maps, l_d)[0].amax(dim=1), reduce))
            self.lr_mean.copy_(lr_mean)
            self.lr_scale.copy_(lr_scale)
