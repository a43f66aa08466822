"""ONNX Runtime engine on a real exported stand-in: outputs, input validation, buffer reuse, `auto` selection.

The explicit TensorRT request must fail here with an EngineError that says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from standin_detector import copy_model, exported_standin
from structlog.testing import capture_logs

from common.errors import ModelError
from engines import Engine, EngineError, InferResult, load_engine
from engines.onnxruntime_engine import OnnxRuntimeEngine
from engines.select import resolve_backend


@pytest.fixture(scope="module")
def model() -> Path:
    return exported_standin(3)


@pytest.fixture(scope="module")
def engine(model: Path) -> OnnxRuntimeEngine:
    e = load_engine(model, backend="onnxruntime", max_batch=6)
    assert isinstance(e, OnnxRuntimeEngine)
    return e


def _images(n: int, seed: int = 0, size: int = 32, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, c), dtype=np.uint8)


def test_engine_interface(engine: OnnxRuntimeEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.backend == "onnxruntime" and engine.max_batch == 6 and engine.input_shape == (32, 32, 3)
    assert engine.manifest.variant == "standin"


@pytest.mark.parametrize("n", [1, 5, 6])
def test_infer_matches_a_plain_session(engine: OnnxRuntimeEngine, model: Path, n: int) -> None:
    images = _images(n, seed=n)
    r = engine.infer(images)
    assert isinstance(r, InferResult)
    assert r.scores.dtype == np.float32 and r.scores.shape == (n,)
    assert r.reconstructions.dtype == np.uint8 and r.reconstructions.shape == (n, 32, 32, 3)
    assert r.maps.dtype == np.float32 and r.maps.shape == (n, 32, 32)
    score, recon, amap = ort.InferenceSession(str(model)).run(None, {"images": images})
    np.testing.assert_allclose(r.scores, score, rtol=1e-5)
    np.testing.assert_array_equal(r.reconstructions, recon)
    np.testing.assert_allclose(r.maps, amap, rtol=1e-5, atol=1e-6)


def test_sharded_batches_match_a_plain_session(model: Path) -> None:
    """Three worker threads: batches of 6 and 7 are cut into three shards, 1 and 5 run whole; every
    row must equal a plain session's, whichever way the call before it ran."""
    engine = load_engine(model, backend="onnxruntime", max_batch=8, threads=3)
    assert isinstance(engine, OnnxRuntimeEngine) and engine.shards == 3
    unsharded = load_engine(model, backend="onnxruntime", max_batch=8, threads=1)
    assert isinstance(unsharded, OnnxRuntimeEngine) and unsharded.shards == 1
    plain = ort.InferenceSession(str(model))
    try:
        for n in (7, 1, 6, 5, 7):
            images = _images(n, seed=10 + n)
            r = engine.infer(images)
            score, recon, amap = plain.run(None, {"images": images})
            np.testing.assert_allclose(r.scores, score, rtol=1e-5)
            np.testing.assert_array_equal(r.reconstructions, recon)
            np.testing.assert_allclose(r.maps, amap, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(unsharded.infer(images).scores, score, rtol=1e-5)
    finally:
        engine.close()
        unsharded.close()
    with pytest.raises(EngineError, match="closed"):
        engine.infer(_images(6))


def test_results_survive_the_next_call(engine: OnnxRuntimeEngine) -> None:
    first = engine.infer(_images(3, seed=1))
    kept = first.scores.copy(), first.reconstructions.copy()
    engine.infer(_images(6, seed=2))
    engine.infer(_images(3, seed=3))
    np.testing.assert_array_equal(first.scores, kept[0])
    np.testing.assert_array_equal(first.reconstructions, kept[1])


def test_non_contiguous_batch_is_accepted(engine: OnnxRuntimeEngine) -> None:
    images = _images(4, seed=4)
    view = images[::2]
    np.testing.assert_allclose(engine.infer(view).scores, engine.infer(np.ascontiguousarray(view)).scores)


@pytest.mark.parametrize(("images", "message"), [
    (_images(2).astype(np.float32), "must be uint8"),
    (_images(2, size=48), "takes N×32×32×3"),
    (_images(2, c=1), "takes N×32×32×3"),
    (_images(1)[0], "add the batch axis"),
    (_images(7), "outside 1..6"),
    (_images(0), "outside 1..6"),
    ([[1, 2, 3]], "numpy array"),
])
def test_rejects_bad_batches(engine: OnnxRuntimeEngine, images: np.ndarray, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        engine.infer(images)


def test_auto_chooses_onnxruntime_here_and_logs_it(model: Path) -> None:
    with capture_logs() as logs:
        e = load_engine(model)
    assert e.backend == "onnxruntime"
    selected = [entry for entry in logs if entry["event"] == "engine_selected"]
    assert len(selected) == 1
    assert selected[0]["backend"] == "onnxruntime" and selected[0]["reason"].startswith("auto:")
    assert "not importable" in selected[0]["reason"]
    e.close()


def test_explicit_tensorrt_request_fails_clearly(model: Path) -> None:
    with pytest.raises(EngineError, match="backend tensorrt requested but tensorrt and pycuda not importable"):
        load_engine(model, backend="tensorrt")
    with pytest.raises(EngineError, match="unknown backend"):
        load_engine(model, backend="openvino")


def test_auto_would_pick_tensorrt_when_usable(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engines.select.tensorrt_available", lambda: (True, "GPU fake (sm 8.7)"))
    assert resolve_backend(model, "auto")[0] == "onnxruntime"        # no engine beside the ONNX file
    local = copy_model(model, tmp_path)
    local.with_suffix(".engine").write_bytes(b"engine")
    assert resolve_backend(local, "auto") == ("tensorrt", "auto: TensorRT importable, GPU fake (sm 8.7)")
    assert resolve_backend(local, "onnxruntime")[0] == "onnxruntime"


def test_engine_path_falls_back_to_its_onnx(model: Path, tmp_path: Path) -> None:
    local = copy_model(model, tmp_path)
    engine_file = local.with_suffix(".engine")
    engine_file.write_bytes(b"a TensorRT engine from elsewhere")
    e = load_engine(engine_file)    # auto, no TensorRT here: the manifest's ONNX file through ONNX Runtime
    assert e.backend == "onnxruntime"


def test_tampered_onnx_is_refused(model: Path, tmp_path: Path) -> None:
    local = copy_model(model, tmp_path)
    local.write_bytes(local.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="does not match its manifest"):
        load_engine(local)


def test_manifest_that_disagrees_with_the_graph_is_refused(model: Path, tmp_path: Path) -> None:
    local = copy_model(model, tmp_path)
    mp = local.with_suffix(".json")
    data = json.loads(mp.read_text())
    data["image_size"] = 64
    data["inputs"][0]["shape"] = [-1, 64, 64, 3]
    mp.write_text(json.dumps(data))
    with pytest.raises(EngineError, match="the manifest says"):
        load_engine(local)


def test_missing_model_and_bad_max_batch(model: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not found"):
        load_engine(tmp_path / "nope.onnx")
    with pytest.raises(EngineError, match="at least 1"):
        load_engine(model, max_batch=0)


def test_closed_engine_says_so(model: Path) -> None:
    e = load_engine(model, backend="onnxruntime", max_batch=2)
    e.close()
    with pytest.raises(EngineError, match="closed"):
        e.infer(_images(1))
