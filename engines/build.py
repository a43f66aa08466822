"""`engines build MODEL.onnx --out MODEL.engine`: a TensorRT engine built on the target, with its manifest.

TensorRT 10: FP32 graph + BuilderFlag.FP16; TensorRT 11 (no FP16 flag): FP16 graph, strongly typed network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from common.manifest import (
    INPUT_NAME,
    Manifest,
    TensorRTInfo,
    check_onnx_sha256,
    read_manifest,
    sha256_file,
    write_manifest,
)
from engines.errors import EngineError
from engines.fp16 import fp16_bytes
from engines.tensorrt_engine import gpu_identity, import_runtime

log = structlog.get_logger("engines")


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
    if major == 10:
        return BuildPlan(major, precision, fp16_graph=False, strongly_typed=False, fp16_builder_flag=fp16)
    return BuildPlan(major, precision, fp16_graph=fp16, strongly_typed=True, fp16_builder_flag=False)


def network_flags(trt: Any, plan: BuildPlan) -> int:
    """create_network flags: STRONGLY_TYPED where the plan wants it (accepted and implied on TensorRT 11)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if plan.strongly_typed and flag is not None else 0


def configure(trt: Any, builder: Any, config: Any, plan: BuildPlan, input_shape: tuple[int, int, int],
              max_batch: int, opt_batch: int, timing_cache: bytes) -> None:
    """Precision flag, one optimisation profile over batch 1..max_batch, the timing cache."""
    if plan.fp16_builder_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, *input_shape), (opt_batch, *input_shape), (max_batch, *input_shape))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)


def timing_cache_path(engine_file: Path) -> Path:
    """MODEL.timing.cache beside MODEL.engine."""
    return engine_file.with_suffix(".timing.cache")


def build_engine(onnx_file: str | Path, out: str | Path, max_batch: int = 32, opt_batch: int | None = None,
                 fp16: bool = False) -> Manifest:
    """Build OUT from ONNX_FILE on this GPU and write OUT's manifest (ONNX manifest + tensorrt section)."""
    src, out = Path(onnx_file), Path(out)
    if src.suffix != ".onnx" or not src.is_file():
        raise EngineError(f"{src} is not an ONNX file; export one with `trainer export RUN_DIR --out MODEL.onnx`")
    if out.suffix == ".onnx" or out.suffix == ".json":
        raise EngineError(f"--out {out} would overwrite the model; name the engine MODEL.engine")
    opt_batch = opt_batch or max_batch
    if not 1 <= opt_batch <= max_batch:
        raise EngineError(f"--opt-batch {opt_batch} must lie in 1..--max-batch {max_batch}")
    manifest = read_manifest(src)
    check_onnx_sha256(manifest, src)
    trt, cuda = import_runtime()
    gpu_name, cc = gpu_identity(cuda)
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
    cache_file = timing_cache_path(out)
    configure(trt, builder, config, plan, manifest.input_shape, max_batch, opt_batch,
              cache_file.read_bytes() if cache_file.is_file() else b"")
    log.info("engine_build_start", onnx=str(src), trt=trt.__version__, gpu=gpu_name, plan=plan.__dict__,
             max_batch=max_batch, opt_batch=opt_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build an engine from {src.name} (its log above says why)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(serialized)
    cache_file.write_bytes(config.get_timing_cache().serialize())
    info = TensorRTInfo(version=trt.__version__, gpu_name=gpu_name, compute_capability=cc, max_batch=max_batch,
                        opt_batch=opt_batch, precision=plan.precision, engine_sha256=sha256_file(out))
    engine_manifest = manifest.model_copy(update={
        "onnx_file": os.path.relpath(src.resolve(), out.resolve().parent), "tensorrt": info})
    write_manifest(engine_manifest, out)
    log.info("engine_built", engine=str(out), timing_cache=str(cache_file), precision=plan.precision)
    return engine_manifest
