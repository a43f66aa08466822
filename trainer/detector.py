"""The detector: E → G → D and the anomaly score as one nn.Module, what evaluation runs and export wraps.

`load_detector(RUN_DIR)` builds it from a checkpoint (spectral norm baked into plain weights);
`detector_from(cfg, nets)` over networks in training. AnoGAN has no E: it scores by a per-image latent
search (`score_anogan`), which cannot be exported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.errors import UserError
from trainer import checkpoint
from trainer.config import Config, ScoreConfig
from trainer.models import bake_spectral_norm, build_networks
from trainer.score import anomaly_score, gaussian_kernel, judge_map, score_terms, top_share
from trainer.score_stats import ScoreStats


class ExportableDetector(nn.Module):
    """What export (and a torch-eager comparison with its graph) needs of a detector.

    forward(x: N×C×H×W in [-1, 1]) -> (score N, reconstruction N×C×H×W in [-1, 1], anomaly map N×H×W),
    with no data-dependent control flow; beside it, what the manifest records.
    """

    spec: dict[str, Any]         # the checkpoint's "input": size, channels, color_order, normalize
    variant: str
    threshold: float | None
    lam: float                   # λ of the score, recorded in the manifest
    metrics: dict[str, Any]
    pair_weight: float = 0.0     # the weights of the optional score terms (0 = off), recorded in the manifest
    code_weight: float = 0.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def smoothing_sigma(score: ScoreConfig, image_size: int) -> float:
    """The anomaly map's Gaussian sigma in px: smooth_sigma, or image_size/64 when it is 0."""
    return score.smooth_sigma if score.smooth_sigma > 0 else image_size / 64


