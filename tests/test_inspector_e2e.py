"""End to end with real parts: `inspector replay`/`run` in subprocesses, a tiny real ONNX model through
engines.load_engine, real video files, ZeroMQ subscribers in other processes, systemd's notify socket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import cv2
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
from test_reliability_support import Subscriber

pytestmark = pytest.mark.slow


def test_replay_with_a_listener_in_another_process_gets_every_verdict(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=12)
    model = make_mean_model(tmp_path / "model.onnx", size=32)
    endpoint = "ipc://" + str(tmp_path / "results.ipc")
    listener = start("listen", endpoint, "--count", str(len(v.rows)), "--json", "--timeout", "40",
                     "--save", str(tmp_path / "failed"))
    summary_file = tmp_path / "replay.json"
    replay = subprocess.run(
        inspector_cmd("replay", str(v.video), "--model", str(model), "--config", str(v.video.with_suffix(".toml")),
                      "--ground-truth", str(v.csv), "--publish", endpoint, "--json", str(summary_file)),
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert replay.returncode == 0, replay.stderr
    out, err = listener.communicate(timeout=40)
    assert listener.returncode == 0, (out, err)

    lines = [json.loads(line) for line in out.splitlines()]
    results = [h for h in lines if h.get("type") == "result"]
    assert lines[-1]["gaps"] == 0 and lines[-1]["received"] == len(v.rows)
    assert [h["sequence"] for h in results] == list(range(1, len(v.rows) + 1))  # counted and gapless
    for h, truth in zip(results, v.rows, strict=True):  # one verdict per part, inside its span
        assert truth["first_frame"] <= h["frame"] <= truth["last_frame"]
        assert abs(h["frame"] - truth["center_frame"]) <= 1
        assert h["verdict"] == ("pass" if truth["label"] == "good" else "fail")
        assert h["schema_version"] == 1 and h["station_id"] == "test-line" and h["trigger"] == "presence"
        assert h["model_id"].startswith("meanpixel-") and h["latency_ms"] > 0
        assert [(i["roi"], i["kind"]) for i in h["images"]] == [
            ("center", "input"), ("center", "reconstruction"), ("center", "heatmap")]

    summary = json.loads(summary_file.read_text())
    n_bad = sum(r["label"] != "good" for r in v.rows)
    assert {k: summary[k] for k in ("parts", "passed", "failed", "errors", "accuracy", "auroc")} == {
        "parts": 12, "passed": 12 - n_bad, "failed": n_bad, "errors": 0, "accuracy": 1.0, "auroc": 1.0}
    assert summary["fps"] > 0 and summary["latency_p50_ms"] <= summary["latency_p99_ms"]
    per_part = {p["part_id"]: p for p in summary["per_part"]}
    assert len(per_part) == len(v.rows)
    for truth in v.rows:   # a part's margin is positive exactly when it failed
        p = per_part[truth["part_id"]]
        assert p["label"] == truth["label"] and (p["margin"] > 0) == (p["verdict"] == "fail")
    assert "accuracy 1.0" in replay.stdout

    saved = sorted((tmp_path / "failed").iterdir())
    assert len(saved) == 3 * n_bad  # input, reconstruction and heat map of each failed part
    assert cv2.imread(str(saved[0])).shape == (32, 32, 3)


class NotifySocket:
    """What systemd does for Type=notify: a datagram socket whose path goes to the service in $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []

    def poll(self) -> None:
        while True:
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except (TimeoutError, BlockingIOError):
                return

    def has(self, text: str) -> bool:
        return any(text in m for _, m in self.messages)


def write_config(path: Path, source: Path, model: Path, endpoint: str, **extra: str) -> Path:
    camera = extra.get("camera", "")
    path.write_text(f"""station_id = "e2e"
[camera]
source = "{source}"
fps = 150
reconnect_min_s = 0.1
reconnect_max_s = 0.4
{camera}
[trigger]
mode = "continuous"
every_n = 3
[engine]
path = "{model}"
backend = "onnxruntime"
max_wait_ms = 5
[publish]
bind = "{endpoint}"
images = ["input"]
status_interval_s = 0.2
wait_subscribers = 1
backfill_bind = ""
[control]
bind = ""
[state]
dir = "{path.parent / 'state'}"
""")
    return path


