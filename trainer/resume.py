"""RUN_DIR/last.pt: everything an interrupted `trainer fit` needs to go on as if it never stopped.

A dict: "format", "epoch" (the last finished one), "config" (`Config.to_dict()`), "state" (the live
networks), "opt" (the optimisers), "history" (one record per epoch), "best" (the shipped candidate:
epoch, held-out error, its weights), "ema" and "ema_steps" (the weight average), "rng" (torch's
generator state at the end of the epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import UserError
from trainer import checkpoint
from trainer.config import RETIRED, Config, retired_in


@dataclass
class Progress:
    """Where a run stands after an epoch: what the next epoch continues from."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "val": float("inf"), "state": None})
    epoch: int = 0


KEYS = ("epoch", "config", "state", "opt", "history", "best", "ema", "ema_steps", "rng")
FRESH = "run without --resume to train from scratch (that replaces it)"


def last_path(out: Path | None) -> Path:
    """RUN_DIR/last.pt; a UserError when there is none to resume from."""
    path = out / "last.pt" if out is not None else None
    if path is None or not path.is_file():
        raise UserError(f"nothing to resume: no {path}; run without --resume")
    return path


def read_last(out: Path | None) -> dict[str, Any]:
    """RUN_DIR/last.pt's dict; an empty, truncated, corrupt or foreign file is a one-line UserError."""
    path = last_path(out)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "cannot resume from it"
        raise UserError(f"cannot resume: {checkpoint.unreadable(path, exc)}; {FRESH}") from None
    if not isinstance(ck, dict) or any(k not in ck for k in KEYS) or not isinstance(ck["config"], dict):
        raise UserError(f"cannot resume: {path} is not a `trainer fit` progress file; {FRESH}")
    return ck


def stored_config(out: Path) -> Config:
    """The config a run in RUN_DIR was started with; a run that used a since retired option cannot go on."""
    stored = read_last(out)["config"]
    retired = retired_in(stored)
    if retired:
        items = ", ".join(f"{k}={v} ({RETIRED[k][1]})" for k, v in retired.items())
        raise UserError(f"this run was started with retired option(s) {items}; they no longer exist, "
                        "so it cannot be resumed: start it again without --resume")
    try:
        return Config.from_dict(stored)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"cannot resume: the configuration stored in {out / 'last.pt'} is invalid "
                        f"({type(exc).__name__}: {exc}); {FRESH}") from None


def save_progress(out: Path, progress: Progress, cfg: Config, nets: dict[str, nn.Module],
                  opts: dict[str, torch.optim.Optimizer], average: dict[str, nn.Module] | None,
                  average_steps: int) -> None:
    """Write RUN_DIR/last.pt after an epoch (atomically)."""
    ck = {"format": checkpoint.FORMAT, "epoch": progress.epoch, "config": cfg.to_dict(),
          "state": {k: checkpoint.state_of(m) for k, m in nets.items()},
          "opt": {k: o.state_dict() for k, o in opts.items()}, "history": progress.history, "best": progress.best,
          "ema": {k: m.state_dict() for k, m in average.items()} if average is not None else {},
          "ema_steps": average_steps if average is not None else 0,
          "rng": torch.get_rng_state()}
    checkpoint.save(out / "last.pt", ck)


def load_progress(out: Path | None, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer],
                  average: dict[str, nn.Module] | None) -> tuple[Progress, int]:
    """Restore networks, optimisers, the weight average and torch's generator from RUN_DIR/last.pt:
    (the progress, the weight average's step count)."""
    ck = read_last(out)
    try:
        for k, n in nets.items():
            n.load_state_dict(ck["state"][k])
        for k, o in opts.items():
            o.load_state_dict(ck["opt"][k])
        if average is not None:
            for k, n in average.items():
                n.load_state_dict(ck["ema"][k])
        torch.set_rng_state(ck["rng"])
        return Progress(ck["history"], ck["best"], int(ck["epoch"])), int(ck["ema_steps"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot resume from {out / 'last.pt' if out else 'last.pt'}: it does not fit this run "
                        f"({reason}); resume with the data it was started on, or {FRESH}") from None
