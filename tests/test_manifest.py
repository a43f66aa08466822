"""Manifest: round trip, lookup beside the model, sha256 mismatch, version and schema errors.

No torch: this is what the edge box runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import ModelError
from common.manifest import (
    Manifest,
    TensorRTInfo,
    check_onnx_sha256,
    io_specs,
    manifest_path,
    model_id_for,
    onnx_path,
    read_manifest,
    sha256_file,
    write_manifest,
)


def _manifest(onnx_file: Path, **overrides: object) -> Manifest:
    sha = sha256_file(onnx_file)
    inputs, outputs = io_specs(64, 3)
    fields = dict(model_id=model_id_for("ours-proj", sha), variant="ours-proj", onnx_file=onnx_file.name,
                  onnx_sha256=sha, inputs=inputs, outputs=outputs, image_size=64, channels=3,
                  color_order="BGR", threshold=0.25, lambda_=0.1, metrics={"auroc": 0.93, "nested": {"a": [1, 2]}},
                  producer={"torch": "2.13.0"})
    fields.update(overrides)
    return Manifest(**fields)  # type: ignore[arg-type]


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    p = tmp_path / "model.onnx"
    p.write_bytes(b"not really onnx, but bytes with a hash")
    return p


def test_round_trip_beside_onnx_and_engine(onnx_file: Path) -> None:
    m = _manifest(onnx_file, tensorrt=TensorRTInfo(version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                                                   max_batch=32, opt_batch=8, precision="fp16"))
    written = write_manifest(m, onnx_file)
    assert written == onnx_file.with_suffix(".json")
    for path in (onnx_file, onnx_file.with_suffix(".engine"), written):
        again = read_manifest(path)
        assert again == m
    assert again.input_shape == (64, 64, 3)
    assert again.lambda_ == 0.1 and again.tensorrt is not None and again.tensorrt.precision == "fp16"
    data = json.loads(written.read_text())
    assert data["schema_version"] == 1 and data["inputs"][0] == {"name": "images", "shape": [-1, 64, 64, 3],
                                                                  "dtype": "uint8"}
    assert [o["name"] for o in data["outputs"]] == ["score", "reconstruction", "anomaly_map"]
    assert onnx_path(again, written) == onnx_file.resolve()


def test_model_id_uses_first_12_hex(onnx_file: Path) -> None:
    sha = sha256_file(onnx_file)
    assert model_id_for("egbad", sha) == f"egbad-{sha[:12]}"
    assert len(sha) == 64


def test_sha256_mismatch_is_detected(onnx_file: Path) -> None:
    m = _manifest(onnx_file)
    check_onnx_sha256(m, onnx_file)   # the file it was written for passes
    onnx_file.write_bytes(onnx_file.read_bytes() + b"!")
    with pytest.raises(ModelError, match="does not match its manifest"):
        check_onnx_sha256(m, onnx_file)


def test_missing_manifest_says_how_to_fix(onnx_file: Path) -> None:
    with pytest.raises(ModelError, match="trainer export"):
        read_manifest(onnx_file)
    assert manifest_path(onnx_file) == onnx_file.with_suffix(".json")


def test_schema_version_and_invalid_fields(onnx_file: Path) -> None:
    mp = write_manifest(_manifest(onnx_file), onnx_file)
    data = json.loads(mp.read_text())
    mp.write_text(json.dumps({**data, "schema_version": 2}))
    with pytest.raises(ModelError, match="schema_version 2"):
        read_manifest(onnx_file)
    mp.write_text(json.dumps({**data, "channels": 4}))
    with pytest.raises(ModelError, match="channels"):
        read_manifest(onnx_file)
    mp.write_text("{not json")
    with pytest.raises(ModelError, match="cannot read manifest"):
        read_manifest(onnx_file)
