#!/usr/bin/env python
"""Soak test of the daemon: `inspector run` over a short video looped to tens of thousands of frames,
played like a fast camera (`--fps`, default 600), journaling (synchronous=FULL), storing failed parts'
images and publishing to a subscriber, with the process's RSS and open file descriptors sampled.
Prints a table and writes docs/research/bench/soak.json.

    .venv/bin/python scripts/soak.py [--frames 50000] [--fps 600] [--out docs/research/bench/soak.json]

The model is the tests' tiny ONNX graph (score = mean pixel) through engines.load_engine, so the
figures are the daemon's own (capture, trigger, batching, journal, image store, publishing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_inspector_support import make_mean_model, write_conveyor_video  # noqa: E402


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _config(work: Path, video: Path, model: Path, frames: int, fps: float, endpoint: str) -> Path:
    path = work / "soak.toml"
    path.write_text(f"""station_id = "soak"
[camera]
source = "{video}"
loop = true
max_frames = {frames}
fps = {fps}
queue_frames = 64
[[rois]]
name = "center"
x = 32
y = 0
width = 32
height = 32
[trigger]
mode = "continuous"
[engine]
path = "{model}"
backend = "onnxruntime"
max_batch = 16
max_wait_ms = 2
[publish]
bind = "{endpoint}"
backfill_bind = ""
send_images = "failed"
images = ["input", "heatmap"]
status_interval_s = 0.5
wait_subscribers = 1
[state]
dir = "{work / 'state'}"
image_quota_bytes = 2000000
[logging]
level = "warning"
""")
    return path


def soak(frames: int = 50_000, fps: float = 600.0, sample_s: float = 0.5, out: Path | None = None,
         echo: bool = True) -> dict[str, Any]:
    """Run the soak; returns the figures (and writes them to `out` as JSON)."""
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        video = write_conveyor_video(work / "line.avi", n_parts=6, size=32).video  # 32x96, ~100 frames
        model = make_mean_model(work / "model.onnx", size=32)
        endpoint = f"ipc://{work}/pub.ipc"
        config = _config(work, video, model, frames, fps, endpoint)
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 1_000_000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(endpoint)
        env = {**os.environ, "PYTHONPATH": str(REPO), "ENGINES_ORT_THREADS": "1"}
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "inspector", "run", "--config", str(config)], cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        samples: list[dict[str, Any]] = []
        received, status, next_sample = 0, {}, 0.0
        try:
            while proc.poll() is None:
                until = time.monotonic() + 0.1
                while time.monotonic() < until and sub.poll(20):
                    topic, header, *_ = sub.recv_multipart()
                    if topic == b"result":
                        received += 1
                    else:
                        status = json.loads(header)
                now = time.monotonic() - t0
                if now >= next_sample and proc.poll() is None and status:
                    next_sample = now + sample_s
                    with_open = {"t_s": round(now, 2), "frames": status["frames_captured"],
                                 "parts": status["parts_inspected"], "rss_mib": round(_rss_kib(proc.pid) / 1024, 1),
                                 "fds": _fds(proc.pid)}
                    samples.append(with_open)
                    if echo:
                        print(f"{with_open['t_s']:8.1f} {with_open['frames']:8d} {with_open['parts']:8d} "
                              f"{with_open['rss_mib']:8.1f} {with_open['fds']:5d}", flush=True)
            while sub.poll(300):
                topic, header, *_ = sub.recv_multipart()
                if topic == b"result":
                    received += 1
                else:
                    status = json.loads(header)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
            sub.close(0)
            ctx.term()
        seconds = time.monotonic() - t0
        with sqlite3.connect(work / "state" / "journal.db") as conn:
            journaled = conn.execute("SELECT count(*) FROM verdicts").fetchone()[0]
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        image_bytes = sum(p.stat().st_size for p in (work / "state" / "images").rglob("*") if p.is_file())
    steady = [s for s in samples if frames * 0.2 <= s["frames"] < frames] or samples  # not start-up or exit
    summary = {
        "frames_requested": frames, "camera_fps": fps, "exit_code": proc.returncode, "seconds": round(seconds, 1),
        "frames_captured": status.get("frames_captured"), "frames_dropped": status.get("frames_dropped"),
        "parts_inspected": status.get("parts_inspected"), "results_received": received, "journaled": journaled,
        "journal_integrity": integrity, "journal_state": status.get("journal", {}).get("state"),
        "image_store_bytes": image_bytes, "image_quota_bytes": 2_000_000,
        "parts_per_s": round((status.get("parts_inspected") or 0) / seconds, 1),
        "rss_mib_first": samples[0]["rss_mib"] if samples else None,
        "rss_mib_steady_start": steady[0]["rss_mib"] if steady else None,
        "rss_mib_end": samples[-1]["rss_mib"] if samples else None,
        "rss_mib_max": max((s["rss_mib"] for s in samples), default=None),
        "rss_growth_steady_mib": round(steady[-1]["rss_mib"] - steady[0]["rss_mib"], 1) if steady else None,
        "fds_first": samples[0]["fds"] if samples else None,  # before every socket and file is open
        "fds_min": min((s["fds"] for s in steady), default=None),  # from 20 % of the frames on
        "fds_max": max((s["fds"] for s in steady), default=None),
        "samples": len(samples), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "stderr_tail": err[-500:] if proc.returncode else "",
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1) + "\n")
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=50_000)
    p.add_argument("--fps", type=float, default=600.0, help="the rate the looped video is played at")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "research" / "bench" / "soak.json")
    args = p.parse_args()
    print(f"{'t_s':>8} {'frames':>8} {'parts':>8} {'rss_MiB':>8} {'fds':>5}")
    summary = soak(args.frames, args.fps, out=args.out)
    print(json.dumps(summary, indent=1))
    return 0 if summary["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
