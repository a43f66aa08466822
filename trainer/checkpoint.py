"""The one-file checkpoint RUN_DIR/model.pt: weights and plain data only, written atomically.

Format 1, a dict (docs/architecture.md): "format", "config" (`Config.to_dict()`: "model", and "train"
with the training and the score options), "input" (the image contract), "lambda", "threshold",
"state" (E, G, D and the score statistics S; {} where a variant has none; J, the pixel judge, where there is one), "metrics", "run" (where
it trained, which images were held out). trainer/detector.py builds the Detector from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import UserError
from trainer.config import Config

FORMAT = 1


def input_spec(cfg: Config) -> dict[str, Any]:
    """The image contract: size × size px, 1 or 3 channels (BGR), normalised as x/127.5 - 1."""
    return {"size": cfg.model.image_size, "channels": cfg.model.channels, "color_order": "BGR",
            "normalize": "x/127.5-1"}


def state_of(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's weights and buffers, detached, on the CPU."""
    return {n: t.detach().cpu() for n, t in module.state_dict().items()}


def make_payload(cfg: Config, nets: dict[str, nn.Module], run: dict[str, Any] | None = None,
                 threshold: float | None = None, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model.pt dict (see the module's docstring)."""
    state = {k: state_of(nets[k]) if k in nets else {} for k in ("E", "G", "D", "S")}
    if "J" in nets:
        state["J"] = state_of(nets["J"])
    return {"format": FORMAT, "config": cfg.to_dict(), "input": input_spec(cfg), "lambda": cfg.score.lam,
            "threshold": threshold, "state": state, "metrics": metrics or {}, "run": run or {}}


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so an interrupted run never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def resolve(path: str | Path) -> Path:
    """RUN_DIR -> RUN_DIR/model.pt; a file path stays."""
    p = Path(path)
    return p / "model.pt" if p.is_dir() else p


REQUIRED = ("config", "input", "state", "lambda")  # what a Detector is built from


def unreadable(path: Path, exc: BaseException) -> str:
    """Why torch could not read PATH, in a few words (torch's own message is long and suggests
    weights_only=False, which must not be followed for a file that may not be ours)."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"{path} cannot be read ({e.strerror or type(e).__name__})"
    if size == 0:
        return f"{path} is empty"
    return f"{path} is truncated, corrupt or not a file `trainer fit` wrote ({type(exc).__name__})"


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; a missing, corrupt or foreign file is a one-line UserError."""
    p = resolve(path)
    if not p.is_file():
        raise UserError(f"no checkpoint at {p}; train one with `trainer fit DATA --out RUN_DIR`")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise UserError(f"cannot read checkpoint: {unreadable(p, exc)}; train the run again with "
                        "`trainer fit DATA --out RUN_DIR` or restore model.pt from a copy") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or any(k not in payload for k in REQUIRED):
        raise UserError(f"{p} is not a format-{FORMAT} detector checkpoint (`trainer fit` writes one); "
                        "point at a run folder or its model.pt")
    return payload
