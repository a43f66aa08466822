"""TensorRT runtime (`TensorRTEngine`): real runs where TensorRT + pycuda + a GPU exist (`-m gpu`, skipped
here), and everywhere, on the fakes of tests/trt_fakes.py (documented pycuda/TensorRT behaviour): the
version/GPU checks (SM count and memory included), the call sequence, max_batch capped to the engine's
profile, close() freeing everything in the right context, load failures freeing what was allocated, infer
after close, a second thread calling infer, and imports that fail after find_spec found the package.
Builds (`engines build`) are tested in tests/test_engines_build.py.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from standin_detector import copy_model, exported_standin
from trt_fakes import CudaError, FakeCuda, fake_runtime

from common.manifest import TensorRTInfo, read_manifest, sha256_file, write_manifest
from engines.build import build_engine
from engines.errors import EngineError
from engines.tensorrt_engine import TensorRTEngine, import_runtime, tensorrt_available

TRT_OK, TRT_WHY = tensorrt_available()
needs_trt = pytest.mark.skipif(not TRT_OK, reason=f"TensorRT backend not runnable here: {TRT_WHY}")

GIB = 1 << 30
INFO = TensorRTInfo(version="10.3.0", gpu_name="Orin", compute_capability="8.7", max_batch=8, opt_batch=8,
                    precision="fp16", sm_count=16, total_memory=64 * GIB)


# ---------------------------------------------------------------- real TensorRT (GPU boxes only)

@needs_trt
@pytest.mark.gpu
def test_real_build_load_and_match_onnxruntime(tmp_path: Path) -> None:
    from engines import load_engine

    model = copy_model(exported_standin(3), tmp_path)
    manifest = build_engine(model, model.with_suffix(".engine"), max_batch=8, opt_batch=4, fp16=True)
    assert manifest.tensorrt is not None and manifest.tensorrt.sm_count and manifest.tensorrt.total_memory
    assert list(tmp_path.glob("model.timing-*.cache"))
    trt_engine = load_engine(model.with_suffix(".engine"), backend="tensorrt", max_batch=16)
    assert trt_engine.max_batch == 8                                  # capped to the profile, not refused
    ort_engine = load_engine(model, backend="onnxruntime", max_batch=8)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    a, b = trt_engine.infer(images), ort_engine.infer(images)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-2)
    assert np.abs(a.reconstructions.astype(int) - b.reconstructions).max() <= 3
    trt_engine.close()
    trt_engine.close()
    with pytest.raises(EngineError, match="closed"):
        trt_engine.infer(images)


@needs_trt
@pytest.mark.gpu
def test_real_engine_created_in_one_thread_infers_in_another(tmp_path: Path) -> None:
    """What the daemon does: the station loads the engine, the scoring thread calls infer."""
    model = copy_model(exported_standin(3), tmp_path)
    engine_file = model.with_suffix(".engine")
    build_engine(model, engine_file, max_batch=4, fp16=True)
    made: dict[str, Any] = {}
    loader = threading.Thread(target=lambda: made.update(engine=TensorRTEngine(engine_file, read_manifest(engine_file))))
    loader.start()
    loader.join()
    engine = made["engine"]
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    results: list[Any] = []
    errors: list[BaseException] = []

    def score() -> None:
        try:
            for _ in range(20):
                results.append(engine.infer(images))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=score) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    assert len(results) == 40 and all(np.array_equal(r.scores, results[0].scores) for r in results)
    closer = threading.Thread(target=engine.close)   # closed from a third thread, as at shutdown
    closer.start()
    closer.join()


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


# ---------------------------------------------------------------- the runtime on fakes

@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeCuda, dict[str, Any]]:
    """An engine file the fake TensorRT deserialises, its manifest (INFO), and the fake GPU (an AGX Orin)."""
    cuda = FakeCuda()
    options: dict[str, Any] = {"engine_max_batch": 8}
    monkeypatch.setattr("engines.tensorrt_engine.import_runtime",
                        lambda: (fake_runtime(cuda, engine_max_batch=options["engine_max_batch"]), cuda))
    model = copy_model(exported_standin(3), tmp_path)
    engine_file = model.with_suffix(".engine")
    engine_file.write_bytes(b"ENGINE")
    write_manifest(read_manifest(model).model_copy(update={"tensorrt": INFO.model_copy(
        update={"engine_sha256": sha256_file(engine_file)})}), engine_file)
    return engine_file, cuda, options


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_runtime_allocates_once_and_sets_shapes_only_on_change(fake: tuple[Path, FakeCuda, Any]) -> None:
    engine_file, cuda, _ = fake
    engine = TensorRTEngine(engine_file, read_manifest(engine_file))
    assert engine.max_batch == 8 and engine.backend == "tensorrt"
    allocs = [entry[1] for entry in cuda.log if entry[0] == "mem_alloc"]
    assert sorted(allocs) == sorted([8 * 32 * 32 * 3, 8 * 4, 8 * 32 * 32 * 3, 8 * 32 * 32 * 4])
    for n in (3, 3, 5):
        images = _images(n)
        r = engine.infer(images)
        np.testing.assert_allclose(r.scores, images.reshape(n, -1).mean(1) / 255, rtol=1e-6)
        np.testing.assert_array_equal(r.reconstructions, 255 - images)
        np.testing.assert_allclose(r.maps, images.mean(3), rtol=1e-6)
    assert [e for e in cuda.log if e[0] == "set_input_shape"] == [("set_input_shape", "images", (3, 32, 32, 3)),
                                                               ("set_input_shape", "images", (5, 32, 32, 3))]
    assert [e for e in cuda.log if e[0] == "execute_async_v3"] == [("execute_async_v3", 77)] * 3
    assert len([e for e in cuda.log if e[0] == "mem_alloc"]) == 4          # nothing allocated per call
    assert cuda.log.count("push") == cuda.log.count("pop")
    with pytest.raises(EngineError, match="outside 1..8"):
        engine.infer(np.zeros((9, 32, 32, 3), np.uint8))
    engine.close()
    assert cuda.log[-1] == "detach"


@pytest.mark.parametrize(("requested", "engine_max", "expected"), [(None, 4, 4), (8, 4, 4), (32, 4, 4), (2, 4, 2)])
def test_max_batch_larger_than_the_profile_is_capped(fake: tuple[Path, FakeCuda, dict[str, Any]],
                                                     requested: int | None, engine_max: int, expected: int) -> None:
    """The inspector asks for 8 crops per call by default; an engine built with --max-batch 4 must still load."""
    engine_file, cuda, options = fake
    options["engine_max_batch"] = engine_max
    engine = TensorRTEngine(engine_file, read_manifest(engine_file), max_batch=requested)
    assert engine.max_batch == expected
    capped = requested is not None and requested > engine_max
    assert any("capped" in note for note in engine.notes) == capped
    allocs = sorted(entry[1] for entry in cuda.log if entry[0] == "mem_alloc")
    assert allocs[0] == expected * 4                                  # buffers for the capped batch only
    assert engine.infer(_images(expected)).scores.shape == (expected,)
    engine.close()


def test_close_frees_device_and_pinned_memory_in_the_context_then_detaches(fake: tuple[Path, FakeCuda, Any]) -> None:
    engine_file, cuda, _ = fake
    engine = TensorRTEngine(engine_file, read_manifest(engine_file))
    engine.infer(_images(2))
    assert len(cuda.device_allocs) == 4 and len(cuda.pinned) == 4
    start = len(cuda.log)
    engine.close()
    tail = cuda.log[start:]
    frees = [e for e in tail if isinstance(e, tuple) and e[0] in ("free", "free_host")]
    assert len(frees) == 8 and cuda.leaked() == []
    # every free happened while the primary context was pushed, and the context was released last
    assert tail[0] == "push" and tail[-2:] == ["pop", "detach"] and cuda.refcount == 0
    engine.close()                                                   # idempotent: nothing more happens
    assert cuda.log[-1] == "detach" and cuda.log.count("detach") == 1


def test_infer_after_close_is_an_engine_error(fake: tuple[Path, FakeCuda, Any]) -> None:
    engine_file, _, _ = fake
    engine = TensorRTEngine(engine_file, read_manifest(engine_file))
    engine.close()
    with pytest.raises(EngineError) as err:
        engine.infer(_images(1))
    assert "closed" in str(err.value) and "\n" not in str(err.value)


def test_failed_load_frees_the_partial_allocations(fake: tuple[Path, FakeCuda, Any]) -> None:
    engine_file, cuda, _ = fake
    cuda.fail_alloc_at = 3                                           # out of memory on the third buffer
    with pytest.raises(EngineError) as err:
        TensorRTEngine(engine_file, read_manifest(engine_file))
    assert "out of memory" in str(err.value) and "\n" not in str(err.value)
    assert len(cuda.device_allocs) == 2 and len(cuda.pinned) == 3
    assert cuda.leaked() == [] and cuda.refcount == 0 and cuda.log[-1] == "detach"


def test_engine_made_in_one_thread_infers_in_another(fake: tuple[Path, FakeCuda, Any]) -> None:
    """CUDA contexts are current per thread (the fake enforces it): every call pushes the primary context."""
    engine_file, cuda, _ = fake
    made: dict[str, Any] = {}
    loader = threading.Thread(target=lambda: made.update(engine=TensorRTEngine(engine_file,
                                                                                read_manifest(engine_file))))
    loader.start()
    loader.join()
    results: list[Any] = []
    errors: list[BaseException] = []

    def score(seed: int) -> None:
        try:
            for _ in range(10):
                images = _images(3, seed)
                r = made["engine"].infer(images)
                results.append(np.allclose(r.scores, images.reshape(3, -1).mean(1) / 255, rtol=1e-6))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=score, args=(seed,)) for seed in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors and len(results) == 20 and all(results)
    closer = threading.Thread(target=made["engine"].close)
    closer.start()
    closer.join()
    assert cuda.leaked() == [] and cuda.refcount == 0


def test_runtime_refusals(fake: tuple[Path, FakeCuda, Any]) -> None:
    engine_file, _, _ = fake
    m = read_manifest(engine_file)
    assert m.tensorrt is not None
    old = m.model_copy(update={"tensorrt": m.tensorrt.model_copy(update={"version": "10.0.1"})})
    with pytest.raises(EngineError, match=r"TensorRT 10.0.1 \(here 10.3.0\)"):
        TensorRTEngine(engine_file, old)
    engine_file.write_bytes(b"SWAPPED")
    with pytest.raises(EngineError, match="does not match its manifest"):
        TensorRTEngine(engine_file, m)
    unsigned = m.model_copy(update={"tensorrt": m.tensorrt.model_copy(update={"engine_sha256": None})})
    with pytest.raises(EngineError, match="could not deserialise"):
        TensorRTEngine(engine_file, unsigned)


def test_an_agx_orin_engine_is_refused_on_an_orin_nano(fake: tuple[Path, FakeCuda, Any]) -> None:
    """Every Orin module says "Orin", sm 8.7: the SM count and the memory tell them apart."""
    engine_file, cuda, _ = fake
    cuda.ident = ("Orin", (8, 7), 8, 8 * GIB)                     # an Orin Nano 8GB
    with pytest.raises(EngineError) as err:
        TensorRTEngine(engine_file, read_manifest(engine_file))
    msg = str(err.value)
    assert "16 SMs (here 8)" in msg and "64.0 GiB" in msg and "rebuild it on this machine" in msg
    assert cuda.refcount == 0                                      # refused before any context was retained


def test_an_older_manifest_without_sm_count_loads_with_a_warning(fake: tuple[Path, FakeCuda, Any]) -> None:
    engine_file, _, _ = fake
    m = read_manifest(engine_file)
    assert m.tensorrt is not None
    older = m.model_copy(update={"tensorrt": m.tensorrt.model_copy(update={"sm_count": None, "total_memory": None})})
    engine = TensorRTEngine(engine_file, older)
    assert [n for n in engine.notes if "SM count" in n and "engines build" in n]
    engine.close()


# ---------------------------------------------------------------- compatibility check (pure)

def _gpu(name: str = "Orin", cc: str = "8.7", sm: int = 16, mem: int = 64 * GIB) -> Any:
    from engines.tensorrt_engine import GpuIdentity

    return GpuIdentity(name=name, compute_capability=cc, sm_count=sm, total_memory=mem)


def test_matching_engine_passes() -> None:
    from engines.tensorrt_engine import check_compatibility

    assert check_compatibility(Path("m.engine"), INFO, "10.3.0", _gpu()) == []
    # the memory the driver reports moves a little between JetPack releases: within 10 % is the same module
    assert check_compatibility(Path("m.engine"), INFO, "10.3.0", _gpu(mem=int(61.4 * GIB))) == []


@pytest.mark.parametrize(("version", "gpu", "what"), [
    ("10.7.0", {}, "TensorRT 10.3.0 (here 10.7.0)"),
    ("10.3.0", {"name": "NVIDIA H200", "cc": "9.0", "sm": 132, "mem": 141 * GIB}, "GPU 'Orin' (here 'NVIDIA H200')"),
    ("10.3.0", {"cc": "8.6"}, "compute capability 8.7 (here 8.6)"),
    ("10.3.0", {"sm": 14, "mem": 32 * GIB}, "16 SMs (here 14)"),
    ("10.3.0", {"mem": 32 * GIB}, "64.0 GiB of GPU memory (here 32.0 GiB)"),
])
def test_mismatched_engine_is_refused_with_rebuild_command(version: str, gpu: dict[str, Any], what: str) -> None:
    from engines.tensorrt_engine import check_compatibility

    with pytest.raises(EngineError) as err:
        check_compatibility(Path("/models/m.engine"), INFO, version, _gpu(**gpu))
    msg = str(err.value)
    assert what in msg and "not portable" in msg
    assert "`engines build m.onnx --out m.engine --max-batch 8 --opt-batch 8 --fp16`" in msg


def test_engine_without_tensorrt_section_is_refused() -> None:
    from engines.tensorrt_engine import check_compatibility

    with pytest.raises(EngineError, match="no tensorrt section"):
        check_compatibility(Path("m.engine"), None, "10.3.0", _gpu())


# ---------------------------------------------------------------- imports that fail after find_spec

@pytest.mark.parametrize(("module", "exc", "library"), [
    ("tensorrt", ImportError("libnvinfer.so.10: cannot open shared object file: No such file or directory"),
     "libnvinfer.so.10"),
    ("pycuda.driver", ImportError("libcuda.so.1: cannot open shared object file: No such file or directory"),
     "libcuda.so.1"),
    ("tensorrt", OSError("libcudart.so.12: cannot open shared object file: No such file or directory"),
     "libcudart.so.12"),
])
def test_a_missing_shared_library_is_one_engine_error(monkeypatch: pytest.MonkeyPatch, module: str,
                                                      exc: Exception, library: str) -> None:
    """find_spec finds the package (it is installed) but its import cannot load a shared library."""
    import importlib
    import importlib.util

    real_import = importlib.import_module
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())

    def failing_import(name: str, package: str | None = None) -> Any:
        if name == module:
            raise exc
        if name in ("tensorrt", "pycuda.driver"):
            return object()
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", failing_import)
    with pytest.raises(EngineError) as err:
        import_runtime()
    msg = str(err.value)
    assert library in msg and "\n" not in msg and "install" in msg
    ok, why = tensorrt_available()
    assert not ok and library in why and "\n" not in why


def test_a_cuda_driver_error_at_init_is_one_engine_error(fake: tuple[Path, FakeCuda, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    engine_file, cuda, _ = fake

    def no_device() -> None:
        raise CudaError("cuInit failed: no CUDA-capable device is detected")

    monkeypatch.setattr(cuda, "init", no_device)
    with pytest.raises(EngineError, match="no CUDA-capable device"):
        TensorRTEngine(engine_file, read_manifest(engine_file))
