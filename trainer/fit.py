"""`trainer fit`: the training loop around a variant's step (trainer/steps.py).

Per epoch: the step over shuffled, shifted batches; an exponential moving average of the weights;
BatchNorm statistics re-estimated on the scoring path; the held-out normal images' reconstruction
error, which picks the epoch to ship; a sample grid and RUN_DIR/last.pt (trainer/resume.py). At the
end: the score statistics on the training images, the threshold on the held-out ones, RUN_DIR/model.pt.
Seeded and resumable; data-parallel under torchrun (trainer/distributed.py).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from tqdm import tqdm

from common.errors import UserError
from common.manifest import reference_scores
from trainer import checkpoint
from trainer.augment import random_shift
from trainer.config import Config, build_config, with_mnist_defaults
from trainer.detector import NORMAL_SCORES, attach_score_stats, fit_score_stats, held_out_scores
from trainer.distributed import barrier, ddp_wrapper, init_distributed, is_main_process, shutdown
from trainer.init_from import FineTune, init_config
from trainer.models import build_networks, init_weights
from trainer.resume import Progress, load_progress, save_progress, stored_config
from trainer.steps import make_step
from trainer.tensors import to_images, to_tensor
from trainer.threshold import held_out_threshold, threshold_source

RECALIBRATION_IMAGES = 2048  # BatchNorm statistics are re-estimated on at most this many training images
EpochHook = Callable[[int, dict[str, nn.Module]], dict[str, Any]]


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of n training images into (train, held-out normal) index arrays."""
    n_val = int(round(n * fraction)) if n >= 10 else 0
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


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


@contextmanager
def _mode(nets: dict[str, nn.Module], training: bool) -> Iterator[None]:
    """Every network in train (or eval) mode inside the block; each one's own mode restored after it."""
    before = {k: n.training for k, n in nets.items()}
    for n in nets.values():
        n.train(training)
    try:
        yield
    finally:
        for k, n in nets.items():
            n.train(before[k])


