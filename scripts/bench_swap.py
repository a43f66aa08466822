#!/usr/bin/env python
"""Swap pause: inter-result gaps of `inspector run` at 50 parts/s, in normal running and during hot reloads.

The daemon plays a video like a camera (`--realtime` pacing at [camera] fps = 50, continuous trigger on every
frame: 50 parts/s), journals (synchronous FULL, as shipped) and publishes; this script subscribes, waits,
then asks the control socket for K reloads alternating two copies of the model (A, B: the same ONNX, B's
manifest with another model_id, so every reload is a real load, check, warm-up, agreement and swap). A gap
is the time between two consecutive results' `published_at`; it counts as "during a reload" when it
overlaps a reload (request sent .. reply received, plus 0.5 s for closing the old engine and the event).

Target (issue 24): the largest gap during a reload <= 2 x the normal inter-result gap (the median, 20 ms).

    .venv/bin/python scripts/bench_swap.py [--model build/demo128/model.onnx --video build/demo128/line.mp4
        --config build/demo128/line.toml] [--reloads 10] [--normal-s 20] [--out docs/research/bench/lifecycle/swap.json]

Without --model: the exported model under build/ if one exists (build/demo128, build/demo), else (or with
--tiny) the tests' mean-pixel graph on a synthesized conveyor (printed in the table: which one ran).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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

from common.manifest import read_manifest, write_manifest  # noqa: E402
from inspector.models.control import request  # noqa: E402

PARTS_PER_S = 50.0
AFTER_S = 0.5  # a reload's window extends this far past its reply (old engine closed, event journaled)


def pick_model(args: argparse.Namespace, work: Path) -> tuple[Path, Path, str, str]:
    """(model, video, ROI TOML lines, description)."""
    if args.model is not None:
        roi = _rois(args.config) if args.config else ""
        return args.model, args.video, roi, f"{args.model} (given)"
    for folder in () if args.tiny else (REPO / "build" / "demo128", REPO / "build" / "demo"):
        if (folder / "model.onnx").is_file() and (folder / "line.mp4").is_file():
            m = read_manifest(folder / "model.onnx")
            return (folder / "model.onnx", folder / "line.mp4", _rois(folder / "line.toml"),
                    f"{folder.relative_to(REPO)}/model.onnx ({m.variant}, {m.image_size} px, exported)")
    from test_inspector_support import make_mean_model, write_conveyor_video

    v = write_conveyor_video(work / "line.avi", n_parts=40)
    model = make_mean_model(work / "mean" / "model.onnx", size=32)
    roi = '[[rois]]\nname = "center"\nx = 64\ny = 0\nwidth = 64\nheight = 64\n'
    why = "--tiny" if args.tiny else "no exported model under build/"
    return model, v.video, roi, f"the tests' mean-pixel graph, 32 px ({why})"


def _rois(config: Path) -> str:
    """The [[rois]] tables of a station's TOML file (the rest of it is this benchmark's own)."""
    rois = tomllib.loads(config.read_text()).get("rois", [])
    return "".join("[[rois]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in roi.items()) for roi in rois)


def copy_as_b(model: Path, work: Path) -> Path:
    """The same model in another folder, its manifest naming another model_id: a second, distinct model."""
    b = work / "b" / model.name
    b.parent.mkdir(parents=True)
    shutil.copy(model, b)
    m = read_manifest(model)
    write_manifest(m.model_copy(update={"model_id": m.model_id + "-b"}), b)
    return b


def write_config(work: Path, model: Path, video: Path, rois: str, pub: str, control: str,
                 args: argparse.Namespace) -> Path:
    cfg = work / "inspector.toml"
    cfg.write_text(f"""station_id = "bench-swap"
[camera]
source = "{video}"
fps = {PARTS_PER_S}
loop = true
[trigger]
mode = "continuous"
every_n = 1
[engine]
path = "{model}"
backend = "onnxruntime"
[publish]
bind = "{pub}"
backfill_bind = ""
wait_subscribers = 1
send_hwm = 100000
send_images = "{args.send_images}"
[state]
dir = "{work / 'state'}"
synchronous = "{args.synchronous}"
[control]
bind = "{control}"
[logging]
level = "warning"
{rois}""")
    return cfg


def reloads(control: str, paths: list[Path], pause_s: float, windows: list[dict[str, Any]],
            done: threading.Event) -> None:
    try:
        for path in paths:
            t0 = time.time()
            reply = request(control, {"command": "reload", "path": str(path), "timeout_s": 120}, 130)
            t1 = time.time()
            windows.append({"start": t0, "end": t1, "ok": reply.get("ok"), "model_id": reply.get("model_id"),
                            "load_s": reply.get("load_s"), "error": reply.get("error"),
                            "agreement_n": (reply.get("agreement") or {}).get("n")})
            time.sleep(pause_s)
    finally:
        done.set()


def gaps(results: list[dict[str, Any]], windows: list[dict[str, Any]], since: float) -> dict[str, list[float]]:
    """Gaps (ms) between consecutive results after `since`, split into normal and during a reload."""
    normal, during = [], []
    for prev, cur in zip(results, results[1:], strict=False):
        a, b = prev["published_at"], cur["published_at"]
        if a < since:
            continue
        gap = (b - a) * 1000
        inside = any(a < w["end"] + AFTER_S and b > w["start"] for w in windows)
        (during if inside else normal).append(gap)
    return {"normal": normal, "during": during}


def per_reload(results: list[dict[str, Any]], windows: list[dict[str, Any]]) -> None:
    """Each reload's largest gap and where it began, in ms from the request (in place: `max_gap_ms`, `at_ms`)."""
    for w in windows:
        inside = [((b["published_at"] - a["published_at"]) * 1000, (a["published_at"] - w["start"]) * 1000)
                  for a, b in zip(results, results[1:], strict=False)
                  if a["published_at"] < w["end"] + AFTER_S and b["published_at"] > w["start"]]
        gap, at = max(inside) if inside else (None, None)
        w["max_gap_ms"] = round(gap, 2) if gap is not None else None
        w["at_ms"] = round(at, 1) if at is not None else None
        w["reload_ms"] = round((w["end"] - w["start"]) * 1000, 1)


