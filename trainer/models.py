"""Networks of the detector: Encoder E, Generator G, Discriminator D (projection or concat join), AnoGAN's D.

DCGAN-style conv stacks: stride-2 4×4 convs halve the image down to 4×4, so depth grows with the size.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from common.errors import UserError
from trainer.config import SIZES, VARIANTS, ModelConfig


def stage_widths(cfg: ModelConfig) -> list[int]:
    """Channels after each stride-2 stage: 32 px → 3 stages, 64 → 4, 128 → 5, 256 → 6."""
    if cfg.image_size not in SIZES:
        raise UserError(f"image size {cfg.image_size} is not supported; choose one of {SIZES}")
    n = int(math.log2(cfg.image_size)) - 2
    return [min(cfg.width * 2**i, cfg.max_width) for i in range(n)]


def _conv_trunk(cfg: ModelConfig, batchnorm: bool, sn: bool) -> tuple[nn.Sequential, int]:
    """x (N×C×S×S) -> features (N×W×4×4); no BatchNorm on the first conv (DCGAN)."""
    layers: list[nn.Module] = []
    c_in = cfg.channels
    for i, w in enumerate(stage_widths(cfg)):
        use_bn = batchnorm and i > 0
        conv = nn.Conv2d(c_in, w, 4, 2, 1, bias=not use_bn)
        layers.append(spectral_norm(conv) if sn else conv)
        if use_bn:
            layers.append(nn.BatchNorm2d(w))
        layers.append(nn.LeakyReLU(0.2))
        c_in = w
    return nn.Sequential(*layers), c_in


class Encoder(nn.Module):
    """E: image -> latent code (N×z_dim), optionally bounded by b·tanh(h/b)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.trunk, w = _conv_trunk(cfg, cfg.eg_batchnorm, sn=False)
        self.head = nn.Conv2d(w, cfg.z_dim, 4, 1, 0)
        self.bound = float(cfg.latent_bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.trunk(x)).flatten(1)
        if self.bound > 0:
            h = self.bound * torch.tanh(h / self.bound)
        return h


