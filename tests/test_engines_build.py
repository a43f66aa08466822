"""`engines build` on the fakes of tests/trt_fakes.py (documented TensorRT behaviour): the TensorRT 10 vs 11
plans, the profile (opt batch 8 by default), the timing cache (named per TensorRT version and GPU, refused
caches replaced by a fresh one), and the engine + manifest pair written so that a failure never leaves a
pair the loader would accept half-made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx
import pytest
from standin_detector import copy_model, exported_standin
from trt_fakes import FakeCuda, fake_builder_trt, fake_runtime

from common.manifest import TensorRTInfo, read_manifest, sha256_file
from engines.build import build_engine, configure, network_flags, plan_build
from engines.errors import EngineError
from engines.tensorrt_engine import TensorRTEngine, tensorrt_available

TRT_OK, _ = tensorrt_available()
GIB = 1 << 30


def _use(monkeypatch: pytest.MonkeyPatch, trt: Any, cuda: FakeCuda | None = None) -> FakeCuda:
    cuda = cuda or FakeCuda(name="Jetson AGX Orin", sm_count=16, total_memory=64 * GIB)
    monkeypatch.setattr("engines.build.import_runtime", lambda: (trt, cuda))
    return cuda


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return copy_model(exported_standin(3), tmp_path / "models")


def _caches(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.cache"))


# ---------------------------------------------------------------- plans and configuration

def test_plans() -> None:
    p10 = plan_build("10.3.0", fp16=True)
    # FP16 on TensorRT 10 too: the verified FP16 graph (FP32 reductions), strongly typed, no weak FP16 flag
    assert (p10.fp16_builder_flag, p10.fp16_graph, p10.strongly_typed, p10.precision) == (False, True, True, "fp16")
    p11 = plan_build("11.0.1", fp16=True)
    assert (p11.fp16_builder_flag, p11.fp16_graph, p11.strongly_typed, p11.precision) == (False, True, True, "fp16")
    assert not plan_build("10.3.0", fp16=False).fp16_builder_flag
    p11_32 = plan_build("11.2.0", fp16=False)
    assert (p11_32.fp16_graph, p11_32.strongly_typed, p11_32.precision) == (False, True, "fp32")
    with pytest.raises(EngineError, match="too old"):
        plan_build("8.6.1", fp16=True)


def test_configure_trt10_fp16_strongly_typed_profile_and_cache() -> None:
    trt = fake_builder_trt("10.3.0")
    builder = trt.Builder(None)
    config = builder.create_builder_config()
    configure(trt, builder, config, plan_build("10.3.0", True), (32, 32, 3), 16, 4, b"")
    assert config.flags == []          # strongly typed: the graph's own types, no BuilderFlag.FP16
    assert ("set_shape", "images", (1, 32, 32, 3), (4, 32, 32, 3), (16, 32, 32, 3)) in trt.log
    assert len(config.profiles) == 1 and config.get_timing_cache() is not None
    assert network_flags(trt, plan_build("10.3.0", True)) == 1 << 1
    assert network_flags(trt, plan_build("10.3.0", False)) == 0


def test_configure_trt11_never_touches_the_removed_fp16_flag() -> None:
    trt = fake_builder_trt("11.0.0", with_fp16_flag=False)     # BuilderFlag.FP16 does not exist in TensorRT 11
    builder = trt.Builder(None)
    config = builder.create_builder_config()
    configure(trt, builder, config, plan_build("11.0.0", True), (32, 32, 3), 8, 8, b"")
    assert config.flags == []
    assert network_flags(trt, plan_build("11.0.0", True)) == 1 << 1


@pytest.mark.parametrize(("version", "fp16_graph"), [("10.3.0", True), ("11.1.0", True)])
def test_build_engine_on_fakes(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch, version: str,
                               fp16_graph: bool) -> None:
    trt = fake_builder_trt(version, with_fp16_flag=version.startswith("10"))
    _use(monkeypatch, trt)
    out = tmp_path / "box" / "model.engine"
    m = build_engine(model, out, max_batch=8, opt_batch=2, fp16=True)
    assert out.read_bytes() == b"SERIALIZED-ENGINE"
    saved = read_manifest(out)
    assert saved == m and saved.onnx_file == "../models/model.onnx"
    assert saved.tensorrt == TensorRTInfo(version=version, gpu_name="Jetson AGX Orin", compute_capability="8.7",
                                          max_batch=8, opt_batch=2, precision="fp16",
                                          engine_sha256=sha256_file(out), sm_count=16, total_memory=64 * GIB)
    [parsed] = [entry[1] for entry in trt.log if entry[0] == "parse"]
    graph = onnx.load_from_string(parsed)
    halves = any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)
    assert halves == fp16_graph and (parsed == model.read_bytes()) == (not fp16_graph)
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "model.engine", "model.json", f"model.timing-trt{version}-jetson-agx-orin-sm87-16sm.cache"]


@pytest.mark.parametrize(("max_batch", "opt"), [(32, 8), (8, 8), (4, 4), (1, 1)])
def test_default_opt_batch_is_what_the_daemon_sends(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch,
                                                    max_batch: int, opt: int) -> None:
    """The inspector sends 1-8 crops per call: TensorRT tunes for 8 (or less when the maximum is smaller)."""
    trt = fake_builder_trt()
    _use(monkeypatch, trt)
    m = build_engine(model, tmp_path / "m.engine", max_batch=max_batch)
    assert m.tensorrt is not None and m.tensorrt.opt_batch == opt
    [shape] = [e for e in trt.log if e[0] == "set_shape"]
    assert shape[3][0] == opt and shape[4][0] == max_batch


def test_build_refuses_bad_requests(tmp_path: Path, model: Path) -> None:
    with pytest.raises(EngineError, match="opt-batch 64"):
        build_engine(model, tmp_path / "m.engine", max_batch=8, opt_batch=64)
    with pytest.raises(EngineError, match="overwrite the model"):
        build_engine(model, model, max_batch=8)
    if not TRT_OK:
        with pytest.raises(EngineError, match="not importable"):
            build_engine(model, tmp_path / "m.engine")


# ---------------------------------------------------------------- the timing cache

def test_a_cache_from_another_gpu_is_replaced_by_a_fresh_one(tmp_path: Path, model: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """set_timing_cache returns False for a cache of another device/version, and get_timing_cache then gives
    None: the build must not end in None.serialize() with the engine written and its manifest not."""
    out = tmp_path / "box" / "model.engine"
    trt = fake_builder_trt("10.3.0", device="Orin-8.7-16")
    _use(monkeypatch, trt)
    build_engine(model, out, max_batch=4)
    [cache_file] = _caches(out.parent)
    cache_file.write_bytes(b"TC|10.3.0/AGX-elsewhere|7")          # left by another box's image, same name
    trt = fake_builder_trt("10.3.0", device="Orin-8.7-16")
    _use(monkeypatch, trt)
    m = build_engine(model, out, max_batch=4)
    assert ("set_timing_cache", "10.3.0/AGX-elsewhere", False) in trt.log    # refused ...
    assert ("create_timing_cache", b"") in trt.log                              # ... so a fresh one is used
    assert m.tensorrt is not None and m.tensorrt.engine_sha256 == sha256_file(out)
    assert read_manifest(out) == m
    assert cache_file.read_bytes() == b"TC|10.3.0/Orin-8.7-16|1"   # this GPU's cache replaced the foreign one
    trt = fake_builder_trt("10.3.0", device="Orin-8.7-16")             # the next rebuild uses it
    _use(monkeypatch, trt)
    build_engine(model, out, max_batch=4)
    assert ("create_timing_cache", b"") not in trt.log and cache_file.read_bytes() == b"TC|10.3.0/Orin-8.7-16|2"
    assert not [p for p in out.parent.iterdir() if ".tmp" in p.name]


def test_an_unreadable_cache_is_replaced_too(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model.engine"
    trt = fake_builder_trt()
    _use(monkeypatch, trt)
    build_engine(model, out, max_batch=4)
    [cache_file] = _caches(tmp_path)
    cache_file.write_bytes(b"\x00garbage")                          # create_timing_cache gives None for it
    trt = fake_builder_trt()
    _use(monkeypatch, trt)
    build_engine(model, out, max_batch=4)
    assert cache_file.read_bytes().startswith(b"TC|10.3.0/")


def test_the_cache_is_named_per_tensorrt_version_and_gpu(tmp_path: Path, model: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model.engine"
    _use(monkeypatch, fake_builder_trt("10.3.0"), FakeCuda(name="Orin", sm_count=16, total_memory=64 * GIB))
    build_engine(model, out, max_batch=4)
    _use(monkeypatch, fake_builder_trt("10.3.0"), FakeCuda(name="Orin", sm_count=8, total_memory=8 * GIB))
    build_engine(model, out, max_batch=4)
    _use(monkeypatch, fake_builder_trt("10.7.0"), FakeCuda(name="NVIDIA RTX A2000", cc=(8, 6), sm_count=26))
    build_engine(model, out, max_batch=4)
    assert [p.name for p in _caches(tmp_path)] == ["model.timing-trt10.3.0-orin-sm87-16sm.cache",
                                                   "model.timing-trt10.3.0-orin-sm87-8sm.cache",
                                                   "model.timing-trt10.7.0-nvidia-rtx-a2000-sm86-26sm.cache"]


# ---------------------------------------------------------------- engine + manifest, never half a pair

def test_a_failed_build_leaves_the_previous_pair_untouched(tmp_path: Path, model: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model.engine"
    _use(monkeypatch, fake_builder_trt())
    build_engine(model, out, max_batch=4)
    before = (out.read_bytes(), out.with_suffix(".json").read_text())
    _use(monkeypatch, fake_builder_trt(build_fails=True))
    with pytest.raises(EngineError, match="could not build"):
        build_engine(model, out, max_batch=8)
    assert (out.read_bytes(), out.with_suffix(".json").read_text()) == before
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_a_crash_between_engine_and_manifest_is_refused_at_load(tmp_path: Path, model: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine and manifest go to temporary names, then the engine is renamed, then the manifest: stopped
    between the two renames, the new engine sits beside the old manifest, whose sha256 refuses it."""
    out = tmp_path / "model.engine"
    cuda = _use(monkeypatch, fake_builder_trt(), FakeCuda())
    build_engine(model, out, max_batch=4)
    trt = fake_builder_trt()
    original_build = trt.Builder(None).build_serialized_network
    trt.Builder(None).build_serialized_network = lambda n, c: (original_build(n, c), b"ENGINE")[1]
    _use(monkeypatch, trt, cuda)
    real_replace = os.replace

    def crash_on_manifest(src: Any, dst: Any) -> None:
        if str(dst).endswith(".json"):
            raise OSError("power lost")
        real_replace(src, dst)

    monkeypatch.setattr("engines.build.os.replace", crash_on_manifest)
    with pytest.raises(OSError, match="power lost"):
        build_engine(model, out, max_batch=8)
    monkeypatch.setattr("engines.build.os.replace", real_replace)
    assert out.read_bytes() == b"ENGINE" and read_manifest(out).tensorrt.max_batch == 4  # type: ignore[union-attr]
    monkeypatch.setattr("engines.tensorrt_engine.import_runtime", lambda: (fake_runtime(cuda), cuda))
    with pytest.raises(EngineError, match="does not match its manifest"):
        TensorRTEngine(out, read_manifest(out))
    assert cuda.refcount == 0
