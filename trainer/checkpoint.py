"""The one-file checkpoint (RUN_DIR/model.pt, weights and plain data only) and the Detector built from it.

`load_detector(...)` returns the nn.Module whose forward is exactly what evaluation runs and export wraps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from trainer.config import Config
from trainer.errors import UserError
from trainer.losses import anomaly_score, gaussian_kernel, score_terms
from trainer.models import build_networks
from trainer.score_stats import ScoreStats
from trainer.threshold import held_out_threshold as threshold_rule

FORMAT = 1


def input_spec(cfg: Config) -> dict[str, Any]:
    return {"size": cfg.model.image_size, "channels": cfg.model.channels, "color_order": "BGR",
            "normalize": "x/127.5-1"}


def smoothing_sigma(cfg: Config) -> float:
    return cfg.train.smooth_sigma if cfg.train.smooth_sigma > 0 else cfg.model.image_size / 64


def make_payload(cfg: Config, nets: dict[str, nn.Module], run: dict[str, Any] | None = None,
                 threshold: float | None = None, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model.pt dict of docs/architecture.md (plus "run": where it trained, which images were held out)."""
    state = {k: {n: t.detach().cpu() for n, t in nets[k].state_dict().items()} if k in nets else {}
             for k in ("E", "G", "D", "S")}
    return {"format": FORMAT, "config": cfg.to_dict(), "input": input_spec(cfg), "lambda": cfg.train.lam,
            "threshold": threshold, "state": state, "metrics": metrics or {}, "run": run or {}}


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so an interrupted run never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def resolve(path: str | Path) -> Path:
    p = Path(path)
    return p / "model.pt" if p.is_dir() else p


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; a missing or foreign file is a UserError."""
    p = resolve(path)
    if not p.is_file():
        raise UserError(f"no checkpoint at {p}; train one with `trainer fit DATA --out RUN_DIR`")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise UserError(f"cannot read checkpoint {p}: {str(exc).splitlines()[0]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{p} is not a format-{FORMAT} detector checkpoint")
    return payload


def build_networks_from(payload: dict[str, Any]) -> tuple[Config, dict[str, nn.Module]]:
    """Networks with the checkpoint's weights, in eval mode."""
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


def _strip_spectral_norm(module: nn.Module) -> None:
    """Bake W/σ into plain weights (eval-mode σ), so the graph is plain convs for export."""
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


class Detector(nn.Module):
    """forward(x: N×C×H×W in [-1, 1]) -> (score N, recon N×C×H×W in [-1, 1], amap N×H×W).

    score = (1-λ)·L_R + λ·L_D and amap as `losses.anomaly_score` defines them (tolerant residual,
    smoothed, per colour channel with score_channels "max", standardised by the ScoreStats `stats` when
    there are some).
    No data-dependent control flow: the same graph for every input, ready for ONNX export.
    """

    def __init__(self, E: nn.Module, G: nn.Module, D: nn.Module | None, lam: float, sigma: float,
                 reduce: str = "mean", spec: dict[str, Any] | None = None, threshold: float | None = None,
                 variant: str = "ours-proj", metrics: dict[str, Any] | None = None, tolerance: int = 0,
                 stats: ScoreStats | None = None, channels: str = "mean", pair_weight: float = 0.0,
                 code_weight: float = 0.0) -> None:
        super().__init__()
        self.E, self.G, self.D = E, G, D
        self.lam = float(lam) if D is not None else 0.0
        # The extra terms need their statistics (and L_P a D); without them they are off.
        self.pair_weight = float(pair_weight) if D is not None and stats is not None else 0.0
        self.code_weight = float(code_weight) if stats is not None else 0.0
        self.reduce = reduce
        self.tolerance = int(tolerance)
        self.channels = channels
        self.stats = stats
        self.register_buffer("kernel", gaussian_kernel(sigma))
        self.spec = spec or {}
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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        z, recon, f_x, f_r = self._reconstruct(x)
        maps, l_d = score_terms(x, recon, f_x, f_r, self.kernel, self.tolerance, self.channels)
        l_p = -self.D.judge(f_x, z) if self.D is not None else x.new_zeros(x.shape[0])
        return maps, l_d, z, l_p


def detector_from(cfg: Config, nets: dict[str, nn.Module], threshold: float | None = None,
                  metrics: dict[str, Any] | None = None, strip_sn: bool = False) -> Detector:
    """A Detector over trained networks (shared, not copied); AnoGAN has no E and cannot be one."""
    if cfg.model.variant == "anogan":
        raise UserError("anogan scores by a per-image latent search, which cannot be exported; "
                        "evaluate it with `trainer evaluate`, export another variant")
    if strip_sn and "D" in nets:
        _strip_spectral_norm(nets["D"])
    stats = nets.get("S")
    return Detector(nets["E"], nets["G"], nets.get("D"), cfg.train.lam, smoothing_sigma(cfg),
                    cfg.train.score_reduce, input_spec(cfg), threshold, cfg.model.variant, metrics,
                    cfg.train.score_tolerance, stats if isinstance(stats, ScoreStats) else None,
                    cfg.train.score_channels, cfg.train.score_pair_weight, cfg.train.score_code_weight)


def attach_score_stats(cfg: Config, nets: dict[str, nn.Module]) -> None:
    """Add nets["S"], identity ScoreStats, when the config standardises scores and the variant has an E."""
    if cfg.train.score_normalize == "pixel" and "E" in nets:
        maps = cfg.model.channels if cfg.train.score_channels == "max" else 1
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
    stats.fit(maps, l_d, cfg.train.score_reduce)
    stats.fit_code(z)
    stats.fit_pair(l_p)


@torch.no_grad()
def held_out_threshold(cfg: Config, nets: dict[str, nn.Module], x: torch.Tensor, batch: int = 128) -> float | None:
    """The shipped threshold from the held-out normal images' scores (trainer/threshold.py; no test labels
    needed, so a folder of good images alone gives a deployable model); None without E or held-out images."""
    if "E" not in nets or len(x) == 0:
        return None
    det = detector_from(cfg, nets).eval()
    scores = torch.cat([det(x[i:i + batch])[0] for i in range(0, len(x), batch)])
    return threshold_rule(scores.double().cpu().numpy(), cfg.train)


def load_detector(path: str | Path) -> Detector:
    """RUN_DIR or RUN_DIR/model.pt -> Detector in eval mode (spectral norm baked into the weights)."""
    payload = load(path)
    cfg, nets = build_networks_from(payload)
    det = detector_from(cfg, nets, payload.get("threshold"), payload.get("metrics"), strip_sn=True)
    det.spec = payload["input"]
    det.lam = float(payload["lambda"]) if det.D is not None else 0.0
    return det.eval()