def stats(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    a = np.array(xs)
    return {"n": len(xs), "p50_ms": round(float(np.median(a)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "max_ms": round(float(a.max()), 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--video", type=Path, default=None)
    p.add_argument("--config", type=Path, default=None, help="the ROIs are taken from this TOML file")
    p.add_argument("--tiny", action="store_true", help="the tests' mean-pixel graph even if build/ has a model")
    p.add_argument("--reloads", type=int, default=10)
    p.add_argument("--send-images", choices=("all", "failed", "none"), default="all", help="[publish] send_images")
    p.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL", help="[state] synchronous")
    p.add_argument("--normal-s", type=float, default=20.0, help="normal running measured before the reloads")
    p.add_argument("--pause-s", type=float, default=3.0, help="between two reloads")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "research" / "bench" / "lifecycle" / "swap.json")
    args = p.parse_args()
    if args.model is not None and args.video is None:
        p.error("--model needs --video (and --config for its ROIs)")
    work = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    model, video, rois, described = pick_model(args, work)
    b = copy_as_b(model, work)
    pub, control = f"ipc://{work}/pub.ipc", f"ipc://{work}/control.ipc"
    cfg = write_config(work, model, video, rois, pub, control, args)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1_000_000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "inspector", "run", "--config", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    done = threading.Event()
    started = measure_from = 0.0
    worker: threading.Thread | None = None
    try:
        deadline = time.monotonic() + 60 + args.normal_s + args.reloads * (args.pause_s + 30)
        while time.monotonic() < deadline and proc.poll() is None:
            if sub.poll(50):
                topic, header, *_ = sub.recv_multipart()
                if topic == b"result":
                    results.append(json.loads(header))
                elif topic == b"status":
                    statuses.append(json.loads(header))
            if results and not started:
                started = time.time()
                measure_from = started + 5.0  # the first seconds: warm-up, the camera settles
            if started and worker is None and time.time() >= measure_from + args.normal_s:
                paths = [b if i % 2 == 0 else model for i in range(args.reloads)]
                worker = threading.Thread(target=reloads, args=(control, paths, args.pause_s, windows, done))
                worker.start()
            if done.is_set():
                break
        proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 30
        while time.monotonic() < end and not any(s.get("final") for s in statuses):
            if sub.poll(50):
                topic, header, *_ = sub.recv_multipart()
                (results if topic == b"result" else statuses if topic == b"status" else []).append(json.loads(header))
        out = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close(0)
        ctx.term()
    if not windows:
        print(out[-3000:])
        raise SystemExit("no reload was made: see the daemon's output above")
    split = gaps(results, windows, measure_from)
    per_reload(results, windows)
    normal, during = stats(split["normal"]), stats(split["during"])
    final = next((s for s in reversed(statuses) if s.get("final")), statuses[-1] if statuses else {})
    seqs = [h["sequence"] for h in results]
    nominal = 1000 / PARTS_PER_S
    report = {
        "command": "python scripts/bench_swap.py " + " ".join(sys.argv[1:]),
        "model": described, "host": {"cpus": os.cpu_count(), "machine": platform.machine(),
                                     "python": platform.python_version()},
        "send_images": args.send_images, "synchronous": args.synchronous, "parts_per_s": PARTS_PER_S, "nominal_gap_ms": nominal, "reloads": windows,
        "normal": normal, "during_reload": during,
        "ratio_max_during_to_normal_p50": round(during["max_ms"] / normal["p50_ms"], 2) if during["n"] else None,
        "ratio_max_during_to_normal_max": round(during["max_ms"] / normal["max_ms"], 2) if during["n"] else None,
        "target_met": bool(during["n"]) and during["max_ms"] <= 2 * normal["p50_ms"],
        "results": len(results), "gapless": seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else None,
        "frames_dropped": final.get("frames_dropped"), "parts_triggered": final.get("parts_triggered"),
        "parts_inspected": final.get("parts_inspected"), "model_ids": sorted({h["model_id"] for h in results}),
        "load_avg_at_end": os.getloadavg(),
    }
    print(f"model: {described}; {PARTS_PER_S:g} parts/s (nominal gap {nominal:g} ms); "
          f"{sum(bool(w['ok']) for w in windows)}/{len(windows)} reloads swapped")
    print(f"{'':16}{'gaps':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, s in (("normal", normal), ("during reload", during)):
        print(f"{name:16}{s['n']:>7}{s.get('p50_ms', '-'):>9}{s.get('p99_ms', '-'):>9}{s.get('max_ms', '-'):>9}")
    print(f"largest gap during a reload / normal gap (p50): {report['ratio_max_during_to_normal_p50']} "
          f"(target <= 2: {'met' if report['target_met'] else 'NOT met'}); / normal running's own largest gap: "
          f"{report['ratio_max_during_to_normal_max']}; results {len(results)}, gapless "
          f"{report['gapless']}, frames dropped {report['frames_dropped']}, load avg {report['load_avg_at_end']}")
    print("per reload: largest gap ms @ ms after the request (reload took ms): " + ", ".join(
        f"{w['max_gap_ms']} @ {w['at_ms']} ({w['reload_ms']})" for w in windows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
