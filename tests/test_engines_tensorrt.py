"""TensorRT backend and `engines build`: real runs where TensorRT + pycuda + a GPU exist (skipped here),
and, everywhere, the version/GPU checks, the TRT 10 vs 11 build plans and the call sequence on fakes.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from standin_detector import copy_model, exported_standin

from common.manifest import TensorRTInfo, read_manifest, sha256_file, write_manifest
from engines.build import build_engine, configure, network_flags, plan_build, timing_cache_path
from engines.errors import EngineError
from engines.tensorrt_engine import TensorRTEngine, check_compatibility, tensorrt_available

TRT_OK, TRT_WHY = tensorrt_available()
needs_trt = pytest.mark.skipif(not TRT_OK, reason=f"TensorRT backend not runnable here: {TRT_WHY}")

INFO = TensorRTInfo(version="10.3.0", gpu_name="Orin", compute_capability="8.7", max_batch=8, opt_batch=8,
                    precision="fp16")


# ---------------------------------------------------------------- real TensorRT (GPU boxes only)

@needs_trt
@pytest.mark.gpu
def test_real_build_load_and_match_onnxruntime(tmp_path: Path) -> None:
    from engines import load_engine

    model = copy_model(exported_standin(3), tmp_path)
    manifest = build_engine(model, model.with_suffix(".engine"), max_batch=8, opt_batch=4, fp16=True)
    assert manifest.tensorrt is not None and timing_cache_path(model.with_suffix(".engine")).is_file()
    trt_engine = load_engine(model.with_suffix(".engine"), backend="tensorrt")
    ort_engine = load_engine(model, backend="onnxruntime", max_batch=8)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    a, b = trt_engine.infer(images), ort_engine.infer(images)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-2)
    assert np.abs(a.reconstructions.astype(int) - b.reconstructions).max() <= 3
    trt_engine.close()


@needs_trt
@pytest.mark.gpu
def test_real_engine_from_another_version_is_refused(tmp_path: Path) -> None:
    model = copy_model(exported_standin(3), tmp_path)
    engine_file = model.with_suffix(".engine")
    m = build_engine(model, engine_file, max_batch=4)
    assert m.tensorrt is not None
    write_manifest(m.model_copy(update={"tensorrt": m.tensorrt.model_copy(update={"version": "9.9.9"})}),
                   engine_file)
    with pytest.raises(EngineError, match="rebuild it on this machine"):
        TensorRTEngine(engine_file, read_manifest(engine_file))


# ---------------------------------------------------------------- compatibility check (pure)

def test_matching_engine_passes() -> None:
    check_compatibility(Path("m.engine"), INFO, "10.3.0", "Orin", "8.7")


@pytest.mark.parametrize(("version", "gpu", "cc", "what"), [
    ("10.7.0", "Orin", "8.7", "TensorRT 10.3.0 (here 10.7.0)"),
    ("10.3.0", "NVIDIA H200", "9.0", "GPU 'Orin' (here 'NVIDIA H200')"),
    ("10.3.0", "Orin", "8.6", "compute capability 8.7 (here 8.6)"),
])
def test_mismatched_engine_is_refused_with_rebuild_command(version: str, gpu: str, cc: str, what: str) -> None:
    with pytest.raises(EngineError) as err:
        check_compatibility(Path("/models/m.engine"), INFO, version, gpu, cc)
    msg = str(err.value)
    assert what in msg and "not portable" in msg
    assert "`engines build m.onnx --out m.engine --max-batch 8 --opt-batch 8 --fp16`" in msg


def test_engine_without_tensorrt_section_is_refused() -> None:
    with pytest.raises(EngineError, match="no tensorrt section"):
        check_compatibility(Path("m.engine"), None, "10.3.0", "Orin", "8.7")


# ---------------------------------------------------------------- build plans for TensorRT 10 and 11

def test_plans() -> None:
    p10 = plan_build("10.3.0", fp16=True)
    assert (p10.fp16_builder_flag, p10.fp16_graph, p10.strongly_typed, p10.precision) == (True, False, False, "fp16")
    p11 = plan_build("11.0.1", fp16=True)
    assert (p11.fp16_builder_flag, p11.fp16_graph, p11.strongly_typed, p11.precision) == (False, True, True, "fp16")
    assert not plan_build("10.3.0", fp16=False).fp16_builder_flag
    p11_32 = plan_build("11.2.0", fp16=False)
    assert (p11_32.fp16_graph, p11_32.strongly_typed, p11_32.precision) == (False, True, "fp32")
    with pytest.raises(EngineError, match="too old"):
        plan_build("8.6.1", fp16=True)


class _Recorder:
    """Records every method call as (name, args, kwargs); returns what `returns` maps the name to."""

    def __init__(self, log: list[tuple[str, tuple[Any, ...], dict[str, Any]]], returns: dict[str, Any]) -> None:
        self._log, self._returns = log, returns

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self._log.append((name, args, kwargs))
            value = self._returns.get(name)
            return value(*args) if callable(value) else value
        return call


def _fake_trt(version: str, with_fp16_flag: bool, log: list[Any]) -> SimpleNamespace:
    builder_flags = SimpleNamespace(FP16="FLAG_FP16") if with_fp16_flag else SimpleNamespace()
    profile = _Recorder(log, {})
    config_returns: dict[str, Any] = {"create_timing_cache": lambda data: ("cache", data),
                                      "get_timing_cache": lambda: SimpleNamespace(serialize=lambda: b"CACHE")}
    config = _Recorder(log, config_returns)

    def create_network(flags: int) -> str:
        log.append(("create_network", (flags,), {}))
        return "network"

    class Parser:
        def __init__(self, network: str, logger: Any) -> None:
            self.num_errors = 0

        def parse(self, data: bytes) -> bool:
            log.append(("parse", (data,), {}))
            return True

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    builder = SimpleNamespace(create_network=create_network, create_builder_config=lambda: config,
                              create_optimization_profile=lambda: profile,
                              build_serialized_network=lambda n, c: b"SERIALIZED-ENGINE")
    return SimpleNamespace(__version__=version, BuilderFlag=builder_flags,
                           NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1),
                           Logger=Logger, Builder=lambda logger: builder, OnnxParser=Parser)


def test_configure_trt10_fp16_sets_flag_profile_and_cache() -> None:
    log: list[Any] = []
    trt = _fake_trt("10.3.0", True, log)
    builder = trt.Builder(None)
    config = builder.create_builder_config()
    configure(trt, builder, config, plan_build("10.3.0", True), (32, 32, 3), 16, 4, b"OLD")
    calls = {name: (args, kwargs) for name, args, kwargs in log}
    assert calls["set_flag"] == (("FLAG_FP16",), {})
    assert calls["set_shape"] == (("images", (1, 32, 32, 3), (4, 32, 32, 3), (16, 32, 32, 3)), {})
    assert "add_optimization_profile" in calls
    assert calls["create_timing_cache"] == ((b"OLD",), {})
    assert calls["set_timing_cache"] == ((("cache", b"OLD"),), {"ignore_mismatch": False})
    assert network_flags(trt, plan_build("10.3.0", True)) == 0


def test_configure_trt11_never_touches_the_removed_fp16_flag() -> None:
    log: list[Any] = []
    trt = _fake_trt("11.0.0", False, log)          # BuilderFlag.FP16 does not exist, as in TensorRT 11
    builder = trt.Builder(None)
    configure(trt, builder, builder.create_builder_config(), plan_build("11.0.0", True), (32, 32, 3), 8, 8, b"")
    assert "set_flag" not in [name for name, _, _ in log]
    assert network_flags(trt, plan_build("11.0.0", True)) == 1 << 1


@pytest.mark.parametrize(("version", "fp16_graph"), [("10.3.0", False), ("11.1.0", True)])
def test_build_engine_on_fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str,
                               fp16_graph: bool) -> None:
    log: list[Any] = []
    trt = _fake_trt(version, version.startswith("10"), log)
    monkeypatch.setattr("engines.build.import_runtime", lambda: (trt, None))
    monkeypatch.setattr("engines.build.gpu_identity", lambda cuda: ("Jetson AGX Orin", "8.7"))
    model = copy_model(exported_standin(3), tmp_path / "models")
    out = tmp_path / "box" / "model.engine"
    m = build_engine(model, out, max_batch=8, opt_batch=2, fp16=True)
    assert out.read_bytes() == b"SERIALIZED-ENGINE" and timing_cache_path(out).read_bytes() == b"CACHE"
    saved = read_manifest(out)
    assert saved == m and saved.onnx_file == "../models/model.onnx"
    assert saved.tensorrt == TensorRTInfo(version=version, gpu_name="Jetson AGX Orin", compute_capability="8.7",
                                          max_batch=8, opt_batch=2, precision="fp16",
                                          engine_sha256=sha256_file(out))
    [parsed] = [args[0] for name, args, _ in log if name == "parse"]
    graph = onnx.load_from_string(parsed)
    halves = any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)
    assert halves == fp16_graph and (parsed == model.read_bytes()) == (not fp16_graph)


def test_build_refuses_bad_requests(tmp_path: Path) -> None:
    model = copy_model(exported_standin(3), tmp_path)
    with pytest.raises(EngineError, match="opt-batch 64"):
        build_engine(model, tmp_path / "m.engine", max_batch=8, opt_batch=64)
    with pytest.raises(EngineError, match="overwrite the model"):
        build_engine(model, model, max_batch=8)
    if not TRT_OK:
        with pytest.raises(EngineError, match="not importable"):
            build_engine(model, tmp_path / "m.engine")


# ---------------------------------------------------------------- the runtime's call sequence on fakes

class _DeviceMemory:
    registry: dict[int, np.ndarray] = {}

    def __init__(self, nbytes: int) -> None:
        self.buf = np.zeros(nbytes, np.uint8)
        self.freed = False
        _DeviceMemory.registry[id(self)] = self.buf

    def __int__(self) -> int:
        return id(self)

    def free(self) -> None:
        self.freed = True


class _FakeContext:
    def __init__(self, log: list[Any]) -> None:
        self.log, self.addr, self.n = log, {}, 0

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addr[name] = ptr

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.log.append(("set_input_shape", name, shape))
        self.n = shape[0]
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.log.append(("execute_async_v3", stream_handle))
        n, mem = self.n, _DeviceMemory.registry
        x = mem[self.addr["images"]][: n * 32 * 32 * 3].reshape(n, 32, 32, 3)
        mem[self.addr["score"]][: n * 4] = (x.reshape(n, -1).mean(1) / 255).astype(np.float32).view(np.uint8)
        mem[self.addr["reconstruction"]][: x.size] = (255 - x).ravel()
        mem[self.addr["anomaly_map"]][: n * 32 * 32 * 4] = x.mean(3, dtype=np.float32).ravel().view(np.uint8)
        return True


def _fake_runtime(log: list[Any]) -> tuple[SimpleNamespace, SimpleNamespace]:
    names = ["images", "score", "reconstruction", "anomaly_map"]
    dtypes = {"images": np.uint8, "score": np.float32, "reconstruction": np.uint8, "anomaly_map": np.float32}
    engine = SimpleNamespace(
        num_io_tensors=4, get_tensor_name=lambda i: names[i], get_tensor_dtype=lambda n: dtypes[n],
        get_tensor_profile_shape=lambda name, p: ((1, 32, 32, 3), (8, 32, 32, 3), (8, 32, 32, 3)),
        create_execution_context=lambda: _FakeContext(log))
    runtime = SimpleNamespace(deserialize_cuda_engine=lambda data: engine if data == b"ENGINE" else None)
    trt = SimpleNamespace(__version__="10.3.0", Logger=lambda severity=None: None, Runtime=lambda logger: runtime,
                          nptype=lambda dt: dt)
    trt.Logger.WARNING = 2  # type: ignore[attr-defined]
    ctx = SimpleNamespace(push=lambda: log.append("push"), pop=lambda: log.append("pop"),
                          detach=lambda: log.append("detach"))

    def mem_alloc(nbytes: int) -> _DeviceMemory:
        log.append(("mem_alloc", nbytes))
        return _DeviceMemory(nbytes)

    def htod(dev: _DeviceMemory, host: np.ndarray, stream: Any) -> None:
        dev.buf[: host.nbytes] = host.reshape(-1).view(np.uint8)

    def dtoh(host: np.ndarray, dev: _DeviceMemory, stream: Any) -> None:
        host.reshape(-1).view(np.uint8)[:] = dev.buf[: host.nbytes]

    device = SimpleNamespace(name=lambda: "Orin", compute_capability=lambda: (8, 7),
                             retain_primary_context=lambda: ctx)
    cuda = SimpleNamespace(init=lambda: None, Device=lambda i: device, pagelocked_empty=np.empty,
                           mem_alloc=mem_alloc, Stream=lambda: SimpleNamespace(handle=77, synchronize=lambda: None),
                           memcpy_htod_async=htod, memcpy_dtoh_async=dtoh)
    cuda.Device.count = lambda: 1  # type: ignore[attr-defined]
    return trt, cuda


@pytest.fixture
def fake_engine_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Any]]:
    log: list[Any] = []
    monkeypatch.setattr("engines.tensorrt_engine.import_runtime", lambda: _fake_runtime(log))
    model = copy_model(exported_standin(3), tmp_path)
    engine_file = model.with_suffix(".engine")
    engine_file.write_bytes(b"ENGINE")
    m = read_manifest(model)
    write_manifest(m.model_copy(update={"tensorrt": INFO.model_copy(
        update={"engine_sha256": sha256_file(engine_file)})}), engine_file)
    return engine_file, log


def test_runtime_allocates_once_and_sets_shapes_only_on_change(fake_engine_file: tuple[Path, list[Any]]) -> None:
    engine_file, log = fake_engine_file
    engine = TensorRTEngine(engine_file, read_manifest(engine_file))
    assert engine.max_batch == 8 and engine.backend == "tensorrt"
    allocs = [entry[1] for entry in log if entry[0] == "mem_alloc"]
    assert sorted(allocs) == sorted([8 * 32 * 32 * 3, 8 * 4, 8 * 32 * 32 * 3, 8 * 32 * 32 * 4])
    rng = np.random.default_rng(0)
    for n in (3, 3, 5):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        r = engine.infer(images)
        np.testing.assert_allclose(r.scores, images.reshape(n, -1).mean(1) / 255, rtol=1e-6)
        np.testing.assert_array_equal(r.reconstructions, 255 - images)
        np.testing.assert_allclose(r.maps, images.mean(3), rtol=1e-6)
    assert [e for e in log if e[0] == "set_input_shape"] == [("set_input_shape", "images", (3, 32, 32, 3)),
                                                          ("set_input_shape", "images", (5, 32, 32, 3))]
    assert [e for e in log if e[0] == "execute_async_v3"] == [("execute_async_v3", 77)] * 3
    assert len([e for e in log if e[0] == "mem_alloc"]) == 4          # nothing allocated per call
    assert log.count("push") == log.count("pop")
    with pytest.raises(EngineError, match="outside 1..8"):
        engine.infer(np.zeros((9, 32, 32, 3), np.uint8))
    engine.close()
    assert log[-1] == "detach"


def test_runtime_refusals(fake_engine_file: tuple[Path, list[Any]]) -> None:
    engine_file, _ = fake_engine_file
    m = read_manifest(engine_file)
    with pytest.raises(EngineError, match="outside the engine's profile 1..8"):
        TensorRTEngine(engine_file, m, max_batch=16)
    old = m.model_copy(update={"tensorrt": m.tensorrt.model_copy(update={"version": "10.0.1"})})  # type: ignore[union-attr]
    with pytest.raises(EngineError, match=r"TensorRT 10.0.1 \(here 10.3.0\)"):
        TensorRTEngine(engine_file, old)
    engine_file.write_bytes(b"SWAPPED")
    with pytest.raises(EngineError, match="does not match its manifest"):
        TensorRTEngine(engine_file, m)
    unsigned = m.model_copy(update={"tensorrt": m.tensorrt.model_copy(update={"engine_sha256": None})})  # type: ignore[union-attr]
    with pytest.raises(EngineError, match="could not deserialise"):
        TensorRTEngine(engine_file, unsigned)
    assert json.loads(engine_file.with_suffix(".json").read_text())["tensorrt"]["version"] == "10.3.0"
