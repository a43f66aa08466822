"""The model manifest MODEL.json beside MODEL.onnx / MODEL.engine (schema_version 1).

Written by `trainer export` and `engines build`, read by engines and the inspector; no torch here.
It also holds the tensor contract: names, shapes and dtypes of the graph's input and outputs, from which
both engines allocate their buffers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.errors import ModelError

SCHEMA_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAMES = ("score", "reconstruction", "anomaly_map")


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int]              # -1 for the batch dimension N
    dtype: Literal["uint8", "float32"]


class TensorRTInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str                  # tensorrt.__version__ that built the engine
    gpu_name: str
    compute_capability: str       # "8.7"
    max_batch: int = Field(ge=1)
    opt_batch: int = Field(ge=1)
    precision: Literal["fp32", "fp16"]
    engine_sha256: str | None = None   # addition to the contract: detects an engine swapped under its manifest
    sm_count: int | None = None        # multiprocessors of the GPU that built it (None: older manifests)
    total_memory: int | None = None    # bytes of GPU memory there: with sm_count, tells Jetson Orin modules apart


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION
    model_id: str
    variant: str
    onnx_file: str                # relative to the manifest's folder
    onnx_sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    image_size: int = Field(ge=1)
    channels: Literal[1, 3]
    color_order: str              # "BGR" for colour, "GRAY" for one channel
    threshold: float | None = None
    lambda_: float
    metrics: dict[str, Any] = Field(default_factory=dict)
    producer: dict[str, str] = Field(default_factory=dict)
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    tensorrt: TensorRTInfo | None = None
    # The held-out normal images' scores, sorted, 6 significant digits (`trainer fit`/`evaluate` -> export):
    # the reference the daemon's drift watch compares production scores with (inspector/drift.py).
    # Empty: a model exported before this field (or trained without held-out images): no drift reference.
    normal_scores: list[float] = Field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """H, W, C of one image."""
        return self.image_size, self.image_size, self.channels

    def tensor_shapes(self, batch: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Shape at batch size `batch` and dtype of the input and every output: what engines allocate."""
        return {t.name: (tuple(batch if d == -1 else d for d in t.shape), t.dtype)
                for t in self.inputs + self.outputs}


def io_specs(size: int, channels: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The contract's input and outputs for a size×size×channels model (docs/architecture.md)."""
    inputs = [TensorSpec(name=INPUT_NAME, shape=[-1, size, size, channels], dtype="uint8")]
    outputs = [TensorSpec(name="score", shape=[-1], dtype="float32"),
               TensorSpec(name="reconstruction", shape=[-1, size, size, channels], dtype="uint8"),
               TensorSpec(name="anomaly_map", shape=[-1, size, size], dtype="float32")]
    return inputs, outputs


def reference_scores(scores: Any) -> list[float]:
    """Scores as the manifest's `normal_scores` holds them: the finite ones, sorted, 6 significant digits."""
    values = sorted(float(v) for v in scores if math.isfinite(float(v)))
    return [float(f"{v:.6g}") for v in values]


def model_id_for(variant: str, onnx_sha256: str) -> str:
    return f"{variant}-{onnx_sha256[:12]}"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_path(model_path: str | Path) -> Path:
    """X.json for X.onnx, X.engine or X.json itself."""
    p = Path(model_path)
    return p if p.suffix == ".json" else p.with_suffix(".json")


def read_manifest(path: str | Path) -> Manifest:
    """The manifest beside a model file (or at a .json path); ModelError when missing or invalid."""
    mp = manifest_path(path)
    if not mp.is_file():
        raise ModelError(f"no manifest {mp} beside {Path(path).name}; export the model with "
                          "`trainer export RUN_DIR --out MODEL.onnx`, which writes MODEL.json beside it")
    try:
        data = json.loads(mp.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read manifest {mp}: {exc}") from None
    if isinstance(data, dict) and data.get("schema_version") not in (None, SCHEMA_VERSION):
        raise ModelError(f"{mp} has schema_version {data.get('schema_version')}, this code reads "
                          f"{SCHEMA_VERSION}; re-export the model with this version's `trainer export`")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(root)"
        raise ModelError(f"invalid manifest {mp}: {where}: {first['msg']} "
                          f"({exc.error_count()} problem(s)); re-export the model") from None


def write_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write X.json beside the model path (atomically: temp file + rename); returns the .json path."""
    mp = manifest_path(path)
    mp.parent.mkdir(parents=True, exist_ok=True)
    tmp = mp.with_name(mp.name + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(tmp, mp)
    return mp


def onnx_path(manifest: Manifest, manifest_file: str | Path) -> Path:
    """The ONNX file a manifest describes (onnx_file is relative to the manifest's folder)."""
    return (manifest_path(manifest_file).parent / manifest.onnx_file).resolve()


def check_onnx_sha256(manifest: Manifest, onnx_file: str | Path) -> None:
    """ModelError when the ONNX file is not the one the manifest was written for."""
    p = Path(onnx_file)
    if not p.is_file():
        raise ModelError(f"{p} not found (named by its manifest); copy MODEL.onnx and MODEL.json together")
    actual = sha256_file(p)
    if actual != manifest.onnx_sha256:
        raise ModelError(f"{p.name} does not match its manifest: sha256 {actual[:12]}… but the manifest "
                          f"says {manifest.onnx_sha256[:12]}…; copy MODEL.onnx and MODEL.json from the "
                          "same `trainer export`, or re-export")