class Detector(ExportableDetector):
    """score = (1-λ)·L_R + λ·L_D [+ ν_P·L_P + ν_Z·L_Z] and the anomaly map, as trainer/score.py defines
    them (tolerant residual, smoothed, per colour channel with score_channels "max", standardised by the
    ScoreStats `stats` when there are some). With a pixel judge J the map is J's smoothed probability
    map of (x, G(E(x))), standardised per pixel by `stats` when there are some, and the score the mean
    of its top share (trainer/score.py `judge_map`, `top_share`)."""

    def __init__(self, E: nn.Module, G: nn.Module, D: nn.Module | None, score: ScoreConfig, spec: dict[str, Any],
                 variant: str, stats: ScoreStats | None = None, threshold: float | None = None,
                 metrics: dict[str, Any] | None = None, J: nn.Module | None = None) -> None:
        super().__init__()
        self.E, self.G, self.D, self.J = E, G, D, J
        self.topk = float(score.judge_topk)
        self.lam = float(score.lam) if D is not None else 0.0
        # The extra terms need their statistics (and L_P a D); without them they are off.
        judged = J is not None   # a judged score is J's map alone
        self.pair_weight = float(score.score_pair_weight) if D is not None and stats is not None and not judged else 0.0
        self.code_weight = float(score.score_code_weight) if stats is not None and not judged else 0.0
        self.reduce = score.score_reduce
        self.tolerance = int(score.score_tolerance)
        self.channels = score.score_channels
        self.stats = stats
        self.register_buffer("kernel", gaussian_kernel(smoothing_sigma(score, int(spec["size"]))))
        self.spec = spec
        self.threshold = threshold
        self.variant = variant
        self.metrics = metrics or {}
        self.eval()

    def _reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(E(x), G(E(x)), f(x), f(G(E(x)))); the features are zeros without a D."""
        z = self.E(x)
        recon = self.G(z)
        if self.D is None:
            f_x = f_r = x.new_zeros(x.shape[0], 1)
        else:
            f_x, f_r = self.D.features(x, z), self.D.features(recon, z)
        return z, recon, f_x, f_r

    def _judge(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(E(x), G(E(x)), J's raw map N×H×W) of a judged detector."""
        z = self.E(x)
        recon = self.G(z)
        return z, recon, judge_map(self.J(x, recon), self.kernel)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.J is not None:
            _, recon, amap = self._judge(x)
            if self.stats is not None:   # standardised per pixel: what J says on normal images there
                amap = self.stats(amap[:, None], amap.new_zeros(amap.shape[0]))[0][:, 0]
            return top_share(amap, self.topk), recon, amap
        z, recon, f_x, f_r = self._reconstruct(x)
        score, amap = anomaly_score(x, recon, f_x, f_r, self.lam, self.kernel, self.reduce, self.tolerance,
                                    self.stats, self.channels)
        if self.pair_weight > 0:   # D's verdict on (x, E(x)): a normal pair is what D learnt to call real
            score = score + self.pair_weight * self.stats.pair(-self.D.judge(f_x, z))
        if self.code_weight > 0:   # how unlike the normal images' codes E(x) is
            score = score + self.code_weight * self.stats.code(z)
        return score, recon, amap

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What ScoreStats learns from: the unstandardised maps (N×K×H×W), L_D (N), the codes E(x)
        (N×z_dim) and L_P = -D(x, E(x)) (N; zeros without a D)."""
        if self.J is not None:   # the judge's raw map; no feature, code or pair terms
            z, _, amap = self._judge(x)
            zeros = x.new_zeros(x.shape[0])
            return amap[:, None], zeros, z, zeros
        z, recon, f_x, f_r = self._reconstruct(x)
        maps, l_d = score_terms(x, recon, f_x, f_r, self.kernel, self.tolerance, self.channels)
        l_p = -self.D.judge(f_x, z) if self.D is not None else x.new_zeros(x.shape[0])
        return maps, l_d, z, l_p


def detector_from(cfg: Config, nets: dict[str, nn.Module], threshold: float | None = None,
                  metrics: dict[str, Any] | None = None, strip_sn: bool = False) -> Detector:
    """A Detector over trained networks (shared, not copied; strip_sn bakes D's spectral norm into them)."""
    if cfg.model.variant == "anogan":
        raise UserError("anogan scores by a per-image latent search, which cannot be exported; "
                        "evaluate it with `trainer evaluate`, export another variant")
    if strip_sn and "D" in nets:
        bake_spectral_norm(nets["D"])
    stats = nets.get("S")
    return Detector(nets["E"], nets["G"], nets.get("D"), cfg.score, checkpoint.input_spec(cfg), cfg.model.variant,
                    stats if isinstance(stats, ScoreStats) else None, threshold, metrics, J=nets.get("J"))


def attach_score_stats(cfg: Config, nets: dict[str, nn.Module]) -> None:
    """Add nets["S"], identity ScoreStats, when the config standardises scores and the variant has an E
    (a pixel judge's one map with judge_normalize, or one per scored channel map)."""
    if cfg.score.score_normalize == "pixel" and "E" in nets and ("J" not in nets or cfg.score.judge_normalize):
        maps = cfg.model.channels if cfg.score.score_channels == "max" and "J" not in nets else 1
        nets["S"] = ScoreStats(cfg.model.image_size, maps, cfg.model.z_dim)


@torch.no_grad()
def fit_score_stats(cfg: Config, nets: dict[str, nn.Module], x: torch.Tensor, batch: int = 128) -> None:
    """Fit nets["S"] on normal images x (N×C×H×W in [-1, 1]), networks in eval mode; no-op without "S"."""
    stats = nets.get("S")
    if not isinstance(stats, ScoreStats):
        return
    det = detector_from(cfg, {k: v for k, v in nets.items() if k != "S"}).eval()
    parts = [det.raw(x[i:i + batch]) for i in range(0, len(x), batch)]
    maps, l_d, z, l_p = (torch.cat([p[k] for p in parts]) for k in range(4))
    stats.fit(maps, l_d, cfg.score.score_reduce)
    stats.fit_code(z)
    stats.fit_pair(l_p)


NORMAL_SCORES = "normal_scores"  # the checkpoint metrics' key of the held-out scores (export -> manifest)


@torch.no_grad()
def held_out_scores(cfg: Config, nets: dict[str, nn.Module], x: torch.Tensor, batch: int = 128) -> np.ndarray | None:
    """The scores of held-out normal images x (float64), as the exported graph computes them: what the
    shipped threshold is set from (trainer/threshold.py held_out_threshold: no test labels needed, so a
    folder of good images alone gives a deployable model) and what the manifest ships as `normal_scores`
    (the drift watch's reference); None without E or held-out images."""
    if "E" not in nets or len(x) == 0:
        return None
    det = detector_from(cfg, nets).eval()
    scores = torch.cat([det(x[i:i + batch])[0] for i in range(0, len(x), batch)])
    return scores.double().cpu().numpy()


def networks_from(payload: dict[str, Any]) -> tuple[Config, dict[str, nn.Module]]:
    """A checkpoint's config and networks (with its score statistics as "S"), its weights, in eval mode."""
    cfg = Config.from_dict(payload["config"])
    nets = build_networks(cfg.model)
    attach_score_stats(cfg, nets)
    if "S" in nets and not payload["state"].get("S"):
        raise UserError("the checkpoint's config standardises scores but it holds no score statistics; "
                        "train it again with `trainer fit`")
    for name, net in nets.items():
        net.load_state_dict(payload["state"][name])
        net.eval()
    return cfg, nets


def load_detector(path: str | Path) -> Detector:
    """RUN_DIR or RUN_DIR/model.pt -> Detector in eval mode (spectral norm baked into the weights)."""
    payload = checkpoint.load(path)
    cfg, nets = networks_from(payload)
    cfg.score = dataclasses.replace(cfg.score, lam=float(payload["lambda"]))
    det = detector_from(cfg, nets, payload.get("threshold"), payload.get("metrics"), strip_sn=True)
    det.spec = payload["input"]
    return det.eval()


def latent_search(G: nn.Module, D: nn.Module, x: torch.Tensor, steps: int, lr: float, lam: float,
                  seed: int = 0) -> torch.Tensor:
    """AnoGAN's test-time search: Γ Adam steps on z of (1-λ)·mean|x - G(z)| + λ·mean|f(x) - f(G(z))|.

    Returns the final z (N×z_dim); G and D stay frozen. Not exportable (a loop of gradient steps).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(x.shape[0], G.z_dim, generator=gen).to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.no_grad():
        f_x = D.features(x)
    frozen = [p for p in list(G.parameters()) + list(D.parameters()) if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad()
                g = G(z)
                loss = ((1 - lam) * (x - g).abs().flatten(1).mean(1)
                        + lam * (f_x - D.features(g)).abs().mean(1)).sum()
                loss.backward()
                opt.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return z.detach()


def score_anogan(cfg: Config, nets: dict[str, nn.Module], x: torch.Tensor, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AnoGAN's (score N, reconstruction G(z*) N×C×H×W, anomaly map N×H×W) after its latent search."""
    s, G, D = cfg.score, nets["G"], nets["D"]
    z = latent_search(G, D, x, s.anogan_steps, s.anogan_lr, s.lam, seed=seed)
    kernel = gaussian_kernel(smoothing_sigma(s, cfg.model.image_size)).to(x.device)
    with torch.no_grad():
        r = G(z)
        score, amap = anomaly_score(x, r, D.features(x), D.features(r), s.lam, kernel, s.score_reduce,
                                    s.score_tolerance, channels=s.score_channels)
    return score, r, amap
