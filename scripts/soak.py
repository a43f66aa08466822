#!/usr/bin/env python
"""Soak test of the daemon: `inspector run` over a looped video played like a camera, journaling, storing failed
parts' images and publishing to a subscriber, with the process's RSS, open file descriptors, CPU time, journal and
image-store sizes, parts/s and latency sampled over time. Prints a table, writes JSON and a 4-panel plot beside it.

Built-in run (no --video): the tests' tiny ONNX graph (score = mean pixel) on a synthesized 32 px conveyor,
continuous trigger, played at 600 fps for 50,000 frames, images under a 2 MB quota, so the figures are the daemon's
own (capture, trigger, batching, journal, image store, publishing):

    .venv/bin/python scripts/soak.py [--frames 50000] [--fps 600] [--out docs/research/bench/soak.json]

A real station: an exported model, a recorded line and its configuration (the ROIs and trigger; the journal's and
image store's retention stay the configuration's own, i.e. the defaults a user gets unless the file sets them),
looped at the camera's rate for a duration, the results checked against ground truth loop by loop:

    .venv/bin/python scripts/soak.py --model build/demo/model.onnx --video build/demo/line.mp4 \
        --config build/demo/line.toml --ground-truth build/demo/line.csv --fps 30 --minutes 65 \
        --out docs/research/bench/shipped/soak-128.json

Only the camera (source, fps, loop), the model path, the endpoints (ipc sockets in the work folder) and state.dir
(the work folder) are replaced in the configuration; everything else is the file's, or the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip install tomli
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from common.ground_truth import TruthPart, read_ground_truth  # noqa: E402
from synth.video import count_frames  # noqa: E402

BUILTIN_QUOTA = 2_000_000
TINY = "the tests' tiny graph (score = mean pixel)"


# -- pure helpers (tests/test_soak.py) ------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile of values, rounded to 0.001, or None for no values."""
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 3) if values else None


def rates(prev: dict[str, Any] | None, cur: dict[str, Any]) -> dict[str, float | None]:
    """parts/s, frames/s read and the daemon's CPU share (1.0 = one core) between two samples."""
    if prev is None or cur["t_s"] <= prev["t_s"]:
        return {"parts_per_s": None, "frames_per_s": None, "cpu_cores": None}
    dt = cur["t_s"] - prev["t_s"]
    return {"parts_per_s": round((cur["parts"] - prev["parts"]) / dt, 2),
            "frames_per_s": round((cur["frames"] - prev["frames"]) / dt, 2),
            "cpu_cores": round((cur["cpu_s"] - prev["cpu_s"]) / dt, 3)}


