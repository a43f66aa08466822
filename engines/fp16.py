"""FP16 version of an exported graph (float tensors inside in half precision, the graph's I/O unchanged).

For TensorRT 11's strongly typed builds and for checking FP16 fidelity in ONNX Runtime (docs/engines.md).
"""

from __future__ import annotations

from pathlib import Path

from engines.errors import EngineError


def fp16_bytes(onnx_file: str | Path) -> bytes:
    """The serialised FP16 graph, via onnxruntime.transformers.float16 (keep_io_types=True)."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise EngineError(f"the FP16 graph needs the onnx package ({exc}); `pip install onnx`") from None
    model = onnx.load(str(onnx_file))
    # keep_io_types: score/anomaly_map stay float32 and images/reconstruction stay uint8 at the boundary.
    converted = convert_float_to_float16(model, keep_io_types=True)
    return converted.SerializeToString()


def fp16_path(onnx_file: str | Path) -> Path:
    """MODEL.fp16.onnx beside MODEL.onnx."""
    p = Path(onnx_file)
    return p.with_name(p.stem + ".fp16.onnx")


def write_fp16(onnx_file: str | Path, out: str | Path | None = None) -> Path:
    target = Path(out) if out is not None else fp16_path(onnx_file)
    target.write_bytes(fp16_bytes(onnx_file))
    return target
