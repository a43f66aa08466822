"""Inference engines over the exported detector: one Engine interface, TensorRT or ONNX Runtime.

No torch here (docs/architecture.md); `load_engine` is the entry point the inspector uses.
"""

from common.manifest import Manifest
from engines.base import Engine, InferResult
from engines.errors import EngineError
from engines.select import load_engine

__all__ = ["Engine", "EngineError", "InferResult", "Manifest", "load_engine"]
