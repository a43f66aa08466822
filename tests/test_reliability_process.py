"""The process dies or is told to stop: SIGKILL mid-replay then a restart, SIGTERM mid-run; and a bad
model stops the daemon before anything started (no socket, no READY, no journal)."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import zmq
from test_inspector_support import (
    REPO,
    inspector_cmd,
    make_mean_model,
    start,
    subprocess_env,
    write_conveyor_video,
)
from test_reliability_support import (
    Subscriber,
    fresh_logging,  # noqa: F401 - a fixture, used by pytestmark
    integrity,
    journal_rows,
)

from inspector.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_logging")]


def _journaled(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM verdicts").fetchone()[0])
    except sqlite3.Error:
        return 0


def _config(tmp_path: Path, **sections: str) -> Path:
    path = tmp_path / "c.toml"
    text = '[trigger]\nmode = "continuous"\n[publish]\nimages = ["input"]\nstatus_interval_s = 0.05\n'
    for name, body in sections.items():
        text += f"[{name}]\n{body}\n"
    path.write_text(text)
    return path


def test_sigkill_during_a_replay_then_a_restart_loses_no_committed_verdict(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=2)
    model = make_mean_model(tmp_path / "model.onnx")
    state, endpoint = tmp_path / "state", "ipc://" + str(tmp_path / "pub.ipc")
    replay = ["replay", str(v.video), "--model", str(model), "--config", str(_config(tmp_path)), "--state", str(state)]
    sub = Subscriber(endpoint)
    proc = start(*replay, "--frames", "1000000", "--publish", endpoint)
    try:
        assert sub.until(lambda: len(sub.results) >= 300, 30), proc.stderr.read() if proc.poll() else "slow"
        proc.kill()  # SIGKILL: no handler, no flush, mid-transaction perhaps
        proc.wait(10)
        sub.receive(200)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    db = state / "journal.db"
    assert integrity(db) == "ok"
    rows = journal_rows(db)
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(1, len(rows) + 1))  # gapless
    by_seq = {r["seq"]: r["header_json"] for r in rows}
    published = sub.results  # journaled before published: every one received is in the journal, byte-identical
    assert all(json.dumps(h) == by_seq[h["sequence"]] for h in published), "a published verdict is not journaled"
    last = seqs[-1]

    again = subprocess.run(inspector_cmd(*replay, "--frames", "50", "--json", str(tmp_path / "s.json")),
                           cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    rows = journal_rows(db)
    assert [r["seq"] for r in rows] == list(range(1, last + 51))  # the sequence continues after the kill
    assert json.loads(rows[-1]["header_json"])["run_id"] != json.loads(rows[0]["header_json"])["run_id"]
    with sqlite3.connect(db) as conn:
        starts = conn.execute("SELECT start_id, last_seq FROM starts ORDER BY start_id").fetchall()
    assert starts == [(1, 0), (2, last)]


def test_sigterm_exits_cleanly_with_everything_published_and_journaled(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=2, fps=400.0)
    model = make_mean_model(tmp_path / "model.onnx")
    state, endpoint = tmp_path / "state", "ipc://" + str(tmp_path / "pub.ipc")
    cfg = _config(tmp_path, camera=f'source = "{v.video}"\nloop = true\nfps = 400',
                  engine=f'path = "{model}"\nbackend = "onnxruntime"\nmax_wait_ms = 5',
                  state=f'dir = "{state}"')  # synchronous = FULL, as in production
    cfg.write_text(cfg.read_text().replace("[publish]\n", f'[publish]\nbind = "{endpoint}"\nbackfill_bind = ""\n'
                                                           "wait_subscribers = 1\n"))
    sub = Subscriber(endpoint)
    proc = start("run", "--config", str(cfg))
    try:
        assert sub.until(lambda: len(sub.results) >= 200, 30), proc.stderr.read() if proc.poll() else "slow"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        sub.until(lambda: any(s.get("final") for s in sub.statuses), 5)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    assert proc.returncode == 0, err
    final = sub.statuses[-1]
    rows = journal_rows(state / "journal.db")
    assert final["final"] and final["journal"]["state"] == "ok" and final["journal"]["pending"] == 0
    inspected = final["parts_inspected"]
    # parts triggered = inspected = published = received = journaled, the same numbers in order
    assert final["parts_triggered"] == inspected == final["last_sequence"] == len(sub.results) == len(rows)
    assert final["journal"]["appended"] == inspected
    assert [r["seq"] for r in rows] == [h["sequence"] for h in sub.results] == list(range(1, inspected + 1))
    assert integrity(state / "journal.db") == "ok"


def _endpoint_is_free(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    with socket.socket() as s:
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _corrupt(model: Path, how: str) -> None:
    manifest = model.with_suffix(".json")
    if how == "missing":
        model.unlink()
    elif how == "truncated":  # the manifest's sha256 no longer matches
        model.write_bytes(model.read_bytes()[:100])
    elif how == "garbage":  # sha256 updated: ONNX Runtime itself must refuse it
        from common.manifest import sha256_file

        model.write_bytes(b"\x08\x07garbage" * 50)
        data = json.loads(manifest.read_text())
        data["onnx_sha256"] = sha256_file(model)
        manifest.write_text(json.dumps(data))
    elif how == "mismatched":  # the manifest of another model (48 px) beside this graph (32 px)
        other = make_mean_model(model.parent / "other" / "m.onnx", size=48)
        data = json.loads(other.with_suffix(".json").read_text())
        data["onnx_sha256"] = json.loads(manifest.read_text())["onnx_sha256"]
        manifest.write_text(json.dumps(data))
    elif how == "no_manifest":
        manifest.unlink()


@pytest.mark.parametrize("how", ["missing", "truncated", "garbage", "mismatched", "no_manifest"])
def test_bad_model_exits_2_with_a_clear_message_and_nothing_started(
        tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=1)
    model = make_mean_model(tmp_path / "model.onnx")
    _corrupt(model, how)
    pub, backfill, trigger = _port(), _port(), _port()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[camera]\nsource = "{v.video}"\n[trigger]\nmode = "external"\nendpoint = "{trigger}"\n'
                   f'[engine]\npath = "{model}"\n[publish]\nbind = "{pub}"\nbackfill_bind = "{backfill}"\n'
                   f'[state]\ndir = "{tmp_path / "state"}"\n')
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("inspector: engine") and "Traceback" not in err and len(err.splitlines()) <= 3
    assert str(model.name) in err or "model" in err
    assert all(_endpoint_is_free(e) for e in (pub, backfill, trigger))  # no socket was ever bound
    with pytest.raises(TimeoutError):
        notify.recv(100)  # no READY (no datagram at all)
    notify.close()
    assert not (tmp_path / "state").exists()  # no journal, no start recorded


def _pub_only(endpoint: str) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.bind(endpoint)
    return ctx, sock


def test_an_endpoint_already_in_use_exits_2_and_releases_what_it_bound(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=1)
    model = make_mean_model(tmp_path / "model.onnx")
    pub, backfill = _port(), _port()
    ctx, squatter = _pub_only(backfill)  # another process holds the backfill port
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[camera]\nsource = "{v.video}"\n[engine]\npath = "{model}"\n'
                   f'[publish]\nbind = "{pub}"\nbackfill_bind = "{backfill}"\n[state]\ndir = "{tmp_path / "s"}"\n')
    t0 = time.monotonic()
    proc = subprocess.run(inspector_cmd("run", "--config", str(cfg)), cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=30)
    squatter.close(0)
    ctx.term()
    assert proc.returncode == 2, proc.stderr
    assert "publish.backfill_bind" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 20 and _endpoint_is_free(pub)


