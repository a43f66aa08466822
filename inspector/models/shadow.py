"""Open the `[shadow] model` at start-up: a candidate that scores the production model's crops and decides
nothing (docs/lifecycle.md "Shadow").

Checked before anything is bound: the file opens as an engine (manifest and sha256 as for production),
takes the same input (size, channels and colour order: the crops are cut once, for the production model), and its
manifest carries a threshold. The shadow decides against its own manifest's threshold, for every ROI:
the production model's `[decision]` overrides do not apply to it.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from engines import Engine
from inspector.config import InspectorConfig
from inspector.errors import InspectorError
from inspector.models.active import LoadedModel, input_mismatch, one_line
from inspector.stages.scoring import open_engine

log = structlog.get_logger("inspector.shadow")

FIX = "or remove `model` from [shadow] (replay: drop --shadow) to run without a shadow"


def load_shadow(cfg: InspectorConfig, production: Engine) -> LoadedModel | None:
    """The shadow model named by cfg.shadow.model, checked against the production engine; None when unset.
    InspectorError (one line, naming `[shadow] model` and the fix) when it cannot shadow this station."""
    path = cfg.shadow.model
    if path is None:
        return None
    if not path.exists():
        raise InspectorError(f"[shadow] model: {path} does not exist; fix the path, {FIX}")
    try:
        engine = open_engine(cfg.engine, path)
    except InspectorError as e:
        raise InspectorError(f"[shadow] model: {one_line(str(e))}; fix the model, {FIX}") from None
    try:
        model = _checked(cfg, engine, production, path)
    except BaseException:
        engine.close()
        raise
    log.info("shadow model loaded: it scores every part, its verdicts go to the shadow topic and the journal only",
             shadow_model_id=model.model_id, path=str(path), thresholds=model.thresholds)
    return model


def _checked(cfg: InspectorConfig, engine: Engine, production: Engine, path: Path) -> LoadedModel:
    mismatch = input_mismatch(engine, production, "production model")
    if mismatch is not None:
        raise InspectorError(f"[shadow] model: {path} {mismatch}; a shadow must take the same crops (size, channels, "
                             f"colour order): export the candidate to match, {FIX}")
    threshold = engine.manifest.threshold
    if threshold is None:
        raise InspectorError(f"[shadow] model: {path} has no threshold in its manifest (the shadow decides with "
                             f"its own; [decision] does not apply to it): export it with a threshold, {FIX}")
    return LoadedModel(engine, engine.manifest.model_id, {n: float(threshold) for n in cfg.roi_names}, path,
                       engine.manifest)