def pump(sub: Subscriber, notify: NotifySocket, done: Callable[[], bool], timeout_s: float) -> None:
    """Receive results, statuses and notify datagrams until `done()` or the timeout."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        sub.receive()
        notify.poll()


def finish(proc: subprocess.Popen[str], sub: Subscriber, notify: NotifySocket) -> tuple[str, str]:
    """Wait for the daemon to exit, then take what it sent last; its stdout and stderr."""
    out, err = proc.communicate(timeout=20)
    sub.receive()
    notify.poll()
    return out, err


def test_sigterm_mid_run_publishes_everything_triggered_and_speaks_sd_notify(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=4, fps=150.0)
    model = make_mean_model(tmp_path / "model.onnx", size=32)
    endpoint = "ipc://" + str(tmp_path / "pub.ipc")
    cfg = write_config(tmp_path / "inspector.toml", v.video, model, endpoint, camera="loop = true")
    notify = NotifySocket(tmp_path / "notify.sock")
    sub = Subscriber(endpoint)
    results, statuses = sub.results, sub.statuses
    proc = start("run", "--config", str(cfg), NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="200000")
    try:
        pump(sub, notify, lambda: len(results) >= 40 or proc.poll() is not None, 30)
        assert len(results) >= 40, proc.stderr.read() if proc.poll() is not None else "too slow"
        proc.send_signal(signal.SIGTERM)
        pump(sub, notify, lambda: any(s.get("final") for s in statuses), 20)
        out, err = finish(proc, sub, notify)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    assert proc.returncode == 0, err
    final = statuses[-1]
    assert final["final"] is True
    # nothing triggered before the signal was lost: triggered = published = received, gapless
    assert final["parts_triggered"] == final["parts_inspected"] == final["last_sequence"] == len(results)
    assert [h["sequence"] for h in results] == list(range(1, len(results) + 1))
    assert all(h["verdict"] in ("pass", "fail") for h in results)
    logs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(entry["event"] == "signal received" for entry in logs)
    assert all(entry.get("station") == "e2e" for entry in logs)
    texts = [m for _, m in notify.messages if not m.startswith("STATUS=")]
    assert any(m.startswith("STATUS=camera open") for _, m in notify.messages)  # for `systemctl status`
    assert texts[0].startswith("READY=1")
    assert texts.count("WATCHDOG=1") >= 2
    assert texts[-1] == "STOPPING=1"


def test_camera_that_appears_later_is_reconnected_with_backoff_and_reported(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "recorded.avi", n_parts=3, fps=150.0)
    model = make_mean_model(tmp_path / "model.onnx", size=32)
    endpoint = "ipc://" + str(tmp_path / "pub.ipc")
    later = tmp_path / "camera.avi"  # missing at start: like an unplugged camera
    cfg = write_config(tmp_path / "inspector.toml", later, model, endpoint)
    notify = NotifySocket(tmp_path / "notify.sock")
    sub = Subscriber(endpoint)
    results, statuses = sub.results, sub.statuses
    proc = start("run", "--config", str(cfg), NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="200000")
    try:
        pump(sub, notify, lambda: any(s["camera"]["state"] == "connecting" and s["camera"]["reconnects"] >= 3
                                      for s in statuses), 20)
        waiting = statuses[-1]["camera"]
        assert waiting["state"] == "connecting" and "no such file" in waiting["error"]
        notify.poll()
        assert not notify.has("READY=1") and not notify.has("WATCHDOG=1")  # no frames, no watchdog
        shutil.copy(v.video, tmp_path / "partial.avi")
        os.replace(tmp_path / "partial.avi", later)  # the camera is plugged in
        pump(sub, notify, lambda: proc.poll() is not None, 30)
        out, err = finish(proc, sub, notify)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    assert proc.returncode == 0, err  # the file ended: a clean end of stream
    assert notify.has("READY=1") and notify.has("STOPPING=1")
    states = [s["camera"]["state"] for s in statuses]
    assert "open" in states or "ended" in states
    assert statuses[-1]["camera"]["state"] == "ended" and statuses[-1]["final"]
    assert len(results) == statuses[-1]["parts_inspected"] > 0
    assert statuses[-1]["frames_captured"] == v.frames
    logs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    retries = [e["retry_in_s"] for e in logs if e["event"] == "camera open failed"]
    assert retries[:4] == [0.1, 0.2, 0.4, 0.4]  # doubling backoff, capped at reconnect_max_s


def test_listen_detects_a_sequence_gap(tmp_path: Path) -> None:
    """A publisher that skips sequence 3: the reference listener reports the gap and the loss."""
    endpoint = "ipc://" + str(tmp_path / "gap.ipc")
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.bind(endpoint)
    listener = start("listen", endpoint, "--count", "3", "--timeout", "20")
    assert pub.poll(20000)  # the listener's subscription arrived
    pub.recv()
    for seq in (1, 2, 4):
        header = {"schema_version": 1, "type": "result", "sequence": seq, "run_id": "r", "part_id": f"p{seq}",
                  "frame": seq, "verdict": "pass", "error": None, "latency_ms": 1.0, "images": [],
                  "rois": [{"name": "center", "score": 1.0, "threshold": 2.0}]}
        pub.send_multipart([b"result", json.dumps(header).encode()])
    out, err = listener.communicate(timeout=20)
    pub.close(0)
    ctx.term()
    assert listener.returncode == 0, err
    assert "GAP: 1 result(s) lost before #4" in out
    assert "received 3 results, 1 gap(s), 1 lost" in out
