"""`engines build MODEL.onnx --out MODEL.engine`: a TensorRT engine built on the target, with its manifest.

FP16 on TensorRT 10 and 11 alike: the FP16 graph of engines/fp16.py (reductions and the score tail kept FP32,
which `engines verify` emulates) parsed as a strongly typed network (STRONGLY_TYPED exists since TensorRT
10.0 and is implied in 11), so the engine runs the precisions that were verified; BuilderFlag.FP16 (weak
typing, TensorRT 10 only) would let the builder pick FP16 for the reductions too. FP32: the FP32 graph.

The timing cache (TensorRT's builder guide: "specific to the targeted device, CUDA, TensorRT versions") is
kept beside the engine under a name that carries the TensorRT version and the GPU (name, compute capability,
SM count). `IBuilderConfig.set_timing_cache` returns False for a cache it refuses (another device or
version), and then `get_timing_cache` has nothing to give: such a cache is replaced by a fresh one, never
trusted. The engine and its manifest are written to temporary names and renamed engine first, manifest
second: a build stopped in between leaves a new engine beside the old manifest, and the loader refuses an
engine whose sha256 is not the one its manifest records.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from common.manifest import (
    INPUT_NAME,
    Manifest,
    TensorRTInfo,
    check_onnx_sha256,
    manifest_path,
    read_manifest,
)
from engines.errors import EngineError, first_line
from engines.fp16 import fp16_bytes
from engines.tensorrt_engine import GpuIdentity, gpu_identity, import_runtime

log = structlog.get_logger("engines")

DEFAULT_OPT_BATCH = 8   # the inspector sends 1-8 crops per call (engine.max_batch = 8 by default)


@dataclass(frozen=True)
class BuildPlan:
    trt_major: int
    precision: Literal["fp32", "fp16"]
    fp16_graph: bool          # parse the FP16 version of the graph (engines.fp16)
    strongly_typed: bool      # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    fp16_builder_flag: bool   # BuilderFlag.FP16 (TensorRT 10 only; removed in 11)


def plan_build(trt_version: str, fp16: bool) -> BuildPlan:
    """How to get the requested precision from this TensorRT version."""
    try:
        major = int(trt_version.split(".")[0])
    except ValueError:
        raise EngineError(f"cannot read TensorRT version {trt_version!r}") from None
    precision: Literal["fp32", "fp16"] = "fp16" if fp16 else "fp32"
    if major < 10:
        raise EngineError(f"TensorRT {trt_version} is too old: engines needs TensorRT 10 (JetPack 6) or 11")
    if major == 10 and not fp16:
        return BuildPlan(major, precision, fp16_graph=False, strongly_typed=False, fp16_builder_flag=False)
    return BuildPlan(major, precision, fp16_graph=fp16, strongly_typed=True, fp16_builder_flag=False)


def default_opt_batch(max_batch: int) -> int:
    """The batch TensorRT tunes its kernels for unless told: what the daemon sends, within the profile."""
    return min(DEFAULT_OPT_BATCH, max_batch)


def network_flags(trt: Any, plan: BuildPlan) -> int:
    """create_network flags: STRONGLY_TYPED where the plan wants it (accepted and implied on TensorRT 11)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if plan.strongly_typed and flag is not None else 0


def configure(trt: Any, builder: Any, config: Any, plan: BuildPlan, input_shape: tuple[int, int, int],
              max_batch: int, opt_batch: int, timing_cache: bytes) -> Any:
    """Precision flag, one optimisation profile over batch 1..max_batch, the timing cache (returned: the one
    attached, None when TensorRT took none)."""
    if plan.fp16_builder_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, *input_shape), (opt_batch, *input_shape), (max_batch, *input_shape))
    config.add_optimization_profile(profile)
    return attach_timing_cache(config, timing_cache)


def _create_cache(config: Any, data: bytes) -> Any:
    try:
        return config.create_timing_cache(data)
    except Exception as exc:  # noqa: BLE001 - the bindings' own error for a blob they cannot read
        log.warning("timing_cache_unreadable", error=first_line(exc))
        return None


def attach_timing_cache(config: Any, stored: bytes) -> Any:
    """The stored cache when TensorRT accepts it (set_timing_cache returns True), else a fresh, empty one;
    None (build without a cache: TensorRT then uses a temporary one) when even that is refused."""
    if stored:
        cache = _create_cache(config, stored)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
        log.warning("timing_cache_refused", reason="made by another TensorRT version or GPU, or unreadable",
                    action="starting a fresh one (it replaces the stored one after the build)")
    cache = _create_cache(config, b"")
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    log.warning("timing_cache_unavailable", action="building without one")
    return None