@torch.no_grad()
def recalibrate_bn(nets: dict[str, nn.Module], x: torch.Tensor, batch: int = 64) -> None:
    """Re-estimate BatchNorm running stats on the scoring path only: E(x), G(E(x)), D.features(x), J(x, G(E(x))).

    Training calls G on prior codes and E on generated images too, so the running averages mix
    distributions the detector never sees; eval-mode reconstructions then lag the train-mode ones.
    """
    bns = [m for n in nets.values() for m in n.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns or "E" not in nets:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    with _mode(nets, training=True):
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            if len(xb) < 2:
                continue
            z = nets["E"](xb)
            recon = nets["G"](z)
            if "D" in nets:
                nets["D"].features(xb, z)
            if "J" in nets:
                nets["J"](xb, recon)
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom


@torch.no_grad()
def validation_error(nets: dict[str, nn.Module], x: torch.Tensor, batch: int = 256) -> float:
    """Mean |x - G(E(x))| over held-out normal images, networks in eval mode (nan without E)."""
    if "E" not in nets or len(x) == 0:
        return float("nan")
    total = 0.0
    with _mode(nets, training=False):
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            total += (xb - nets["G"](nets["E"](xb))).abs().mean(dim=(1, 2, 3)).sum().item()
    return total / len(x)


@torch.no_grad()
def save_samples(path: Path, nets: dict[str, nn.Module], x: torch.Tensor, z: torch.Tensor) -> None:
    """PNG grid, rows: x, G(E(x)) (when there is an E), G(z); BGR as cv2 writes it."""
    rows = [x]
    with _mode(nets, training=False):
        if "E" in nets:
            rows.append(nets["G"](nets["E"](x)))
        rows.append(nets["G"](z))
    grid = np.concatenate([np.concatenate(list(to_images(r)), axis=1) for r in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid)


@dataclass
class FitResult:
    nets: dict[str, nn.Module]          # the shipped networks (best held-out epoch, or the last)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    val_indices: list[int] = field(default_factory=list)


def _epoch_line(rec: dict[str, Any], epochs: int, best: bool) -> str:
    keys = [("loss_d", "D"), ("loss_eg", "EG"), ("loss_g", "G"), ("loss_j", "J"), ("recon", "recon"), ("z_norm", "|z|"),
            ("val_recon", "val")]
    parts = [f"{label} {rec[k]:.4g}" for k, label in keys if k in rec and not math.isnan(rec[k])]
    return f"epoch {rec['epoch']:3d}/{epochs}  " + "  ".join(parts) + ("  *" if best else "") + \
        f"  ({rec['seconds']:.1f}s)"


def fit_arrays(images: np.ndarray, cfg: Config, out: Path | None = None, resume: bool = False,
               run_info: dict[str, Any] | None = None, on_epoch: EpochHook | None = None,
               verbose: bool = True, init: Callable[[dict[str, nn.Module]], None] | None = None) -> FitResult:
    """Train on uint8 N×H×W×C normal images; with `out`, write last.pt, log.jsonl, samples/, model.pt.
    `init` loads starting weights into the freshly initialised networks (`--init`, trainer/init_from.py)."""
    t = cfg.train
    info, device = init_distributed(t.device)
    train_idx, val_idx = split_validation(len(images), t.val_fraction, t.seed)
    if len(train_idx) < 2:
        raise UserError(f"only {len(images)} training images; need at least 2")
    torch.manual_seed(t.seed)
    nets = build_networks(cfg.model)
    attach_score_stats(cfg, nets)
    for n in nets.values():
        init_weights(n)
    if init is not None:
        init(nets)
    for n in nets.values():
        n.to(device).train()
    step = make_step(cfg, nets, ddp_wrapper(info))
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

    progress = Progress()
    if resume:
        progress, steps_done = load_progress(out, nets, step.opts, average.nets if average is not None else None)
        if average is not None:
            average.steps = steps_done
    torch.manual_seed(t.seed * 100_003 + (progress.epoch + 1) * 101 + info.rank)  # per-epoch noise: resumable

    for epoch in range(progress.epoch + 1, t.epochs + 1):
        t0 = time.time()
        sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        steps = 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{t.epochs}", leave=False, disable=None if info.main else True)
        for (xb,) in bar:
            stats = step.step(random_shift(xb, t.shift).to(device, non_blocking=True))
            if average is not None:
                average.update(nets)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
            bar.set_postfix(recon=f"{stats.get('recon', float('nan')):.3f}")
        rec: dict[str, Any] = {"epoch": epoch, "lr": t.lr, **{k: v / max(steps, 1) for k, v in sums.items()}}
        shipped = average.nets if average is not None else nets   # the weights validation judges
        if t.bn_recalibrate:
            recalibrate_bn(shipped, x_recal)
        rec["val_recon"] = validation_error(shipped, x_val)
        rec["seconds"] = round(time.time() - t0, 2)
        if on_epoch is not None and info.main:
            rec.update(on_epoch(epoch, shipped))
        val, best = rec["val_recon"], progress.best
        if t.select == "last" or math.isnan(val) or val < best["val"]:
            progress.best = {"epoch": epoch, "val": best["val"] if math.isnan(val) else val,
                             "state": {k: copy.deepcopy(n.state_dict()) for k, n in shipped.items()}}
        progress.history.append(rec)
        progress.epoch = epoch
        if info.main:
            if verbose:
                print(_epoch_line(rec, t.epochs, progress.best["epoch"] == epoch), flush=True)
            if out is not None:
                _write_epoch(out, rec, progress, cfg, nets, step.opts, average, sample_x, sample_z)
        torch.manual_seed(t.seed * 100_003 + (epoch + 1) * 101 + info.rank)

    best_state = progress.best["state"]
    for k, n in nets.items():
        if best_state is not None and k in best_state:
            n.load_state_dict(best_state[k])
        n.eval()
    fit_score_stats(cfg, nets, x_all[train_idx].to(device))
    result = FitResult(nets, progress.history, int(progress.best["epoch"]), [int(i) for i in val_idx])
    if out is not None and info.main:
        run = dict(run_info or {}, best_epoch=result.best_epoch, epochs=t.epochs, val_indices=result.val_indices,
                   train_seconds=round(sum(h["seconds"] for h in progress.history), 1))
        val_scores = held_out_scores(cfg, nets, x_all[val_idx].to(device))
        threshold = None if val_scores is None else held_out_threshold(val_scores, cfg.score)
        metrics = {} if threshold is None else {
            "threshold": threshold, "threshold_source": threshold_source(cfg.score, len(val_idx)),
            "n_held_out_normals": len(val_idx), NORMAL_SCORES: reference_scores(val_scores)}
        checkpoint.save(out / "model.pt", checkpoint.make_payload(cfg, nets, run, threshold, metrics))
    barrier(info)
    return result


def _write_epoch(out: Path, rec: dict[str, Any], progress: Progress, cfg: Config, nets: dict[str, nn.Module],
                 opts: dict[str, torch.optim.Optimizer], average: WeightAverage | None,
                 sample_x: torch.Tensor, sample_z: torch.Tensor) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # a fresh run replaces an earlier run's log with its first epoch, not before: a run that fails
    # before it trained anything leaves RUN_DIR as it was; a resumed run (epoch >= 2) appends
    with open(out / "log.jsonl", "w" if progress.epoch == 1 else "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    save_samples(out / "samples" / f"epoch_{progress.epoch:03d}.png", nets, sample_x, sample_z)
    save_progress(out, progress, cfg, nets, opts, average.nets if average is not None else None,
                  average.steps if average is not None else 0)


@dataclass(frozen=True)
class FitOptions:
    """`trainer fit DATA --out RUN_DIR ...`: what to train on, where to write, and the options that differ."""

    data_dir: Path
    out: Path
    variant: str = "ours-proj"
    epochs: int | None = None          # None: the config's default (40 for an MNIST folder)
    image_size: int | None = None
    channels: int | None = None        # None: the data's own
    mnist_digit: int | None = None
    batch_size: int | None = None
    z_dim: int | None = None
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    sets: tuple[str, ...] = ()         # --set KEY=VALUE items
    init: Path | None = None           # --init OLD_RUN: fine-tune from its model.pt (trainer/init_from.py)

    def config(self) -> Config:
        """The run's config: the stored one when resuming (epochs may be raised), else built from the options."""
        if self.resume:
            cfg = stored_config(self.out)
            if self.epochs is not None:
                cfg.train.epochs = self.epochs
            return cfg
        overrides = {"image_size": self.image_size, "z_dim": self.z_dim, "batch_size": self.batch_size,
                     "epochs": self.epochs, "seed": self.seed, "device": self.device, "channels": self.channels}
        return build_config(self.variant, with_mnist_defaults(overrides, self.mnist_digit is not None), list(self.sets))


def fine_tune(opts: FitOptions) -> FineTune:
    """--init OLD_RUN: its networks' config and weights, this run's training options over its own."""
    if opts.resume:
        raise UserError("--init starts a new run from another run's weights; --resume continues this one: "
                        "pass one of them")
    overrides = {"epochs": opts.epochs, "batch_size": opts.batch_size, "seed": opts.seed, "device": opts.device}
    shape = {"variant": opts.variant if opts.variant != "ours-proj" else None, "image_size": opts.image_size,
             "z_dim": opts.z_dim, "channels": opts.channels}
    return FineTune(opts.init, *init_config(opts.init, overrides, shape, opts.sets))


def check_run_dir(out: Path) -> None:
    """A UserError unless `out` is (or can be made) a folder this process can write to."""
    try:
        _check_run_dir(out)
    except OSError as e:  # e.g. a folder on the way that this user may not enter
        raise UserError(f"--out {out} cannot be checked ({e.strerror or e}); pass a folder you can write to") from None


def _check_run_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; pass a folder for the run (RUN_DIR)")
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise UserError(f"--out {out}: {existing} is a file, not a folder; pass a folder for the run (RUN_DIR)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write to {existing} (permission denied); pass a folder you can write to")


def run_fit(opts: FitOptions) -> FitResult:
    """Load a data set's training split, train, write RUN_DIR (model.pt, last.pt, log.jsonl, samples/)."""
    from trainer.datasets import load_split

    # Everything that can be checked is checked before RUN_DIR is touched (nothing in it changes until
    # the first epoch is written): the options, the run folder, last.pt when resuming, the data.
    if opts.epochs is not None and opts.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {opts.epochs}")
    check_run_dir(opts.out)
    init = fine_tune(opts) if opts.init is not None else None
    cfg = init.cfg if init is not None else opts.config()
    if not opts.data_dir.exists():
        raise UserError(f"data folder {opts.data_dir} does not exist; pass the folder of training images "
                        "(MVTec layout, a folder of good images, or MNIST IDX files)")
    data = load_split(opts.data_dir, "train", cfg.model.image_size, opts.channels, opts.mnist_digit)
    if init is not None:
        init.check(opts.data_dir, data)
    cfg.model.channels = int(data.images.shape[3])
    run_info = {"data_dir": str(opts.data_dir.resolve()), "mnist_digit": opts.mnist_digit,
                "channels_arg": opts.channels, "n_train_images": len(data.images)}
    if init is not None:
        run_info["init_from"] = init.record
    t0 = time.time()
    result = fit_arrays(data.images, cfg, opts.out, resume=opts.resume, run_info=run_info,
                        on_epoch=init.log_first_epoch if init is not None else None,
                        init=init.load if init is not None else None)
    if is_main_process():
        payload = checkpoint.load(opts.out / "model.pt")
        payload["run"]["val_names"] = [data.names[i] for i in result.val_indices]
        if init is not None:
            payload["metrics"]["init_from"] = init.record
        checkpoint.save(opts.out / "model.pt", payload)
        why = "lowest held-out reconstruction error" if cfg.train.select == "val" and "E" in result.nets else "last"
        print(f"trained {cfg.model.variant} for {cfg.train.epochs} epochs in {time.time() - t0:.0f}s; "
              f"shipping epoch {result.best_epoch} ({why}) -> {opts.out / 'model.pt'}")
        if payload.get("threshold") is not None:
            print(f"threshold {payload['threshold']:.4g} ({payload['metrics']['threshold_source']}); "
                  "`trainer evaluate` checks it against a test split")
        elif "E" in result.nets:
            print("no threshold: too few training images to hold some out (need 10); set [decision] threshold "
                  "in the inspector's configuration, or run `trainer evaluate` with a test split")
    shutdown()
    return result
