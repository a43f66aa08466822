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
