"""`trainer fit DATA --out RUN --init OLD_RUN`: fine-tune from a trained run's shipped weights.

The old run's model.pt (read by trainer.checkpoint.load) gives the networks' configuration and their
weights (E, G, D, and J where there is one); the training options are the old run's too, with the ones
given on the command line (--epochs, --batch-size, --seed, --device, --set) over them. Options that would
reshape the networks (--model, --image-size, --z-dim, --channels) must agree with the old run, and the
data set must have the old run's channel count and images at least its input size (a smaller image
comes from another camera or ROI than the model was trained for): otherwise a one-line UserError.
The new run records `init_from` (the old model.pt, its shipped epoch) in model.pt's "run" and in the
first line of its log.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from common.errors import UserError
from common.images import read_image
from trainer import checkpoint
from trainer.config import Config, check_consistent, parse_sets, set_option

NETS = ("E", "G", "D", "J")


def init_config(old: Path, overrides: dict[str, Any], shape: dict[str, Any], sets: tuple[str, ...]
                ) -> tuple[Config, dict[str, Any]]:
    """(the new run's config, the old payload): the old config, training overrides and --set applied."""
    payload = checkpoint.load(old)
    try:
        cfg = Config.from_dict(payload["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"--init {old}: its stored configuration is invalid ({type(exc).__name__})") from None
    for key, value in shape.items():
        have = getattr(cfg.model, key)
        if value is not None and value != have:
            raise UserError(f"--init {old}: its model has {key} {have}, not {value}; fine-tuning keeps the "
                            f"old networks (drop the option or train from scratch)")
    before = dict(cfg.model.__dict__)
    for key, value in [*((k, v) for k, v in overrides.items() if v is not None), *parse_sets(list(sets)).items()]:
        set_option(cfg, key, value)
    changed = sorted(k for k, v in cfg.model.__dict__.items() if before[k] != v)
    if changed:
        raise UserError(f"--init {old}: --set cannot change the networks' {', '.join(changed)} when fine-tuning")
    check_consistent(cfg)
    return cfg, payload


def check_data(old: Path, cfg: Config, native_size: tuple[int, int], channels: int) -> None:
    """The data set must fit the old model: its channel count, and images at least its input size."""
    if channels != cfg.model.channels:
        raise UserError(f"--init {old}: the data set has {channels} channel(s), the model {cfg.model.channels}; "
                        "fine-tune it on images of the same camera")
    if min(native_size) < cfg.model.image_size:
        raise UserError(f"--init {old}: the data set's images are {native_size[1]}x{native_size[0]} px, smaller "
                        f"than the model's {cfg.model.image_size} px input; fine-tune it on crops of the same "
                        "camera and ROI")


def load_init(nets: dict[str, nn.Module], payload: dict[str, Any], old: Path) -> None:
    """Load the old run's shipped weights into freshly built networks (same shapes, checked)."""
    state = payload["state"]
    for key in NETS:
        if key in nets and state.get(key):
            try:
                nets[key].load_state_dict(state[key])
            except RuntimeError as exc:
                reason = str(exc).strip().splitlines()[0][:160]
                raise UserError(f"--init {old}: its {key} does not fit this run ({reason})") from None


def init_record(old: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """What the new run records as `init_from`."""
    run = payload.get("run") or {}
    return {"model": str(checkpoint.resolve(old).resolve()), "best_epoch": run.get("best_epoch"),
            "data_dir": run.get("data_dir"), "variant": payload["config"].get("model", {}).get("variant")}


@dataclass
class FineTune:
    """One --init: the old run, the new run's config, the old model.pt's payload."""

    old: Path
    cfg: Config
    payload: dict[str, Any]

    @property
    def record(self) -> dict[str, Any]:
        return init_record(self.old, self.payload)

    def load(self, nets: dict[str, nn.Module]) -> None:
        load_init(nets, self.payload, self.old)

    def check(self, data_dir: Path, data: Any) -> None:
        """`data`, a trainer.datasets.ImageSet loaded with the data's own channels, against the old model."""
        first = data_dir / data.names[0] if data.names and not data.names[0].startswith("mnist:") else None
        native = read_image(first).shape[:2] if first is not None and first.is_file() else \
            (self.cfg.model.image_size,) * 2
        check_data(self.old, self.cfg, (int(native[0]), int(native[1])), int(data.images.shape[3]))

    def log_first_epoch(self, epoch: int, nets: dict[str, nn.Module]) -> dict[str, Any]:
        """The on_epoch hook: log.jsonl's first line says where the weights came from."""
        return {"init_from": self.record} if epoch == 1 else {}
