"""FP16 graph: loads in ONNX Runtime with the graph's I/O unchanged, stays close to FP32; verify and AUROC.

This is the FP16 fidelity check that runs where TensorRT cannot; the FP16-storage emulation and the nodes
kept FP32 are tested on a trained detector in test_verify_fp16.py.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from standin_detector import exported_standin

from common.manifest import read_manifest
from engines.fp16 import fp16_bytes, fp16_path, write_fp16
from engines.onnxruntime_engine import OnnxRuntimeEngine
from engines.verify import load_images, order_flips, verify


@pytest.fixture(scope="module")
def model() -> Path:
    return exported_standin(3)


def test_fp16_graph_keeps_io_types_and_halves_weights(model: Path, tmp_path: Path) -> None:
    out = write_fp16(model, tmp_path / "m.fp16.onnx")
    g = onnx.load(str(out))
    io = {v.name: v.type.tensor_type.elem_type for v in list(g.graph.input) + list(g.graph.output)}
    assert io == {"images": onnx.TensorProto.UINT8, "score": onnx.TensorProto.FLOAT,
                  "reconstruction": onnx.TensorProto.UINT8, "anomaly_map": onnx.TensorProto.FLOAT}
    kinds = {i.data_type for i in g.graph.initializer if len(i.dims) > 1}
    assert kinds == {onnx.TensorProto.FLOAT16}
    assert fp16_path(model).name == "model.fp16.onnx"


def test_fp16_graph_runs_close_to_fp32(model: Path) -> None:
    manifest = read_manifest(model)
    fp32 = OnnxRuntimeEngine(model, manifest, 8)
    fp16 = OnnxRuntimeEngine(fp16_bytes(model), manifest, 8)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    a, b = fp32.infer(images), fp16.infer(images)
    assert b.scores.dtype == np.float32 and b.reconstructions.dtype == np.uint8
    rel = np.abs(a.scores - b.scores) / np.abs(a.scores)
    assert rel.max() < 5e-3
    assert np.abs(a.scores - b.scores).max() > 0          # it really is a different precision
    assert np.abs(a.reconstructions.astype(int) - b.reconstructions).max() <= 2
    np.testing.assert_allclose(a.maps, b.maps, atol=5e-3)


def _mvtec(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for cls, level in (("good", 60), ("scratch", 200)):
        d = root / "test" / cls
        d.mkdir(parents=True)
        for i in range(n):
            img = np.full((40, 40, 3), level, np.uint8)
            img[rng.integers(0, 30):, :8] = rng.integers(0, 256)
            cv2.imwrite(str(d / f"{i:03d}.png"), img)
    return root


def test_mvtec_folder_is_read_with_labels(tmp_path: Path) -> None:
    images, labels = load_images(_mvtec(tmp_path), 32, 3)
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    assert labels is not None and labels.tolist() == [0] * 6 + [1] * 6


def test_verify_fp16_graph_with_labels(model: Path, tmp_path: Path) -> None:
    [result] = verify(model, _mvtec(tmp_path))
    assert result.candidate == "onnxruntime fp16 graph" and result.images == 12
    assert result.auroc_reference is not None and result.auroc_delta is not None
    assert abs(result.auroc_delta) <= 0.002 and result.ok
    assert 0 < result.score_max_abs_dev < 1e-2
    assert 0 <= result.order_flips <= 2      # of 66 pairs
    emulated = result.emulated               # the FP16-storage emulation beside it, judged too
    assert emulated is not None and emulated.ok and emulated.images == 12
    assert result.threshold == 0.42 and result.verdict_flips is not None
    assert result.fp16["rounded_values"] > 0 and result.fp16["overflow"] == []


def test_order_flips() -> None:
    ref = np.array([0.1, 0.2, 0.3, 0.4])
    assert order_flips(ref, ref + 1) == 0
    assert order_flips(ref, np.array([0.2, 0.1, 0.3, 0.4])) == 1
    assert order_flips(ref, ref[::-1].copy()) == 6


def test_verify_fails_beyond_tolerance(model: Path) -> None:
    [result] = verify(model, None, limit=8, score_tol=1e-9)
    assert not result.ok and result.auroc_reference is None
    assert result.score_scale_source.startswith("sd of all 8 scores")