class Generator(nn.Module):
    """G: latent (N×z_dim) -> image in [-1, 1] (N×C×S×S), transposed convs from 4×4 up."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        widths = stage_widths(cfg)[::-1]
        bn = cfg.eg_batchnorm
        layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.z_dim, widths[0], 4, 1, 0, bias=not bn)]
        layers += [nn.BatchNorm2d(widths[0])] if bn else []
        layers.append(nn.ReLU())
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=not bn))
            layers += [nn.BatchNorm2d(w_out)] if bn else []
            layers.append(nn.ReLU())
        layers += [nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.z_dim = cfg.z_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.z_dim, 1, 1))


class Discriminator(nn.Module):
    """D(x, z) -> logit N. `features(x, z)` is f, the layer the score's feature-matching term uses.

    projection (paper eq. 13): h = GSP(φ(x)); D = f_1(h) + <f_zdim(h), z>; f = h (independent of z).
    concat (EGBAD): D = c([flatten(φ(x)), MLP(z)]); f = the joint hidden layer.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.join = cfg.join
        self.pooling = cfg.pooling
        self.trunk, w = _conv_trunk(cfg, cfg.d_batchnorm, sn=cfg.d_spectral_norm)
        if self.join == "projection":
            self.f1 = nn.Linear(w, 1)
            self.fz = nn.Linear(w, cfg.z_dim, bias=False)
        elif self.join == "concat":
            hid = cfg.concat_hidden
            self.z_mlp = nn.Sequential(nn.Linear(cfg.z_dim, hid), nn.LeakyReLU(0.2))
            self.joint = nn.Sequential(nn.Linear(w * 16 + hid, hid), nn.LeakyReLU(0.2))
            self.out = nn.Linear(hid, 1)
        else:
            raise UserError(f"unknown join {self.join!r}; choose projection or concat")

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        phi = self.trunk(x)
        return phi.sum(dim=(2, 3)) if self.pooling == "sum" else phi.mean(dim=(2, 3))

    def features(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.join == "projection":
            return self.pooled(x)
        return self.joint(torch.cat([self.trunk(x).flatten(1), self.z_mlp(z)], dim=1))

    def judge(self, f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The logit from f = features(x, z): D's verdict without running its trunk again."""
        if self.join == "projection":
            return self.f1(f).squeeze(1) + (self.fz(f) * z).sum(dim=1)
        return self.out(f).squeeze(1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.judge(self.features(x, z), z)


class ImageDiscriminator(nn.Module):
    """AnoGAN's D(x) -> logit N, a plain DCGAN critic; f = the pooled trunk."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.pooling = cfg.pooling
        self.trunk, w = _conv_trunk(cfg, cfg.d_batchnorm, sn=cfg.d_spectral_norm)
        self.f1 = nn.Linear(w, 1)

    def features(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        phi = self.trunk(x)
        return phi.sum(dim=(2, 3)) if self.pooling == "sum" else phi.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.f1(self.features(x)).squeeze(1)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3×3 convs with BatchNorm and ReLU, size kept."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class PixelJudge(nn.Module):
    """J(x, x̂) -> anomaly logits N×1×H×W: a small U-Net judging an image beside its reconstruction.

    D's question (does this image belong with this code?) asked per pixel: it sees x and G(E(x)) side by
    side and learns, from simulated anomalies (trainer/anomalies.py), which differences are a foreign
    region and which are the reconstruction's usual misses on a texture it cannot reproduce.
    Three stride-2 stages of `judge_width`, ×2, ×4 channels and a ×8 bottleneck; skips at every scale.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.judge_width
        widths = [w, 2 * w, 4 * w]
        self.down = nn.ModuleList()
        c_in = 2 * cfg.channels
        for c in widths:
            self.down.append(_conv_block(c_in, c))
            c_in = c
        self.pool = nn.MaxPool2d(2)
        self.bottom = _conv_block(widths[-1], 8 * w)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        c_in = 8 * w
        for c in reversed(widths):
            self.up.append(nn.ConvTranspose2d(c_in, c, 2, 2))
            self.merge.append(_conv_block(2 * c, c))
            c_in = c
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, x_hat], dim=1)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            h = merge(torch.cat([up(h), skip], dim=1))
        return self.head(h)


def build_networks(cfg: ModelConfig) -> dict[str, nn.Module]:
    """The networks a variant trains: E, G, D (ae: E, G; anogan: G, D on images only), and the pixel
    judge J beside them when cfg.judge."""
    if cfg.variant not in VARIANTS:
        raise UserError(f"unknown model {cfg.variant!r}; choose one of {', '.join(VARIANTS)}")
    if cfg.variant == "anogan":
        if cfg.judge:
            raise UserError("anogan has no encoder to reconstruct with, so no pixel judge; use another variant")
        return {"G": Generator(cfg), "D": ImageDiscriminator(cfg)}
    nets: dict[str, nn.Module] = {"E": Encoder(cfg), "G": Generator(cfg)}
    if cfg.variant != "ae":
        nets["D"] = Discriminator(cfg)
    if cfg.judge:
        nets["J"] = PixelJudge(cfg)
    return nets


def init_weights(module: nn.Module) -> None:
    """DCGAN init: convs N(0, 0.02), BatchNorm gamma N(1, 0.02); spectral-normed convs keep their init."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and not hasattr(m, "parametrizations"):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def bake_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace every spectral norm in `module` (in place) by its current weight W/σ as a plain parameter.

    In eval mode σ is the stored estimate, so the baked network computes exactly what it did; the graph
    export writes is then plain convolutions. Handles torch's parametrizations and the older hook-based
    `spectral_norm`. Returns the module.
    """
    for m in module.modules():
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations.keys()):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
        if any(type(h).__name__ == "SpectralNorm" for h in m._forward_pre_hooks.values()):
            torch.nn.utils.remove_spectral_norm(m)
    return module
