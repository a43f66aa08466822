"""`trainer fit`: the paper's Algorithm 1 (BiGAN + consistency loss), the AE and AnoGAN baselines.

Seeded, resumable (RUN_DIR/last.pt), DDP under torchrun; ships the epoch with the lowest held-out error.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from tqdm import tqdm

from trainer import checkpoint
from trainer.config import Config, TrainConfig, build_config, with_mnist_defaults
from trainer.errors import UserError
from trainer.losses import consistency_loss, d_loss, eg_adv_loss, feature_match_loss, gan_g_loss
from trainer.models import build_networks, init_weights
from trainer.threshold import threshold_source

RECALIBRATION_IMAGES = 2048  # BatchNorm statistics are re-estimated on at most this many training images
EpochHook = Callable[[int, dict[str, nn.Module]], dict[str, Any]]


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when present else cpu; an explicit cuda request without CUDA is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×C -> float32 N×C×H×W in [-1, 1] (the contract's x/127.5 - 1)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def random_shift(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Translate each image by up to ±fraction of its size (edge pixels repeated); 0 = unchanged.

    Uses torch's global generator, which fit_arrays seeds per epoch, so runs stay reproducible.
    """
    n, _, h, w = x.shape
    pad = int(round(fraction * max(h, w)))
    if pad == 0:
        return x
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2))
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def random_rotation(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate each image about its centre by up to ±degrees (bilinear, border pixels repeated); 0 = unchanged.

    Uses torch's global generator (seeded per epoch like random_shift)."""
    if degrees <= 0:
        return x
    theta = (torch.rand(x.shape[0]) * 2 - 1) * math.radians(degrees)
    c, s = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(c)
    affine = torch.stack([torch.stack([c, -s, zero], 1), torch.stack([s, c, zero], 1)], 1)
    grid = nn.functional.affine_grid(affine, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def corrupt(x: torch.Tensor, noise: float, erase: float) -> torch.Tensor:
    """What E sees in training when the reconstruction path is a denoising / inpainting one: x plus
    Gaussian noise of std `noise`, then in each image a random square of side up to `erase` × the size
    filled with that image's mean (per channel). Both 0: x itself. Torch's global generator (seeded per epoch).
    """
    if noise <= 0 and erase <= 0:
        return x
    out = x + noise * torch.randn_like(x) if noise > 0 else x.clone()
    if erase > 0:
        n, _, h, w = x.shape
        fill = x.mean(dim=(2, 3))
        sides = (torch.rand(n) * erase * min(h, w)).round().long().clamp(min=1).tolist()
        for i, side in enumerate(sides):
            y0 = int(torch.randint(0, h - side + 1, ()))
            x0 = int(torch.randint(0, w - side + 1, ()))
            out[i, :, y0:y0 + side, x0:x0 + side] = fill[i].view(-1, 1, 1)
    return out


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of n training images into (train, held-out normal) index arrays."""
    n_val = int(round(n * fraction)) if n >= 10 else 0
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


class EGPair(nn.Module):
    """E and G in one forward, so DDP sees one forward per step: (ẑ, x̃, x̂, z̃)."""

    def __init__(self, E: nn.Module, G: nn.Module) -> None:
        super().__init__()
        self.E, self.G = E, G

    def forward(self, x: torch.Tensor, z: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """x is what E sees (the corrupted image when training denoises); the consistency target is the clean one."""
        z_hat = self.E(x)
        if z is None:  # autoencoder: no prior path
            return z_hat, self.G(z_hat)
        x_tilde = self.G(z)
        return z_hat, x_tilde, self.G(z_hat), self.E(x_tilde)


def _frozen(module: nn.Module) -> list[nn.Parameter]:
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    return params


def balance_weight(cons: torch.Tensor, adv: torch.Tensor, G: nn.Module) -> torch.Tensor:
    """||∇L_cons|| / ||∇L_adv|| at G's output layer (detached, at most 1e4): multiplied into L_adv, it makes
    alpha the split of the two gradients there, whatever the norms' scales (VQGAN's adaptive weight).
    """
    last = output_layer(G).weight
    g_cons = torch.autograd.grad(cons, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0]
    return (g_cons.norm() / (g_adv.norm() + 1e-8)).clamp(max=1e4).detach()


def output_layer(G: nn.Module) -> nn.Module:
    """G's last convolution (the one that draws the image)."""
    convs = [m for m in G.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    return convs[-1]


def epoch_lr(t: TrainConfig, epoch: int) -> float:
    """The learning rate of a 1-based epoch: constant, or a cosine decay from lr towards 0 over the run.

    A function of the epoch alone, so a resumed run continues on the same schedule.
    """
    if t.lr_schedule == "cosine":
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / max(t.epochs, 1)))
    return t.lr


