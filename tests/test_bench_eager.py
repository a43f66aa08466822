"""`trainer bench-eager`: the engines' bench with torch eager of the same graph beside it (the torch side
of `engines bench`, which imports no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from standin_detector import StandinDetector, exported_standin

from trainer.cli import main
from trainer.export import ScoringGraph, strip_for_export


def test_bench_records_and_torch_eager(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model = exported_standin(3)
    module = ScoringGraph(strip_for_export(StandinDetector())).eval()
    seen: list[object] = []

    def runner(run_dir: Path, threads: int):  # noqa: ANN202 - a stand-in for the checkpoint-loading runner
        seen.append(run_dir)

        def run(images: np.ndarray) -> object:
            with torch.inference_mode():
                return module(torch.from_numpy(images))
        return run

    monkeypatch.setattr("trainer.bench_eager.torch_eager_runner", runner)
    out_json = tmp_path / "bench.json"
    code = main(["bench-eager", str(tmp_path / "run"), "--model", str(model), "--batch", "2,1",
                 "--seconds", "0.05", "--json", str(out_json)])
    assert code == 0 and seen == [tmp_path / "run"]
    records = json.loads(out_json.read_text())
    assert [(r["backend"], r["batch"]) for r in records] == [
        ("onnxruntime", 1), ("torch-eager", 1), ("onnxruntime", 2), ("torch-eager", 2)]
    for r in records:
        assert set(r) == {"backend", "batch", "images_per_s", "p50_ms", "p99_ms"}
        assert r["images_per_s"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
    out = capsys.readouterr().out
    assert "images/s" in out and "tensorrt skipped" in out
