"""`inspector history` over a real journal: filters, windows, table and JSON output, exit codes.
The parser is driven the way the CLI drives it: its `history` arguments become HistoryOptions for run_history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inspector.cli import build_parser, history_options
from inspector.state.history import HistoryOptions, format_table, history, run_history
from inspector.state.journal import Journal


def header(seq: int, verdict: str) -> dict[str, Any]:
    return {"sequence": seq, "verdict": verdict, "part_id": f"p{seq}", "captured_at": 1_764_400_000.25 + seq,
            "model_id": "ours-proj-abc",
            "rois": [{"name": "top", "score": 0.3, "threshold": 0.5},
                     {"name": "side", "score": 0.9 if verdict == "fail" else 0.1, "threshold": 0.6}]}


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "j.db"
    j = Journal(path)
    verdicts = ["pass", "pass", "fail", "error", "pass", "fail", "pass", "pass"]
    for seq, verdict in enumerate(verdicts, start=1):
        j.append(header(seq, verdict), {"side/input": f"d/{seq}.png"} if verdict != "pass" else {})
    j.close()
    return path


def parse(argv: list[str]) -> HistoryOptions:
    return history_options(build_parser().parse_args(["history", *argv]))


def test_history_filters_and_windows(journal: Path) -> None:
    assert [r["seq"] for r in history(journal)] == list(range(1, 9))
    assert [r["seq"] for r in history(journal, limit=3)] == [6, 7, 8]  # the newest, oldest first
    assert [r["seq"] for r in history(journal, verdict="fail")] == [3, 6]
    assert [r["seq"] for r in history(journal, since=4, limit=2)] == [5, 6]


def test_table_shows_the_worst_roi_and_images(journal: Path) -> None:
    lines = format_table(history(journal, verdict="fail")).splitlines()
    assert lines[0].split()[:2] == ["seq", "captured"]
    assert len(lines) == 3
    assert lines[1].split()[:2] == ["3", "2025-11-29"]
    assert "p3" in lines[1] and "fail" in lines[1] and "side 0.9/0.6" in lines[1] and "ours-proj-abc" in lines[1]
    assert lines[1].rstrip().endswith("1")  # one stored image
    assert "2025-11-29 07:06:43.250" in lines[1]  # 1_764_400_003.25 in UTC


def test_cli_prints_a_table_and_json_lines(journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_history(parse(["--journal", str(journal), "--verdict", "error"])) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("4 ")
    assert run_history(parse(["--journal", str(journal), "--since", "6", "--json"])) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == [7, 8]
    assert rows[0]["header"]["part_id"] == "p7" and "header_json" not in rows[0]


def test_cli_validates_its_arguments(journal: Path) -> None:
    for bad in (["--limit", "0"], ["--since", "-1"], ["--verdict", "maybe"], ["--limit", "x"]):
        with pytest.raises(SystemExit) as info:
            parse(["--journal", str(journal), *bad])
        assert info.value.code == 2


def test_missing_journal_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_history(parse(["--journal", str(tmp_path / "none.db")])) == 1
    err = capsys.readouterr().err
    assert err.startswith("inspector history: cannot read the journal") and err.count("\n") == 1
