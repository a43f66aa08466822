"""Standardisation of the anomaly score by the normal images' own variation (`score_normalize = "pixel"`).

A reconstruction is never equally good everywhere: part edges, arm tips and textured background leave
a residual on every good image, a flat face leaves almost none. Dividing the anomaly map, pixel by
pixel, by how much it varies over the normal training images (after subtracting its mean there) turns
it into "standard deviations above normal at this place", so a faint defect on a quiet face counts as
much as a strong one where good parts already differ. L_D is standardised the same way (one mean and
scale), so λ keeps weighing two quantities on the same scale. Statistics come from the training
split only: the held-out normals stay held out for the threshold.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SCALE_FLOOR = 0.1   # scale = std + SCALE_FLOOR · mean std: a pixel that never varies cannot explode a tiny change


class ScoreStats(nn.Module):
    """Mean and scale of the anomaly maps (K×H×W: one per scored channel map) and of L_D (scalars);
    identity until fitted."""

    def __init__(self, size: int, maps: int = 1) -> None:
        super().__init__()
        self.register_buffer("map_mean", torch.zeros(maps, size, size))
        self.register_buffer("map_scale", torch.ones(maps, size, size))
        self.register_buffer("ld_mean", torch.zeros(()))
        self.register_buffer("ld_scale", torch.ones(()))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name in ("map_mean", "map_scale"):   # checkpoints before per-channel maps stored one H×W map
            key = prefix + name
            if key in state_dict and state_dict[key].dim() == 2:
                state_dict[key] = state_dict[key].unsqueeze(0)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, amap: torch.Tensor, l_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (amap - self.map_mean) / self.map_scale, (l_d - self.ld_mean) / self.ld_scale

    @torch.no_grad()
    def fit(self, maps: torch.Tensor, l_d: torch.Tensor) -> None:
        """Set the statistics from raw maps (N×K×H×W, or N×H×W for one) and raw L_D (N) of normal images (N ≥ 2)."""
        if maps.shape[0] < 2:
            raise ValueError("score statistics need at least 2 normal images")
        maps = maps.reshape(maps.shape[0], *self.map_mean.shape)
        std = maps.std(dim=0)
        self.map_mean.copy_(maps.mean(dim=0))
        self.map_scale.copy_(std + SCALE_FLOOR * std.mean() + 1e-12)
        ld_std = l_d.std()
        self.ld_mean.copy_(l_d.mean())
        self.ld_scale.copy_(ld_std if ld_std > 1e-12 else torch.ones(()))
