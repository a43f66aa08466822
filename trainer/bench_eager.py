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

from engines.bench import Runner, bench, format_table, write_json
from engines.onnxruntime_engine import default_threads
from trainer.detector import load_detector
from trainer.export import scoring_graph


@dataclass
class BenchEagerOptions:
    run_dir: Path                 # the trained run the model was exported from
    model: Path                   # its MODEL.onnx (or MODEL.engine)
    batches: list[int]
    threads: int | None = None    # CPU threads for every backend (default: all available)
    seconds: float = 1.0          # minimum timed seconds per measurement
    json: Path | None = None      # also write the records here


def torch_eager_runner(run_dir: Path, threads: int) -> Runner:
    """The exported graph's torch module (same wrapper, same weights) under inference_mode."""
    torch.set_num_threads(threads)
    module = scoring_graph(load_detector(run_dir))

    def run(images: np.ndarray) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(images))

    return run


def run_bench_eager(options: BenchEagerOptions) -> int:
    """Print (and with options.json write) {backend, batch, images_per_s, p50_ms, p99_ms} of every engine
    here and of torch eager."""
    threads = options.threads or default_threads()
    run = torch_eager_runner(options.run_dir, threads)
    records, notes = bench(options.model, options.batches, threads, options.seconds,
                           extra=[("torch-eager", run, lambda: None)])
    print(format_table(records))
    for note in notes:
        print(f"note: {note}")
    if options.json is not None:
        write_json(records, options.json)
    return 0