def timing_cache_path(engine_file: Path, trt_version: str, gpu: GpuIdentity) -> Path:
    """MODEL.timing-trt<version>-<gpu name>-sm<cc>-<SMs>sm.cache beside MODEL.engine: one per TensorRT version
    and GPU model, so a cache made elsewhere is never offered to this builder under this box's name."""
    name = re.sub(r"[^a-z0-9]+", "-", gpu.name.lower()).strip("-") or "gpu"
    version = re.sub(r"[^0-9A-Za-z.]+", "-", trt_version)
    cc = gpu.compute_capability.replace(".", "")
    return engine_file.with_name(f"{engine_file.stem}.timing-trt{version}-{name}-sm{cc}-{gpu.sm_count}sm.cache")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_engine_and_manifest(out: Path, engine: bytes, manifest: Manifest) -> None:
    """Both to temporary names (synced), then the engine renamed over the old one, then the manifest. Stopped
    in between, the new engine sits beside the old manifest, whose engine_sha256 makes the loader refuse it;
    no temporary file is left behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_file = manifest_path(out)
    tmp_engine, tmp_json = out.with_name(out.name + ".tmp"), json_file.with_name(json_file.name + ".tmp")
    try:
        _write_synced(tmp_engine, engine)
        _write_synced(tmp_json, (manifest.model_dump_json(indent=2) + "\n").encode())
        os.replace(tmp_engine, out)
        os.replace(tmp_json, json_file)
        _sync_dir(out.parent)
    finally:
        for tmp in (tmp_engine, tmp_json):
            tmp.unlink(missing_ok=True)


def save_timing_cache(config: Any, cache_file: Path) -> None:
    """The builder's timing cache to cache_file (temporary name, then renamed); a failure is a warning: the
    engine is built and the next build simply starts a fresh cache."""
    cache = config.get_timing_cache()
    if cache is None:
        log.warning("timing_cache_not_saved", reason="the builder had none attached")
        return
    tmp = cache_file.with_name(cache_file.name + ".tmp")
    try:
        _write_synced(tmp, bytes(cache.serialize()))
        os.replace(tmp, cache_file)
    except Exception as exc:  # noqa: BLE001 - an optimisation: never fail a build that produced its engine
        log.warning("timing_cache_not_saved", cache=str(cache_file), error=first_line(exc))
    finally:
        tmp.unlink(missing_ok=True)


def build_engine(onnx_file: str | Path, out: str | Path, max_batch: int = 32, opt_batch: int | None = None,
                 fp16: bool = False) -> Manifest:
    """Build OUT from ONNX_FILE on this GPU and write OUT's manifest (ONNX manifest + tensorrt section).

    opt_batch: the batch TensorRT tunes for, default min(8, max_batch) (what the daemon sends per call)."""
    src, out = Path(onnx_file), Path(out)
    if src.suffix != ".onnx" or not src.is_file():
        raise EngineError(f"{src} is not an ONNX file; export one with `trainer export RUN_DIR --out MODEL.onnx`")
    if out.suffix == ".onnx" or out.suffix == ".json":
        raise EngineError(f"--out {out} would overwrite the model; name the engine MODEL.engine")
    if max_batch < 1:
        raise EngineError(f"--max-batch must be at least 1, got {max_batch}")
    opt_batch = opt_batch or default_opt_batch(max_batch)
    if not 1 <= opt_batch <= max_batch:
        raise EngineError(f"--opt-batch {opt_batch} must lie in 1..--max-batch {max_batch}")
    manifest = read_manifest(src)
    check_onnx_sha256(manifest, src)
    trt, cuda = import_runtime()
    gpu = gpu_identity(cuda)
    plan = plan_build(trt.__version__, fp16)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    graph = fp16_bytes(src) if plan.fp16_graph else src.read_bytes()
    if not parser.parse(graph):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT's ONNX parser rejected {src.name}: {errors}")
    config = builder.create_builder_config()
    cache_file = timing_cache_path(out, trt.__version__, gpu)
    # held until the build is saved: TensorRT's docs say the cache must outlive the build that uses it
    timing_cache = configure(trt, builder, config, plan, manifest.input_shape, max_batch, opt_batch,
                             cache_file.read_bytes() if cache_file.is_file() else b"")
    log.info("engine_build_start", onnx=str(src), trt=trt.__version__, gpu=gpu.describe(), plan=plan.__dict__,
             max_batch=max_batch, opt_batch=opt_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build an engine from {src.name} (its log above says why)")
    data = bytes(serialized)
    if not data:
        raise EngineError(f"TensorRT returned an empty engine for {src.name} (its log above says why)")
    info = TensorRTInfo(version=trt.__version__, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
                        max_batch=max_batch, opt_batch=opt_batch, precision=plan.precision,
                        engine_sha256=hashlib.sha256(data).hexdigest(), sm_count=gpu.sm_count,
                        total_memory=gpu.total_memory)
    engine_manifest = manifest.model_copy(update={
        "onnx_file": os.path.relpath(src.resolve(), out.resolve().parent), "tensorrt": info})
    write_engine_and_manifest(out, data, engine_manifest)
    save_timing_cache(config, cache_file)
    log.info("engine_built", engine=str(out), timing_cache=str(cache_file) if timing_cache is not None else None,
             precision=plan.precision)
    return engine_manifest
