"""`engines` CLI: happy paths of verify and bench, and every user error as one line on stderr with exit 2.

No TensorRT here: build must say so in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from standin_detector import copy_model, exported_standin

from engines.cli import main


@pytest.fixture(scope="module")
def model() -> Path:
    return exported_standin(3)


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_missing_model_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for cmd in ("bench", "verify"):
        _one_line_error(capsys, main([cmd, str(tmp_path / "none.onnx")]), f"engines {cmd}: error:", "not found")


def test_missing_manifest(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    local = copy_model(model, tmp_path)
    local.with_suffix(".json").unlink()
    _one_line_error(capsys, main(["verify", str(local)]), "no manifest", "trainer export")
    _one_line_error(capsys, main(["bench", str(local)]), "no manifest")


@pytest.mark.parametrize("batch", ["1,x", "0", "", "8;16", "-1"])
def test_bad_batch_list(capsys: pytest.CaptureFixture[str], model: Path, batch: str) -> None:
    _one_line_error(capsys, main(["bench", str(model), "--batch", batch]), "--batch wants positive integers")


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench"])
    _one_line_error(capsys, int(exit_info.value.code or 0), "required: model")
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    _one_line_error(capsys, int(exit_info.value.code or 0), "invalid choice")


def test_build_without_tensorrt(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    local = copy_model(model, tmp_path)
    code = main(["build", str(local), "--out", str(tmp_path / "m.engine"), "--fp16"])
    _one_line_error(capsys, code, "engines build: error:", "not importable")
    assert not (tmp_path / "m.engine").exists()


def test_verify_prints_table_and_json(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    assert main(["verify", str(model), "--limit", "8", "--json", str(tmp_path / "v.json")]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime fp16 graph" in out and "yes" in out
    [record] = json.loads((tmp_path / "v.json").read_text())
    assert record["candidate"] == "onnxruntime fp16 graph" and record["ok"] is True


def test_verify_failure_exits_1(capsys: pytest.CaptureFixture[str], model: Path) -> None:
    assert main(["verify", str(model), "--limit", "4", "--score-rtol", "1e-12"]) == 1
    assert "NO" in capsys.readouterr().out


def test_bench_records(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    assert main(["bench", str(model), "--batch", "2,1", "--seconds", "0.05", "--json", str(out_json)]) == 0
    records = json.loads(out_json.read_text())
    assert [(r["backend"], r["batch"]) for r in records] == [("onnxruntime", 1), ("onnxruntime", 2)]
    out = capsys.readouterr().out
    assert "images/s" in out and "tensorrt skipped" in out
