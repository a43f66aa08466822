"""`trainer bench-eager RUN_DIR --model MODEL.onnx`: the engines' images/s beside torch eager of the same graph.

The torch side of `engines bench` (engines/ never imports torch): the exported graph's torch module (same
wrapper, same weights) under inference_mode, timed by the engines' own bench on the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.bench import Runner, bench
from engines.onnxruntime_engine import default_threads
from trainer.detector import load_detector
from trainer.export import ScoringGraph, input_spec, strip_for_export


@dataclass
class BenchEagerOptions:
    run_dir: Path                 # the trained run the model was exported from
    model: Path                   # its MODEL.onnx (or MODEL.engine)
    batches: list[int]
    threads: int | None = None    # CPU threads for every backend (default: all available)
    seconds: float = 1.0          # minimum timed seconds per measurement


def torch_eager_runner(run_dir: Path, threads: int) -> Runner:
    """The exported graph's torch module (same wrapper, same weights) under inference_mode."""
    torch.set_num_threads(threads)
    detector = load_detector(run_dir)
    module = ScoringGraph(strip_for_export(detector), input_spec(detector)[2]).eval()

    def run(images: np.ndarray) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(images))

    return run


def bench_eager(options: BenchEagerOptions) -> tuple[list[dict[str, Any]], list[str]]:
    """Records {backend, batch, images_per_s, p50_ms, p99_ms} of every engine here and of torch eager."""
    threads = options.threads or default_threads()
    run = torch_eager_runner(options.run_dir, threads)
    return bench(options.model, options.batches, threads, options.seconds,
                 extra=[("torch-eager", run, lambda: None)])
