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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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

    def __init__(self, size: int, maps: int = 1) -> None:
        super().__init__()
        self.register_buffer("map_mean", torch.zeros(maps, size, size))
        self.register_buffer("map_scale", torch.ones(maps, size, size))
        self.register_buffer("ld_mean", torch.zeros(()))
        self.register_buffer("ld_scale", torch.ones(()))
        self.register_buffer("lr_mean", torch.zeros(()))
        self.register_buffer("lr_scale", torch.ones(()))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name in ("map_mean", "map_scale"):   # checkpoints before per-channel maps stored one H×W map
            key = prefix + name
            if key in state_dict and state_dict[key].dim() == 2:
                state_dict[key] = state_dict[key].unsqueeze(0)
        for name, identity in (("lr_mean", 0.0), ("lr_scale", 1.0)):  # before L_R was standardised: unchanged score
            state_dict.setdefault(prefix + name, torch.tensor(identity))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, amap: torch.Tensor, l_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (amap - self.map_mean) / self.map_scale, (l_d - self.ld_mean) / self.ld_scale

    def pooled(self, l_r: torch.Tensor) -> torch.Tensor:
        """The pooled L_R (N) in standard deviations above the normal images' mean."""
        return (l_r - self.lr_mean) / self.lr_scale

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