class Algorithm:
    """One training step of a variant over its networks and Adam optimisers."""

    def __init__(self, cfg: Config, nets: dict[str, nn.Module], info: DistInfo) -> None:
        self.cfg, self.nets, self.variant = cfg, nets, cfg.model.variant
        t = cfg.train
        wrap: Callable[[nn.Module], nn.Module] = (lambda m: DDP(m)) if info.world > 1 else (lambda m: m)
        adam = {"lr": t.lr, "betas": (t.beta1, t.beta2)}
        self.opts: dict[str, torch.optim.Optimizer] = {}
        if "E" in nets:
            self.eg = wrap(EGPair(nets["E"], nets["G"]))
            self.opts["EG"] = torch.optim.Adam(list(nets["E"].parameters()) + list(nets["G"].parameters()), **adam)
        else:
            self.g = wrap(nets["G"])
            self.opts["G"] = torch.optim.Adam(nets["G"].parameters(), **adam)
        if "D" in nets:
            self.d = wrap(nets["D"])
            self.opts["D"] = torch.optim.Adam(nets["D"].parameters(), **adam)

    def set_epoch(self, epoch: int) -> float:
        """Set every optimiser's learning rate for this epoch (1-based) by the schedule; returns it."""
        lr = epoch_lr(self.cfg.train, epoch)
        for opt in self.opts.values():
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def step(self, x: torch.Tensor) -> dict[str, float]:
        if self.variant == "ae":
            return self._step_ae(x)
        if self.variant == "anogan":
            return self._step_anogan(x)
        return self._step_bigan(x)

    def _step_bigan(self, x: torch.Tensor) -> dict[str, float]:
        t, D = self.cfg.train, self.nets["D"]
        z = torch.randn(x.shape[0], self.cfg.model.z_dim, device=x.device)
        z_hat, x_tilde, x_hat, z_tilde = self.eg(corrupt(x, t.input_noise, t.input_erase), z)
        # D: (x, E(x)) is real, (G(z), z) is fake.
        logits = self.d(torch.cat([x, x_tilde.detach()]), torch.cat([z_hat.detach(), z]))
        real, fake = logits.chunk(2)
        loss_d = d_loss(real, fake, t.loss)
        self.opts["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        self.opts["D"].step()
        # E, G: alpha·consistency + (1-alpha)·adversarial, through the just-updated D, frozen.
        frozen = _frozen(D)
        if t.adv_match:
            f_x, f_hat = D.features(torch.cat([x, x_hat]), torch.cat([z_hat, z_hat])).chunk(2)
            adv = feature_match_loss(f_x, f_hat, t.cons_reduce)
        else:
            real_eg, fake_eg = D(torch.cat([x, x_tilde]), torch.cat([z_hat, z])).chunk(2)
            adv = eg_adv_loss(real_eg, fake_eg, t.loss)
        cons = consistency_loss(x, x_hat, z, z_tilde, t.latent_weight, t.cons_reduce)
        adv_w = balance_weight(cons, adv, self.nets["G"]) if t.adv_balance and 0.0 < t.alpha < 1.0 else 1.0
        loss_eg = t.alpha * cons + (1.0 - t.alpha) * adv_w * adv
        self.opts["EG"].zero_grad(set_to_none=True)
        loss_eg.backward()
        self.opts["EG"].step()
        for p in frozen:
            p.requires_grad_(True)
        return {"loss_d": loss_d.item(), "loss_eg": loss_eg.item(), "cons": cons.item(), "adv": adv.item(),
                "recon": (x - x_hat).abs().mean().item(), "z_norm": z_hat.detach().norm(dim=1).mean().item(),
                "d_real": real.mean().item(), "d_fake": fake.mean().item(), "adv_w": float(adv_w)}

    def _step_ae(self, x: torch.Tensor) -> dict[str, float]:
        t = self.cfg.train
        z_hat, x_hat = self.eg(corrupt(x, t.input_noise, t.input_erase), None)
        recon = (x - x_hat).abs().mean()
        self.opts["EG"].zero_grad(set_to_none=True)
        recon.backward()
        self.opts["EG"].step()
        return {"loss_eg": recon.item(), "recon": recon.item(), "z_norm": z_hat.detach().norm(dim=1).mean().item()}

    def _step_anogan(self, x: torch.Tensor) -> dict[str, float]:
        t, D = self.cfg.train, self.nets["D"]
        z = torch.randn(x.shape[0], self.cfg.model.z_dim, device=x.device)
        fake_x = self.g(z)
        real, fake = self.d(torch.cat([x, fake_x.detach()])).chunk(2)
        loss_d = d_loss(real, fake, t.loss)
        self.opts["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        self.opts["D"].step()
        frozen = _frozen(D)
        loss_g = gan_g_loss(D(fake_x), t.loss)
        self.opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.opts["G"].step()
        for p in frozen:
            p.requires_grad_(True)
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "d_real": real.mean().item(),
                "d_fake": fake.mean().item()}


class WeightAverage:
    """Exponential moving average of the trained networks' parameters (buffers copied), step by step.

    `nets` is a deep copy of the trained networks that never trains; after optimiser step n
    p_avg ← d·p_avg + (1 − d)·p with d = min(decay, (1 + n) / (10 + n)): the warm-up lets the
    average forget the random initialisation quickly, so a short run ships trained weights too.
    Validation, checkpoint choice and shipping then use it.
    """

    def __init__(self, nets: dict[str, nn.Module], decay: float) -> None:
        self.decay = decay
        self.steps = 0
        self.nets = {k: copy.deepcopy(n) for k, n in nets.items() if k != "S"}

    @torch.no_grad()
    def update(self, live: dict[str, nn.Module]) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.steps += 1
        for k, avg in self.nets.items():
            for p_avg, p in zip(avg.parameters(), live[k].parameters(), strict=True):
                p_avg.lerp_(p, 1.0 - d)
            for b_avg, b in zip(avg.buffers(), live[k].buffers(), strict=True):
                b_avg.copy_(b)


@torch.no_grad()
def recalibrate_bn(nets: dict[str, nn.Module], x: torch.Tensor, batch: int = 64) -> None:
    """Re-estimate BatchNorm running stats on the scoring path only: E(x), G(E(x)), D.features(x).

    Training calls G on prior codes and E on generated images too, so the running averages mix
    distributions the detector never sees; eval-mode reconstructions then lag the train-mode ones.
    """
    bns = [m for n in nets.values() for m in n.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns or "E" not in nets:
        return
    modes = {k: n.training for k, n in nets.items()}
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    for n in nets.values():
        n.train()
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        if len(xb) < 2:
            continue
        z = nets["E"](xb)
        nets["G"](z)
        if "D" in nets:
            nets["D"].features(xb, z)
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    for k, n in nets.items():
        n.train(modes[k])


@torch.no_grad()
def validation_error(nets: dict[str, nn.Module], x: torch.Tensor, batch: int = 256) -> float:
    """Mean |x - G(E(x))| over held-out normal images, networks in eval mode (nan without E)."""
    if "E" not in nets or len(x) == 0:
        return float("nan")
    modes = {k: n.training for k, n in nets.items()}
    for n in nets.values():
        n.eval()
    total = 0.0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        total += (xb - nets["G"](nets["E"](xb))).abs().mean(dim=(1, 2, 3)).sum().item()
    for k, n in nets.items():
        n.train(modes[k])
    return total / len(x)


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def save_samples(path: Path, nets: dict[str, nn.Module], x: torch.Tensor, z: torch.Tensor) -> None:
    """PNG grid, rows: x, G(E(x)) (when there is an E), G(z); BGR as cv2 writes it."""
    modes = {k: n.training for k, n in nets.items()}
    for n in nets.values():
        n.eval()
    rows = [x]
    if "E" in nets:
        rows.append(nets["G"](nets["E"](x)))
    rows.append(nets["G"](z))
    for k, n in nets.items():
        n.train(modes[k])
    grid = np.concatenate([np.concatenate(list(_to_uint8(r)), axis=1) for r in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid)


@dataclass
class FitResult:
    nets: dict[str, nn.Module]          # the shipped networks (best held-out epoch, or the last)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    val_indices: list[int] = field(default_factory=list)


def _epoch_line(rec: dict[str, Any], epochs: int, best: bool) -> str:
    keys = [("loss_d", "D"), ("loss_eg", "EG"), ("loss_g", "G"), ("recon", "recon"), ("z_norm", "|z|"),
            ("val_recon", "val")]
    parts = [f"{label} {rec[k]:.4g}" for k, label in keys if k in rec and not math.isnan(rec[k])]
    return f"epoch {rec['epoch']:3d}/{epochs}  " + "  ".join(parts) + ("  *" if best else "") + \
        f"  ({rec['seconds']:.1f}s)"


def fit_arrays(images: np.ndarray, cfg: Config, out: Path | None = None, resume: bool = False,
               run_info: dict[str, Any] | None = None, on_epoch: EpochHook | None = None,
               verbose: bool = True) -> FitResult:
    """Train on uint8 N×H×W×C normal images; with `out`, write last.pt, log.jsonl, samples/, model.pt."""
    t = cfg.train
    info, device = init_distributed(t.device)
    train_idx, val_idx = split_validation(len(images), t.val_fraction, t.seed)
    if len(train_idx) < 2:
        raise UserError(f"only {len(images)} training images; need at least 2")
    torch.manual_seed(t.seed)
    nets = build_networks(cfg.model)
    checkpoint.attach_score_stats(cfg, nets)
    for n in nets.values():
        init_weights(n)
        n.to(device).train()
    algo = Algorithm(cfg, nets, info)
    average = WeightAverage(nets, t.ema) if t.ema > 0 else None
    x_all = to_tensor(images)
    x_val = x_all[val_idx].to(device)
    x_recal = x_all[train_idx[:RECALIBRATION_IMAGES]].to(device)
    data = TensorDataset(x_all[train_idx])
    sampler = DistributedSampler(data, num_replicas=info.world, rank=info.rank, shuffle=True, seed=t.seed)
    bs = min(t.batch_size, len(sampler))  # a tiny set still gives one batch per epoch
    loader = DataLoader(data, batch_size=bs, sampler=sampler, drop_last=True)
    sample_x = (x_val if len(x_val) else x_all[train_idx])[:8].to(device)
    sample_z = torch.randn(len(sample_x), cfg.model.z_dim, generator=torch.Generator().manual_seed(t.seed)).to(device)

    history: list[dict[str, Any]] = []
    best = {"epoch": 0, "val": math.inf, "state": None}
    start = 1
    last_path = out / "last.pt" if out else None
    if resume:
        if last_path is None or not last_path.is_file():
            raise UserError(f"nothing to resume: no {last_path}; run without --resume")
        ck = torch.load(last_path, map_location="cpu", weights_only=True)
        for k, n in nets.items():
            n.load_state_dict(ck["state"][k])
        for k, o in algo.opts.items():
            o.load_state_dict(ck["opt"][k])
        if average is not None:
            for k, n in average.nets.items():
                n.load_state_dict(ck["ema"][k])
            average.steps = int(ck["ema_steps"])
        history, best, start = ck["history"], ck["best"], ck["epoch"] + 1
        torch.set_rng_state(ck["rng"])
    torch.manual_seed(t.seed * 100_003 + start * 101 + info.rank)  # per-epoch noise stream: resumable

    for epoch in range(start, t.epochs + 1):
        t0 = time.time()
        sampler.set_epoch(epoch)
        lr = algo.set_epoch(epoch)
        sums: dict[str, float] = {}
        steps = 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{t.epochs}", leave=False, disable=None if info.main else True)
        for (xb,) in bar:
            stats = algo.step(random_shift(random_rotation(xb, t.rotate), t.shift).to(device, non_blocking=True))
            if average is not None:
                average.update(nets)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
            bar.set_postfix(recon=f"{stats.get('recon', float('nan')):.3f}")
        rec: dict[str, Any] = {"epoch": epoch, "lr": lr, **{k: v / max(steps, 1) for k, v in sums.items()}}
        shipped = average.nets if average is not None else nets   # the weights validation judges
        if t.bn_recalibrate:
            recalibrate_bn(shipped, x_recal)
        rec["val_recon"] = validation_error(shipped, x_val)
        rec["seconds"] = round(time.time() - t0, 2)
        if on_epoch is not None and info.main:
            rec.update(on_epoch(epoch, shipped))
        val = rec["val_recon"]
        take = t.select == "last" or math.isnan(val) or val < best["val"]
        if take:
            best = {"epoch": epoch, "val": best["val"] if math.isnan(val) else val,
                    "state": {k: copy.deepcopy(n.state_dict()) for k, n in shipped.items()}}
        history.append(rec)
        if info.main:
            if verbose:
                print(_epoch_line(rec, t.epochs, best["epoch"] == epoch), flush=True)
            if out is not None:
                _write_epoch(out, rec, nets, algo, history, best, epoch, cfg, sample_x, sample_z, average)
        torch.manual_seed(t.seed * 100_003 + (epoch + 1) * 101 + info.rank)

    for k, n in nets.items():
        if best["state"] is not None and k in best["state"]:
            n.load_state_dict(best["state"][k])
        n.eval()
    checkpoint.fit_score_stats(cfg, nets, x_all[train_idx].to(device))
    result = FitResult(nets, history, int(best["epoch"]), [int(i) for i in val_idx])
    if out is not None and info.main:
        run = dict(run_info or {}, best_epoch=result.best_epoch, epochs=t.epochs, val_indices=result.val_indices,
                   train_seconds=round(sum(h["seconds"] for h in history), 1))
        threshold = checkpoint.held_out_threshold(cfg, nets, x_all[val_idx].to(device))
        metrics = {} if threshold is None else {
            "threshold": threshold, "threshold_source": threshold_source(t, len(val_idx)),
            "n_held_out_normals": len(val_idx)}
        checkpoint.save(out / "model.pt", checkpoint.make_payload(cfg, nets, run, threshold, metrics))
    if info.world > 1:
        dist.barrier()
    return result


def _write_epoch(out: Path, rec: dict[str, Any], nets: dict[str, nn.Module], algo: Algorithm,
                 history: list[dict[str, Any]], best: dict[str, Any], epoch: int, cfg: Config,
                 sample_x: torch.Tensor, sample_z: torch.Tensor, average: WeightAverage | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    save_samples(out / "samples" / f"epoch_{epoch:03d}.png", nets, sample_x, sample_z)
    ck = {"format": checkpoint.FORMAT, "epoch": epoch, "config": cfg.to_dict(),
          "state": {k: {n: v.detach().cpu() for n, v in m.state_dict().items()} for k, m in nets.items()},
          "opt": {k: o.state_dict() for k, o in algo.opts.items()}, "history": history, "best": best,
          "ema": {k: m.state_dict() for k, m in average.nets.items()} if average is not None else {},
          "ema_steps": average.steps if average is not None else 0,
          "rng": torch.get_rng_state()}
    checkpoint.save(out / "last.pt", ck)


def _config_from_args(args: argparse.Namespace) -> Config:
    overrides = {"image_size": args.image_size, "z_dim": args.z_dim, "batch_size": args.batch_size,
                 "epochs": args.epochs, "seed": args.seed, "device": args.device, "channels": args.channels}
    return build_config(args.model, with_mnist_defaults(overrides, args.mnist_digit is not None), args.set)


def run_fit(args: argparse.Namespace) -> int:
    """CLI entry: load the training split, train, write RUN_DIR (model.pt, last.pt, log.jsonl, samples/)."""
    from trainer.datasets import load_split

    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    out: Path = args.out
    if args.resume:
        last = out / "last.pt"
        if not last.is_file():
            raise UserError(f"nothing to resume: no {last}; run without --resume")
        saved = Config.from_dict(torch.load(last, map_location="cpu", weights_only=True)["config"])
        if args.epochs is not None:
            saved.train.epochs = args.epochs
        cfg = saved
    else:
        cfg = _config_from_args(args)
        if out.exists() and (out / "log.jsonl").exists():
            (out / "log.jsonl").unlink()
    if not Path(args.data_dir).exists():
        raise UserError(f"data folder {args.data_dir} does not exist")
    data = load_split(args.data_dir, "train", cfg.model.image_size, args.channels, args.mnist_digit)
    cfg.model.channels = int(data.images.shape[3])
    run_info = {"data_dir": str(Path(args.data_dir).resolve()), "mnist_digit": args.mnist_digit,
                "channels_arg": args.channels, "n_train_images": len(data.images)}
    t0 = time.time()
    result = fit_arrays(data.images, cfg, out, resume=args.resume, run_info=run_info)
    val_names = [data.names[i] for i in result.val_indices]
    if int(os.environ.get("RANK", "0")) == 0:
        payload = checkpoint.load(out / "model.pt")
        payload["run"]["val_names"] = val_names
        checkpoint.save(out / "model.pt", payload)
        why = "lowest held-out reconstruction error" if cfg.train.select == "val" and "E" in result.nets else "last"
        print(f"trained {cfg.model.variant} for {cfg.train.epochs} epochs in {time.time() - t0:.0f}s; "
              f"shipping epoch {result.best_epoch} ({why}) -> {out / 'model.pt'}")
        if payload.get("threshold") is not None:
            print(f"threshold {payload['threshold']:.4g} ({payload['metrics']['threshold_source']}); "
                  "`trainer evaluate` checks it against a test split")
        elif "E" in result.nets:
            print("no threshold: too few training images to hold some out (need 10); set [decision] threshold "
                  "in the inspector's configuration, or run `trainer evaluate` with a test split")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