def window_rates(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    """frames/s read and parts/s published from the first sample to the last (start-up and shutdown excluded)."""
    if len(samples) < 2 or samples[-1]["t_s"] <= samples[0]["t_s"]:
        return {"frames_per_s": None, "parts_per_s": None}
    a, b = samples[0], samples[-1]
    dt = b["t_s"] - a["t_s"]
    return {"frames_per_s": round((b["frames"] - a["frames"]) / dt, 2), "parts_per_s": round((b["parts"] - a["parts"]) / dt, 3)}


def slope_per_hour(samples: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares growth of samples[key] per hour of t_s (None with fewer than two distinct times)."""
    pts = [(s["t_s"], s[key]) for s in samples if s.get(key) is not None]
    if len(pts) < 2 or len({t for t, _ in pts}) < 2:
        return None
    t, y = np.array(pts, dtype=np.float64).T
    return round(float(np.polyfit(t, y, 1)[0]) * 3600.0, 3)


def steady_window(samples: list[dict[str, Any]], frames: int | None, seconds: float | None) -> list[dict[str, Any]]:
    """The samples past start-up and before the end: from 20 % of the frames (a frame-limited run) or of the
    seconds (a timed run, or one pass of a video: the last sample's time) up to the limit; all when none fit."""
    if not samples:
        return []
    if frames:
        chosen = [s for s in samples if frames * 0.2 <= s["frames"] < frames]
    else:
        end = seconds if seconds else samples[-1]["t_s"]
        chosen = [s for s in samples if end * 0.2 <= s["t_s"] <= end]
    return chosen or samples


def memory_summary(samples: list[dict[str, Any]], steady: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS and open descriptors at start, over the steady window and at the end."""
    if not samples:
        return {}
    return {
        "rss_mib_first": samples[0]["rss_mib"],
        "rss_mib_steady_start": steady[0]["rss_mib"],
        "rss_mib_end": samples[-1]["rss_mib"],
        "rss_mib_max": max(s["rss_mib"] for s in samples),
        "rss_growth_steady_mib": round(steady[-1]["rss_mib"] - steady[0]["rss_mib"], 1),
        "rss_slope_steady_mib_per_h": slope_per_hour(steady, "rss_mib"),
        "fds_first": samples[0]["fds"],  # before every socket and file is open
        "fds_min": min(s["fds"] for s in steady),
        "fds_max": max(s["fds"] for s in steady),
    }


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"TOML configuration value {v} is not finite")
        return repr(v)
    if isinstance(v, (str, Path)):
        return json.dumps(str(v))  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def toml_dumps(data: dict[str, Any]) -> str:
    """An inspector configuration as TOML: top-level values, [section] tables (their own tables inline) and
    [[section]] arrays of tables (the ROIs). Enough for inspector.toml, not a general TOML writer."""
    top = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, (dict, list)) or
           (isinstance(v, list) and not any(isinstance(x, dict) for x in v))]
    blocks = ["\n".join(top)] if top else []
    for k, v in data.items():
        if isinstance(v, dict):
            blocks.append("\n".join([f"[{k}]", *(f"{kk} = {toml_value(vv)}" for kk, vv in v.items())]))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                blocks.append("\n".join([f"[[{k}]]", *(f"{kk} = {toml_value(vv)}" for kk, vv in item.items())]))
    return "\n\n".join(blocks) + "\n"


def evaluate_loops(headers: list[dict[str, Any]], truth: list[TruthPart], loop_frames: int,
                   loops: int) -> list[dict[str, Any]]:
    """Accuracy and AUROC per complete pass of a looped video: a result belongs to pass frame // loop_frames and is
    matched to the ground truth at frame % loop_frames (inspector replay's rules: first verdict decides)."""
    from inspector.tools.replay import evaluate

    by_loop: list[list[dict[str, Any]]] = [[] for _ in range(loops)]
    for h in headers:
        k = h["frame"] // loop_frames
        if k < loops:
            by_loop[k].append({**h, "frame": h["frame"] % loop_frames})
    out = []
    for k, hs in enumerate(by_loop):
        e = evaluate(hs, truth)
        out.append({"loop": k, **{key: e[key] for key in ("truth_parts", "accuracy", "auroc", "missed", "duplicates",
                                                         "spurious")}, "wrong": len(e["wrong"])})
    return out


def tree_bytes(root: Path) -> tuple[int, int]:
    """(bytes, files) of the regular files under root (0, 0 when it does not exist)."""
    total, files = 0, 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
                files += 1
            except FileNotFoundError:  # the quota deleted it meanwhile
                pass
    return total, files


def journal_files(state_dir: Path) -> tuple[int, int]:
    """(journal.db bytes, its write-ahead log's (-wal) bytes); the fixed-size -shm index is not counted."""
    db, wal = state_dir / "journal.db", state_dir / "journal.db-wal"
    return (db.stat().st_size if db.exists() else 0), (wal.stat().st_size if wal.exists() else 0)


def journal_bytes(state_dir: Path) -> int:
    """journal.db plus its write-ahead log (-wal)."""
    return sum(journal_files(state_dir))


# -- the process ----------------------------------------------------------------------------------------------

def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def builtin_config(video: Path, model: Path, frames: int, fps: float, endpoint: str, state: Path) -> dict[str, Any]:
    """The built-in soak's configuration (tiny graph, 32 px conveyor, continuous trigger, 2 MB image quota)."""
    return {"station_id": "soak",
            "camera": {"source": str(video), "loop": True, "max_frames": frames, "fps": fps, "queue_frames": 64},
            "rois": [{"name": "center", "x": 32, "y": 0, "width": 32, "height": 32}],
            "trigger": {"mode": "continuous"},
            "engine": {"path": str(model), "backend": "onnxruntime", "max_batch": 16, "max_wait_ms": 2},
            "publish": {"bind": endpoint, "backfill_bind": "", "send_images": "failed", "images": ["input", "heatmap"],
                        "status_interval_s": 0.5, "wait_subscribers": 1},
            "state": {"dir": str(state), "image_quota_bytes": BUILTIN_QUOTA},
            "logging": {"level": "warning"}}


def station_config(base: Path | None, video: Path, model: Path, fps: float | None, loop: bool, frames: int | None,
                   work: Path) -> dict[str, Any]:
    """BASE (a station's TOML; None = defaults) with the camera, model, endpoints and state.dir replaced."""
    data: dict[str, Any] = tomllib.loads(base.read_text()) if base is not None else {}
    camera = data.setdefault("camera", {})
    camera.update({"source": str(video.resolve()), "loop": loop, "max_frames": frames or 0})
    if fps:
        camera["fps"] = fps
    data.setdefault("engine", {})["path"] = str(model.resolve())
    publish = data.setdefault("publish", {})
    publish["bind"] = f"ipc://{work}/pub.ipc"
    if publish.get("backfill_bind", "tcp://127.0.0.1:5558"):  # the default binds one: keep it, on a free socket
        publish["backfill_bind"] = f"ipc://{work}/backfill.ipc"
    publish["wait_subscribers"] = max(1, int(publish.get("wait_subscribers", 0)))  # the sampler misses nothing
    data.setdefault("state", {})["dir"] = str(work / "state")
    return data


def retention(config: Path) -> dict[str, Any]:
    """The effective journal / image-store retention and whether it is the defaults (what a user gets)."""
    from inspector.config import StateConfig, load_config

    st, default = load_config(config).state, StateConfig()
    keys = ("retention_days", "retention_rows", "image_quota_bytes", "store_images", "synchronous")
    changed = [k for k in keys if getattr(st, k) != getattr(default, k)]
    return {**{k: getattr(st, k) for k in keys},
            "source": "the configuration's defaults (what a user gets)" if not changed else
            f"the configuration's own; differs from the defaults in {', '.join(changed)}"}


def engine_threads(config: Path, env: dict[str, str] | None = None) -> int:
    """The ONNX Runtime threads the daemon gives the engine with this configuration in environment ENV (default
    ours): inspector.stages.scoring.engine_cpu_threads's rule, [engine] cpu_threads, else ENGINES_ORT_THREADS,
    else all cores but one."""
    from common.host import available_cores
    from inspector.config import load_config

    env = dict(os.environ) if env is None else env
    cpu_threads = load_config(config).engine.cpu_threads
    if cpu_threads is not None:
        return cpu_threads
    if env.get("ENGINES_ORT_THREADS"):
        return max(1, int(env["ENGINES_ORT_THREADS"]))
    return max(1, available_cores() - 1)


class Observed:
    """What the sampler saw of one daemon run. (A plain class: tests load this script without registering it as a
    module, which a dataclass under `from __future__ import annotations` needs.)"""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self.status: dict[str, Any] = {}  # the last status message
        self.received = 0  # results received
        self.latencies_ms: list[float] = []  # every result's capture -> publish latency
        self.headers: list[dict[str, Any]] = []  # frame, verdict, ROI scores (with ground truth only)
        self.returncode: int | None = None
        self.seconds = 0.0
        self.stopped = "the daemon ended by itself"
        self.stderr_tail = ""


def observe(config: Path, work: Path, *, sample_s: float, minutes: float | None, env: dict[str, str],
            keep_headers: bool, echo: bool) -> Observed:
    """Start `inspector run --config CONFIG`, subscribe to it, sample it until it ends (or SIGTERM after MINUTES)."""
    endpoint = str(tomllib.loads(config.read_text())["publish"]["bind"])
    state = Path(tomllib.loads(config.read_text())["state"]["dir"])
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1_000_000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    o = Observed()
    window: list[float] = []

    def take(parts: list[bytes]) -> None:
        topic, header = parts[0], json.loads(parts[1])
        if topic == b"result":
            o.received += 1
            o.latencies_ms.append(header["latency_ms"])
            window.append(header["latency_ms"])
            if keep_headers:
                o.headers.append({"frame": header["frame"], "verdict": header["verdict"],
                                  "rois": [{"score": r["score"], "threshold": r["threshold"]} for r in header["rois"]]})
        elif topic == b"status":  # not the `preview` topic
            o.status = header

    log_path, err_path = work / "daemon.log", work / "daemon.err"
    t0 = time.monotonic()
    with log_path.open("w") as log, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "inspector", "run", "--config", str(config)], cwd=REPO,
                                env=env, stdout=log, stderr=err)
    next_sample, term_at = 0.0, None
    try:
        while proc.poll() is None:
            until = time.monotonic() + 0.1
            while time.monotonic() < until and sub.poll(20):
                take(sub.recv_multipart())
            now = time.monotonic() - t0
            if minutes is not None and term_at is None and now >= minutes * 60:
                proc.send_signal(signal.SIGTERM)  # a clean stop: drain, publish, final status, exit 0
                term_at, o.stopped = now, f"SIGTERM after {minutes:g} min"
            if term_at is not None and now - term_at > 120:
                proc.kill()
                o.stopped += "; killed: not ended 120 s after SIGTERM"
            if now >= next_sample and proc.poll() is None and o.status and term_at is None:
                next_sample = now + sample_s
                try:
                    s = sample(proc.pid, state, o.status, now, o.received, window)
                except (FileNotFoundError, ProcessLookupError):  # it ended between poll and /proc
                    continue
                window.clear()
                s.update(rates(o.samples[-1] if o.samples else None, s))
                o.samples.append(s)
                if echo:
                    print(format_row(s), flush=True)
        while sub.poll(300):
            take(sub.recv_multipart())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        sub.close(0)
        ctx.term()
    o.returncode, o.seconds = proc.returncode, time.monotonic() - t0
    o.stderr_tail = err_path.read_text()[-500:] if proc.returncode else ""
    return o


def sample(pid: int, state: Path, status: dict[str, Any], now: float, received: int,
           window: list[float]) -> dict[str, Any]:
    images, image_files = tree_bytes(state / "images")
    db, wal = journal_files(state)
    return {"t_s": round(now, 2), "frames": status["frames_captured"], "frames_examined": status["frames_examined"],
            "frames_dropped": sum(status["frames_dropped"].values()), "parts": status["parts_inspected"],
            "received": received, "rss_mib": round(_rss_kib(pid) / 1024, 1), "fds": _fds(pid),
            "cpu_s": round(_cpu_s(pid), 2), "journal_bytes": db + wal, "journal_db_bytes": db, "journal_wal_bytes": wal,
            "image_store_bytes": images,
            "image_store_files": image_files, "latency_p50_ms": percentile(window, 50),
            "latency_p99_ms": percentile(window, 99), "status_latency_p50_ms": status.get("latency_p50_ms"),
            "status_latency_p99_ms": status.get("latency_p99_ms")}


HEADER = (f"{'t_s':>8} {'frames':>8} {'parts':>7} {'parts/s':>8} {'rss_MiB':>8} {'fds':>4} {'cpu':>5} "
          f"{'journal_MB':>10} {'images_MB':>9} {'p50_ms':>7} {'p99_ms':>7}")


def format_row(s: dict[str, Any]) -> str:
    def num(v: float | None, fmt: str) -> str:
        return format(v, fmt) if v is not None else "-"
    return (f"{s['t_s']:8.1f} {s['frames']:8d} {s['parts']:7d} {num(s.get('parts_per_s'), '8.1f'):>8} "
            f"{s['rss_mib']:8.1f} {s['fds']:4d} {num(s.get('cpu_cores'), '5.2f'):>5} "
            f"{s['journal_bytes'] / 1e6:10.2f} {s['image_store_bytes'] / 1e6:9.2f} "
            f"{num(s['latency_p50_ms'], '7.1f'):>7} {num(s['latency_p99_ms'], '7.1f'):>7}")


# -- the soak -------------------------------------------------------------------------------------------------

def soak(frames: int | None = 50_000, fps: float | None = 600.0, sample_s: float = 0.5, out: Path | None = None,
         echo: bool = True, *, model: Path | None = None, video: Path | None = None, config: Path | None = None,
         ground_truth: Path | None = None, minutes: float | None = None, work: Path | None = None) -> dict[str, Any]:
    """Run the soak; returns the summary (and writes it with the samples to `out` as JSON, a plot beside it).

    Without `video`: the built-in tiny graph and conveyor. With `video`: MODEL on it with CONFIG's station (loop
    when `frames` or `minutes` is given; once through otherwise), played at `fps` (None: the config's rate)."""
    if video is None and (config is not None or ground_truth is not None):
        raise ValueError("--config and --ground-truth go with --video")
    if minutes is not None:
        frames = None
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="soak-", dir=work) as tmp:
        wd = Path(tmp)
        if video is None:
            from test_inspector_support import make_mean_model, write_conveyor_video

            clip = write_conveyor_video(wd / "line.avi", n_parts=6, size=32).video  # 32x96, ~100 frames
            mdl = model or make_mean_model(wd / "model.onnx", size=32)
            data = builtin_config(clip, mdl, frames or 0, fps or 600.0, f"ipc://{wd}/pub.ipc", wd / "state")
            what = f"built-in: {TINY if model is None else model} on a 32 px conveyor"
        else:
            if model is None:
                raise ValueError("--video needs --model")
            data = station_config(config, video, model, fps, bool(frames or minutes), frames, wd)
            what = f"{model} on {video} ({config or 'default configuration'})"
        cfg_path = wd / "soak.toml"
        cfg_path.write_text(toml_dumps(data))
        kept = retention(cfg_path)
        if video is None:
            kept["source"] = f"the built-in soak's {BUILTIN_QUOTA:,} B image quota (to exercise it); else the defaults"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if video is None:
            env["ENGINES_ORT_THREADS"] = "1"
        threads = engine_threads(cfg_path, env)
        if echo:
            print(f"soak: {what}; retention: journal {kept['retention_days']:g} days / {kept['retention_rows']:,} rows, "
                  f"images {kept['image_quota_bytes']:,} B of {kept['store_images']} ({kept['source']})", flush=True)
            print(HEADER, flush=True)
        o = observe(cfg_path, wd, sample_s=sample_s, minutes=minutes, env=env,
                    keep_headers=ground_truth is not None, echo=echo)
        state = wd / "state"
        with sqlite3.connect(state / "journal.db") as conn:
            journaled = conn.execute("SELECT count(*) FROM verdicts").fetchone()[0]
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        image_bytes, image_files = tree_bytes(state / "images")
        final_journal = journal_bytes(state)
        config_text = cfg_path.read_text()
    steady = steady_window(o.samples, frames, minutes * 60 if minutes else None)
    status = o.status
    summary: dict[str, Any] = {
        "what": what, "frames_requested": frames, "minutes_requested": minutes,
        "camera_fps": data["camera"].get("fps"), "stopped": o.stopped, "exit_code": o.returncode,
        "seconds": round(o.seconds, 1), "frames_captured": status.get("frames_captured"),
        "frames_dropped": status.get("frames_dropped"), "parts_triggered": status.get("parts_triggered"),
        "parts_inspected": status.get("parts_inspected"), "results_received": o.received, "journaled": journaled,
        "journal_integrity": integrity, "journal_state": status.get("journal", {}).get("state"),
        "journal_bytes": final_journal, "image_store_bytes": image_bytes, "image_store_files": image_files,
        "image_quota_bytes": kept["image_quota_bytes"], "retention": kept,
        "parts_per_s": round((status.get("parts_inspected") or 0) / o.seconds, 2),  # start-up and drain included
        "sampled": {"what": "from the first sample to the last", **window_rates(o.samples)},
        "latency_p50_ms": percentile(o.latencies_ms, 50), "latency_p99_ms": percentile(o.latencies_ms, 99),
        "latency_measured": "capture (frame read) -> publish (result built, before the journal commit and send), "
                            "from every result header received",
        **memory_summary(o.samples, steady),
        "journal_mb_per_h": _mb(slope_per_hour(steady, "journal_bytes")),
        "journal_db_mb_per_h": _mb(slope_per_hour(steady, "journal_db_bytes")),  # the WAL is reused once checkpointed
        "journal_wal_bytes_max": max((s["journal_wal_bytes"] for s in o.samples), default=None),
        "image_store_mb_per_h": _mb(slope_per_hour(steady, "image_store_bytes")),
        "cpu_cores_mean": round(o.samples[-1]["cpu_s"] / o.samples[-1]["t_s"], 3) if o.samples else None,
        "samples": len(o.samples), "sample_s": sample_s, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "engine_threads": threads,
        "stderr_tail": o.stderr_tail,
    }
    if ground_truth is not None and video is not None:
        truth, n = read_ground_truth(ground_truth), count_frames(video)
        loops = evaluate_loops(o.headers, truth, n, (status.get("frames_captured") or 0) // n)
        accs = [x["accuracy"] for x in loops if x["accuracy"] is not None]
        summary["ground_truth"] = {"video_frames": n, "complete_loops": len(loops),
                                   "accuracy_mean": round(float(np.mean(accs)), 4) if accs else None,
                                   "accuracy_min": min(accs, default=None), "per_loop": loops}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"summary": summary, "samples": o.samples, "config_toml": config_text}, indent=1)
                       + "\n")
        plot(o.samples, out.with_suffix(".png"), what)
    return summary


