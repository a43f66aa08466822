"""What the score stage decides with for one batch: the production model and an optional shadow.

The score loop takes one `ModelSet` per batch (inspector/models/slot.py swaps it between two batches), so
every part of a batch is scored by the same models and its verdict carries the model_id that decided it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.manifest import Manifest
from engines import Engine


@dataclass(frozen=True)
class LoadedModel:
    engine: Engine
    model_id: str
    thresholds: dict[str, float]  # per ROI name (stages/decide.py resolve_thresholds)
    path: Path
    manifest: Manifest


@dataclass(frozen=True)
class ModelSet:
    production: LoadedModel
    shadow: LoadedModel | None = None  # scores the same crops; its verdicts never reach the PLC


def input_mismatch(new: Engine, running: Engine, running_name: str) -> str | None:
    """Why `new` cannot score the crops cut for `running` (their size, channels and colour order), as
    "takes … crops but the <running_name> takes …"; None when it can."""
    want, got = tuple(running.input_shape), tuple(new.input_shape)
    if got != want:
        return f"takes {_shape(got)} crops but the {running_name} takes {_shape(want)}"
    if new.manifest.color_order != running.manifest.color_order:
        return f"expects {new.manifest.color_order} crops but the {running_name} takes {running.manifest.color_order}"
    return None


def one_line(text: str) -> str:
    """An error message on one line (engines' and ONNX Runtime's messages may span several)."""
    return " ".join(text.split())


def _shape(shape: tuple[int, ...]) -> str:
    h, w, c = shape
    return f"{w}×{h}×{c}"
