"""Bad input to `trainer fit / evaluate / export` (issue 22): one line on stderr, exit 2, and nothing of an
existing run lost — a missing data folder, a file for --out, too few images, a corrupt or foreign last.pt
or model.pt, a last.pt that does not fit the data. Real files; the headline cases in a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from trainer.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "width=8", "--set", "max_width=32", "--set", "z_dim=16"]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _trainer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=120)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _plain_folder(path: Path, n: int, channels: int = 3, seed: int = 0) -> Path:
    """n good images (32 px) at the top level of a folder: the plain layout."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    for i in range(n):
        img = rng.integers(90, 140, size=(32, 32, channels), dtype=np.uint8)
        cv2.imwrite(str(path / f"{i:03d}.png"), img)
    return path


def _existing_run(run: Path) -> dict[str, bytes]:
    """An earlier run's files (their content does not matter to the checks before training)."""
    run.mkdir(parents=True)
    files = {"log.jsonl": b'{"epoch": 1, "loss_d": 1.0}\n{"epoch": 2, "loss_d": 0.9}\n',
             "last.pt": b"an earlier run's progress", "model.pt": b"an earlier run's model"}
    for name, data in files.items():
        (run / name).write_bytes(data)
    return files


def _unchanged(run: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (run / name).read_bytes() == data, f"{name} was changed"


def test_fit_on_a_missing_data_folder_leaves_the_existing_run_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    files = _existing_run(run)
    r = _trainer("fit", str(tmp_path / "nonexistent"), "--out", str(run))
    assert r.returncode == 2, r.stderr
    line = _one_line(r.stderr)
    assert "nonexistent" in line and "does not exist" in line
    _unchanged(run, files)
    assert sorted(p.name for p in run.iterdir()) == sorted(files)


def test_fit_refusals_before_training_touch_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    files = _existing_run(run)
    one_image = _plain_folder(tmp_path / "one", 1)
    assert main(["fit", str(one_image), "--out", str(run), "--image-size", "32", *TINY]) == 2
    assert "need at least 2" in _one_line(capsys.readouterr().err)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["fit", str(empty), "--out", str(run)]) == 2
    _one_line(capsys.readouterr().err)
    assert main(["fit", str(one_image), "--out", str(run), "--set", "alpha=lots"]) == 2
    _one_line(capsys.readouterr().err)
    _unchanged(run, files)

    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me\n")
    for out in (a_file, a_file / "run"):
        assert main(["fit", str(one_image), "--out", str(out)]) == 2
        assert "is a file, not a folder" in _one_line(capsys.readouterr().err)
    assert a_file.read_text() == "keep me\n"


def test_a_fresh_run_replaces_the_old_log_only_once_it_has_an_epoch(tmp_path: Path) -> None:
    data = _plain_folder(tmp_path / "good", 12, channels=1)
    run = tmp_path / "run"
    _existing_run(run)
    (run / "last.pt").unlink()
    (run / "model.pt").unlink()
    assert main(["fit", str(data), "--out", str(run), "--image-size", "32", "--epochs", "1", "--batch-size", "4",
                 "--device", "cpu", *TINY]) == 0
    log = (run / "log.jsonl").read_text().splitlines()
    assert len(log) == 1 and '"loss_d": 0.9' not in log[0]   # the old run's lines are gone, the new one is there


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage" * 50, "truncated", "foreign"])
def test_resume_from_a_corrupt_or_foreign_last_pt_is_one_line(content: bytes | str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = _plain_folder(tmp_path / "good", 12)
    run = tmp_path / "run"
    run.mkdir()
    last = run / "last.pt"
    if content == "truncated":     # a real torch file cut short (a full disk, a copy interrupted)
        torch.save({"config": {}, "state": {"E": torch.zeros(4096)}}, last)
        last.write_bytes(last.read_bytes()[:2000])
    elif content == "foreign":     # a valid torch file, but not a progress file
        torch.save({"weights": torch.zeros(3)}, last)
    else:
        last.write_bytes(content)
    before = last.read_bytes()
    assert main(["fit", str(data), "--out", str(run), "--resume"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(last) in line and "without --resume" in line
    assert last.read_bytes() == before


def test_resume_from_a_corrupt_last_pt_in_a_real_process(tmp_path: Path) -> None:
    data = _plain_folder(tmp_path / "good", 12)
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    (run / "log.jsonl").write_text('{"epoch": 1}\n')
    r = _trainer("fit", str(data), "--out", str(run), "--resume")
    assert r.returncode == 2, r.stderr
    line = _one_line(r.stderr)
    assert line.startswith("trainer fit: error: cannot resume:") and "last.pt" in line and "without --resume" in line
    assert (run / "log.jsonl").read_text() == '{"epoch": 1}\n'


def test_resume_with_data_that_does_not_fit_the_stored_networks(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    colour = _plain_folder(tmp_path / "colour", 12, channels=3)
    grey = _plain_folder(tmp_path / "grey", 12, channels=1, seed=1)
    run = tmp_path / "run"
    assert main(["fit", str(colour), "--out", str(run), "--image-size", "32", "--epochs", "1", "--batch-size", "4",
                 "--device", "cpu", *TINY]) == 0
    capsys.readouterr()
    log = (run / "log.jsonl").read_text()
    assert main(["fit", str(grey), "--out", str(run), "--resume", "--epochs", "2"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "does not fit this run" in line and "without --resume" in line
    assert (run / "log.jsonl").read_text() == log


@pytest.mark.parametrize("command", ["evaluate", "export"])
@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage" * 50, b"PK\x03\x04" + bytes(300)])
def test_evaluate_and_export_refuse_a_corrupt_model_pt_in_one_line(command: str, content: bytes, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(content)
    args = [command, str(run)] + (["--out", str(tmp_path / "m.onnx")] if command == "export" else [])
    assert main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert "model.pt" in line and "trainer fit" in line and "weights_only" not in line
    assert (run / "model.pt").read_bytes() == content


def test_a_foreign_model_pt_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"format": 1, "state": {}}, tmp_path / "model.pt")   # our format number, but not a detector
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a format-1 detector checkpoint" in _one_line(capsys.readouterr().err)
