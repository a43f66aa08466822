"""Pixels <-> model tensors, and where torch runs: the one place each conversion is written.

Images are uint8 N×H×W×C (BGR or grey); model tensors are float32 N×C×H×W in [-1, 1] (x/127.5 - 1).
The same torch ops build the exported graph's boundary (trainer/export.py), so eager and ONNX agree.
"""

from __future__ import annotations

import numpy as np
import torch

from common.errors import UserError


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W×C -> float32 N×C×H×W in [-1, 1] (the contract's x/127.5 - 1)."""
    return images.to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float N×C×H×W in [-1, 1] -> uint8 N×H×W×C, rounded and clipped to 0..255."""
    return torch.clamp(torch.round((x + 1.0) * 127.5), 0.0, 255.0).permute(0, 2, 3, 1).to(torch.uint8)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×C array -> float32 N×C×H×W tensor in [-1, 1] (contiguous, on the CPU)."""
    return from_uint8(torch.from_numpy(images)).contiguous()


def to_images(x: torch.Tensor) -> np.ndarray:
    """float N×C×H×W tensor in [-1, 1] -> uint8 N×H×W×C array."""
    return to_uint8(x).cpu().numpy()


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when present else cpu; an explicit cuda request without CUDA is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)
