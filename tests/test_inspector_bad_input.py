"""Bad input to the inspector (issue 22): a configuration file that cannot be read ends `inspector run` with
one line and exit 2 (which systemd does not restart on), never a traceback and exit 1; `inspector replay
--json` to a path it cannot write is refused before the replay, and a write that still fails at the end
prints the summary instead of losing it. Real processes, real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_inspector_support import REPO, inspector_cmd, make_mean_model, subprocess_env, write_conveyor_video
from test_reliability_support import fresh_logging  # noqa: F401 - a fixture, used by pytestmark

import inspector.tools.replay as replay_module
from inspector.cli import main

pytestmark = pytest.mark.usefixtures("fresh_logging")


def _inspector(*args: str, as_nobody: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if as_nobody else []
    return subprocess.run([*prefix, *inspector_cmd(*args)], cwd=REPO, env=subprocess_env(**env), capture_output=True,
                          text=True, timeout=60)


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_a_directory_as_the_configuration_file(command: str, tmp_path: Path) -> None:
    folder = tmp_path / "inspector.toml"
    folder.mkdir()
    args = ("run", "--config", str(folder)) if command == "run" else ("check-config", str(folder))
    assert "is a directory, not a TOML file" in _one_line(_inspector(*args))


@pytest.mark.parametrize(("content", "message"), [
    (b"\xff\xfestation_id = 'a'\n", "is not UTF-8 text"),
    ("station_id = 'caf\u00e9'\n".encode("latin-1"), "is not UTF-8 text"),
    (b"[camera\nsource = 1\n", "is not valid TOML"),
    (b"station_id = \n", "is not valid TOML"),
])
def test_undecodable_configuration_files_stop_run_with_exit_2(content: bytes, message: str, tmp_path: Path) -> None:
    config = tmp_path / "inspector.toml"
    config.write_bytes(content)
    line = _one_line(_inspector("run", "--config", str(config)))
    assert str(config) in line and message in line


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder another user can enter (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="inspector-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_an_unreadable_configuration_file_stops_run_with_exit_2(world_readable_dir: Path) -> None:
    config = world_readable_dir / "inspector.toml"
    config.write_text('station_id = "a"\n')
    config.chmod(0o000)
    # root reads a mode-000 file anyway: as root, run the daemon as `nobody` (setpriv drops every capability),
    # as systemd runs it as `inspector`; without setpriv the case cannot be made as root
    as_root = os.geteuid() == 0
    if as_root and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a mode-000 file is readable to root")
    line = _one_line(_inspector("run", "--config", str(config), as_nobody=as_root))
    assert "cannot be read: permission denied" in line and str(config) in line


def test_a_section_variable_that_is_not_json_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "inspector.toml"
    config.write_text('station_id = "a"\n')
    line = _one_line(_inspector("run", "--config", str(config), INSPECTOR_CAMERA="{not json"))
    assert "INSPECTOR_CAMERA is not valid JSON" in line and "INSPECTOR_CAMERA__" in line


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`VIDEO --model MODEL --config TOML`: three parts and the presence trigger that finds them."""
    base = tmp_path_factory.mktemp("line")
    v = write_conveyor_video(base / "line.avi", n_parts=3)
    return [str(v.video), "--model", str(make_mean_model(base / "model.onnx", size=32)),
            "--config", str(v.video.with_suffix(".toml"))]


def test_replay_json_to_an_unwritable_path_is_refused_before_the_replay(
        line: list[str], tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep\n")
    for out, message in [(tmp_path, "is a directory"), (a_file / "replay.json", "is not a directory")]:
        r = _inspector("replay", *line, "--json", str(out))
        assert message in _one_line(r)
        assert "parts " not in r.stdout   # refused before the replay, not after it
    assert a_file.read_text() == "keep\n"


def test_replay_json_that_cannot_be_written_at_the_end_prints_the_summary(
        line: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports" / "replay.json"
    out.parent.mkdir()
    real_run_station = replay_module.run_station

    def run_then_lose_the_folder(*args: Any, **kwargs: Any) -> Any:
        result = real_run_station(*args, **kwargs)
        out.parent.rmdir()                 # the folder checked at the start is a file by the end of the replay
        out.parent.write_text("not a folder\n")
        return result

    monkeypatch.setattr(replay_module, "run_station", run_then_lose_the_folder)
    assert main(["replay", *line, "--json", str(out)]) == 2
    captured = capsys.readouterr()
    err = [ln for ln in captured.err.strip().splitlines() if ln.startswith("inspector:")]
    assert len(err) == 1 and f"could not write the summary to {out}" in err[0] and "Traceback" not in captured.err
    summary = json.loads(captured.out[captured.out.index("{"):])   # the whole summary, on stdout
    assert summary["parts"] == 3 and summary["frames"] > 0
    assert out.parent.read_text() == "not a folder\n"


def test_replay_json_replaces_an_existing_summary_whole(line: list[str], tmp_path: Path) -> None:
    out = tmp_path / "new" / "replay.json"   # a folder that does not exist yet is created
    r = _inspector("replay", *line, "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["parts"] == 3
    assert [p.name for p in out.parent.iterdir()] == ["replay.json"]   # no temporary file left beside it
