"""`trainer fit --init OLD_RUN` in real CLI processes: it starts from the old run's weights (not a fresh
init), records where they came from, and refuses data or options the old networks do not fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from trainer.config import Config
from trainer.models import build_networks

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "32", "--batch-size", "8", "--z-dim", "16", "--device", "cpu",
        "--set", "width=8", "--set", "max_width=32"]
FROZEN = ["--set", "lr=1e-12"]  # the epoch runs, but Adam's steps cannot move a weight visibly


def write_discs(folder: Path, size: int = 32, channels: int = 1, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    (folder / "train" / "good").mkdir(parents=True)
    for i in range(n):
        r = rng.uniform(8, 11)
        img = np.where((yy - 16) ** 2 + (xx - 16) ** 2 < r * r, rng.uniform(150, 190), 30.0).astype(np.uint8)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        if channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        cv2.imwrite(str(folder / "train" / "good" / f"{i:03d}.png"), img)
    return folder


def fit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "trainer", "fit", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def parameters(run: Path) -> dict[str, torch.Tensor]:
    """The trained parameters (not BatchNorm statistics or spectral-norm vectors) of a run's model.pt."""
    payload = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    nets = build_networks(Config.from_dict(payload["config"]).model)
    out = {}
    for key, net in nets.items():
        for name, _ in net.named_parameters():
            out[f"{key}.{name}"] = payload["state"][key][name]
    return out


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def old_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("init")
    data = write_discs(base / "data")
    done = fit(str(data), "--out", str(base / "old"), "--epochs", "1", *TINY)
    assert done.returncode == 0, done.stderr
    return data, base / "old"


def test_init_starts_from_the_old_weights_and_records_them(old_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, old = old_run
    tuned = fit(str(data), "--out", str(tmp_path / "tuned"), "--init", str(old), "--epochs", "1", *FROZEN)
    assert tuned.returncode == 0, tuned.stderr
    fresh = fit(str(data), "--out", str(tmp_path / "fresh"), "--epochs", "1", *TINY, *FROZEN)
    assert fresh.returncode == 0, fresh.stderr
    old_params = parameters(old)
    assert max_difference(parameters(tmp_path / "tuned"), old_params) < 1e-6   # the old run's weights
    assert max_difference(parameters(tmp_path / "fresh"), old_params) > 1e-4   # a fresh init is not them
    payload = torch.load(tmp_path / "tuned" / "model.pt", map_location="cpu", weights_only=True)
    assert payload["config"]["model"]["z_dim"] == 16 and payload["config"]["model"]["width"] == 8  # the old networks
    assert payload["config"]["train"]["lr"] == 1e-12 and payload["config"]["train"]["epochs"] == 1  # new options
    record = payload["metrics"]["init_from"]
    assert record == payload["run"]["init_from"]
    assert record["model"] == str((old / "model.pt").resolve()) and record["best_epoch"] == 1
    first = json.loads((tmp_path / "tuned" / "log.jsonl").read_text().splitlines()[0])
    assert first["init_from"] == record


@pytest.mark.parametrize("case", ["smaller images", "colour images", "another size", "with resume"])
def test_init_refuses_what_the_old_networks_do_not_fit(old_run: tuple[Path, Path], tmp_path: Path,
                                                      case: str) -> None:
    data, old = old_run
    args = {"smaller images": [str(write_discs(tmp_path / "d16", size=16)), "--init", str(old)],
            "colour images": [str(write_discs(tmp_path / "d3", channels=3)), "--init", str(old)],
            "another size": [str(data), "--init", str(old), "--image-size", "64"],
            "with resume": [str(data), "--init", str(old), "--resume"]}[case]
    done = fit(*args, "--out", str(tmp_path / "run"), "--epochs", "1")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