def _mb(v: float | None) -> float | None:
    return None if v is None else round(v / 1e6, 3)


def plot(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    """Four panels over time: RSS, open fds, journal + image store MB, parts/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60 for s in samples]
    fig, ax = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    ax[0].plot(t, [s["rss_mib"] for s in samples])
    ax[0].set_ylabel("RSS (MiB)")
    ax[1].plot(t, [s["fds"] for s in samples], drawstyle="steps-post")
    ax[1].set_ylabel("open fds")
    j = [s["journal_bytes"] / 1e6 for s in samples]
    im = [s["image_store_bytes"] / 1e6 for s in samples]
    ax[2].plot(t, [s["journal_db_bytes"] / 1e6 for s in samples], label="journal.db")
    ax[2].plot(t, [s["journal_wal_bytes"] / 1e6 for s in samples], label="journal.db-wal")
    ax[2].plot(t, im, label="image store")
    ax[2].plot(t, [a + b for a, b in zip(j, im, strict=True)], label="total", linestyle="--")
    ax[2].set_ylabel("MB on disk")
    ax[2].legend(loc="upper left", fontsize=8)
    ax[3].plot(t, [s["parts_per_s"] for s in samples])
    ax[3].set_ylabel("parts/s")
    ax[3].set_xlabel("minutes")
    for a in ax:
        a.grid(alpha=0.3)
    fig.suptitle(f"soak: {title}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=None, help="frames to read, looping the video (built-in: 50,000)")
    p.add_argument("--minutes", type=float, default=None, help="loop the video this long, then SIGTERM (overrides "
                                                                "--frames)")
    p.add_argument("--fps", type=float, default=None, help="the rate the video is played at (built-in: 600; with "
                                                           "--video: the config's camera.fps, else the file's)")
    p.add_argument("--model", type=Path, default=None, help="MODEL.onnx (built-in: the tests' tiny graph)")
    p.add_argument("--video", type=Path, default=None, help="a recorded line, e.g. build/demo/line.mp4")
    p.add_argument("--config", type=Path, default=None, help="with --video: the station's TOML (ROIs, trigger, ...)")
    p.add_argument("--ground-truth", type=Path, default=None, help="with --video: its CSV; accuracy per loop")
    p.add_argument("--sample-s", type=float, default=None, help="seconds between samples (0.5; 10 with --minutes)")
    p.add_argument("--work", type=Path, default=None, help="folder for the temporary state (default: the system's)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "research" / "bench" / "soak.json",
                   help="JSON; the plot goes beside it as .png")
    args = p.parse_args()
    if args.video is None and (args.config or args.ground_truth):
        p.error("--config and --ground-truth go with --video")
    if args.video is not None and args.model is None:
        p.error("--video needs --model")
    frames = args.frames if args.frames is not None or args.video is not None else 50_000
    fps = args.fps if args.fps is not None or args.video is not None else 600.0
    sample_s = args.sample_s or (10.0 if args.minutes else 0.5)
    summary = soak(frames, fps, sample_s, out=args.out, model=args.model, video=args.video, config=args.config,
                   ground_truth=args.ground_truth, minutes=args.minutes, work=args.work)
    gt = summary.pop("ground_truth", None)
    print(json.dumps(summary, indent=1))
    if gt is not None:
        print(f"ground truth: {gt['complete_loops']} complete loops of {gt['video_frames']} frames, accuracy mean "
              f"{gt['accuracy_mean']}, min {gt['accuracy_min']}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0 if summary["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
