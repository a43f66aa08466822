"""A tiny stand-in for trainer.detector's Detector (an ExportableDetector: same forward and attributes) and its
cached export.

BatchNorm after a ConvTranspose and spectral norm in D, so export has both to remove; 32 px, fast.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from trainer.detector import ExportableDetector


class StandinDetector(ExportableDetector):
    """forward(x: N×C×H×W in [-1, 1]) -> (score N, recon N×C×H×W in [-1, 1], amap N×H×W)."""

    def __init__(self, size: int = 32, channels: int = 3, z: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        s4 = size // 4
        self.E = nn.Sequential(nn.Conv2d(channels, 8, 4, 2, 1), nn.BatchNorm2d(8), nn.LeakyReLU(0.2),
                               nn.Conv2d(8, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                               nn.Linear(16 * s4 * s4, z))
        self.G = nn.Sequential(nn.Linear(z, 16 * s4 * s4), nn.Unflatten(1, (16, s4, s4)),
                               nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                               nn.ConvTranspose2d(8, channels, 4, 2, 1), nn.Tanh())
        self.D = nn.Sequential(spectral_norm(nn.Conv2d(channels, 8, 4, 2, 1)), nn.LeakyReLU(0.2),
                               spectral_norm(nn.Conv2d(8, 16, 4, 2, 1)))
        for m in self.modules():   # non-trivial running statistics, so folding them matters
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.1, 0.1)
        self.lam = 0.1
        self.spec = {"size": size, "channels": channels, "color_order": "BGR", "normalize": "x/127.5-1"}
        self.threshold = 0.42
        self.variant = "standin"
        self.metrics = {"auroc": 0.9}
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        recon = self.G(self.E(x))
        residual = (x - recon).abs()
        amap = F.avg_pool2d(residual.mean(1, keepdim=True), 3, 1, 1).squeeze(1)
        f_x, f_r = self.D(x).sum((2, 3)), self.D(recon).sum((2, 3))
        score = (1 - self.lam) * residual.flatten(1).mean(1) + self.lam * (f_x - f_r).abs().mean(1)
        return score, recon, amap


@functools.cache
def _workdir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="standin-"))
    atexit.register(shutil.rmtree, d, True)
    return d


@functools.cache
def exported_standin(channels: int = 3) -> Path:
    """MODEL.onnx (+ MODEL.json) of the stand-in, exported once per test session; treat it as read-only."""
    from trainer.export import export_detector

    out = _workdir() / f"standin{channels}" / "model.onnx"
    export_detector(StandinDetector(channels=channels), out)
    return out


def copy_model(src: Path, dst_dir: Path) -> Path:
    """A private copy of MODEL.onnx and MODEL.json for tests that modify them."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for p in (src, src.with_suffix(".json")):
        shutil.copy(p, dst_dir / p.name)
    return dst_dir / src.name
