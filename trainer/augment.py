"""Training-time augmentation: what a line's trigger does to a crop, applied to each training batch.

Uses torch's global generator, which the fit loop seeds per epoch, so runs stay reproducible and resumable.
"""

from __future__ import annotations

import torch
from torch import nn


def random_shift(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Translate each image by up to ±fraction of its size (edge pixels repeated); 0 = unchanged.

    A trigger never centres a moving part exactly; shifted normals are still normal (docs/research/findings.md F10).
    """
    n, _, h, w = x.shape
    pad = int(round(fraction * max(h, w)))
    if pad == 0:
        return x
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2))
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
