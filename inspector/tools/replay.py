"""Replay a recorded video through the daemon's own pipeline and summarise it, optionally against ground truth.

Ground truth is the CSV `trainer synth --video` writes: part_id,first_frame,last_frame,center_frame,label.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.auroc import auroc
from common.ground_truth import TruthPart, part_at, read_ground_truth
from inspector.config import InspectorConfig, load_config
from inspector.errors import InspectorError
from inspector.logs import setup_logging
from inspector.station import run_station


@dataclass(frozen=True)
class ReplayOptions:
    video: Path
    model: Path  # MODEL.onnx or MODEL.engine, its manifest beside it
    config: Path | None = None  # ROIs, trigger, ...; None: the defaults
    realtime: bool = False  # pace frames at the recorded rate
    ground_truth: Path | None = None  # CSV part_id,first_frame,last_frame,center_frame,label
    publish: str | None = None  # also publish over ZeroMQ at this endpoint
    json_out: Path | None = None  # the summary as JSON
    state: Path | None = None  # journal every verdict (and failed parts' images) here
    backfill: str | None = None  # with state: serve backfill requests at this endpoint
    frames: int | None = None  # loop the video until this many frames were read (soak tests)
    shadow: Path | None = None  # [shadow] model: a candidate scoring the same crops (shadow topic, journal)


def part_score(header: dict[str, Any]) -> float | None:
    """One number per part: the largest margin of an ROI's score over its threshold (None on error)."""
    margins = [r["score"] - r["threshold"] for r in header["rois"] if r["score"] is not None]
    return max(margins) if margins and header["verdict"] != "error" else None


def evaluate(headers: list[dict[str, Any]], truth: list[TruthPart]) -> dict[str, Any]:
    """Match each verdict to the part whose [first_frame, last_frame] holds its frame; score per part."""
    by_part: dict[str, list[dict[str, Any]]] = {t.part_id: [] for t in truth}
    spans = sorted(truth, key=lambda t: t.first_frame)
    spurious = 0
    for h in headers:
        match = part_at(spans, h["frame"])
        if match is None:
            spurious += 1
        else:
            by_part[match.part_id].append(h)
    correct, duplicates = 0, 0
    wrong: list[dict[str, Any]] = []
    per_part: list[dict[str, Any]] = []
    labels, scores = [], []
    for t in truth:
        verdicts = by_part[t.part_id]
        duplicates += max(0, len(verdicts) - 1)
        expected = "pass" if t.label == "good" else "fail"
        if not verdicts:
            wrong.append({"part_id": t.part_id, "label": t.label, "verdict": None, "frame": None, "why": "no verdict"})
            continue
        first = verdicts[0]
        per_part.append({"part_id": t.part_id, "label": t.label, "verdict": first["verdict"], "frame": first["frame"],
                         "margin": part_score(first)})
        got = "pass" if first["verdict"] == "pass" else "fail"  # an error is a reject
        if got == expected:
            correct += 1
        else:
            wrong.append({"part_id": t.part_id, "label": t.label, "verdict": first["verdict"], "frame": first["frame"],
                          "score": part_score(first), "why": "wrong verdict"})
        s = part_score(first)
        if s is not None:
            labels.append(t.label != "good")
            scores.append(s)
    return {
        "truth_parts": len(truth),
        "accuracy": round(correct / len(truth), 4) if truth else None,
        "auroc": None if (a := auroc(np.array(labels), np.array(scores))) is None else round(a, 4),
        "missed": sum(1 for w in wrong if w["verdict"] is None),
        "duplicates": duplicates,
        "spurious": spurious,
        "wrong": wrong,
        "per_part": per_part,
    }


def summarize(headers: list[dict[str, Any]], frames: int, seconds: float) -> dict[str, Any]:
    lat = np.array([h["latency_ms"] for h in headers], dtype=np.float64)
    return {
        "parts": len(headers),
        "passed": sum(h["verdict"] == "pass" for h in headers),
        "failed": sum(h["verdict"] == "fail" for h in headers),
        "errors": sum(h["verdict"] == "error" for h in headers),
        "frames": frames,
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 2) if seconds > 0 else None,
        "parts_per_s": round(len(headers) / seconds, 2) if seconds > 0 else None,
        "crops_per_s": round(sum(len(h["rois"]) for h in headers) / seconds, 2) if seconds > 0 else None,
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
        "accuracy": None,
        "auroc": None,
    }


def run_replay(opts: ReplayOptions) -> int:
    """Replay the video; with `state` every verdict is journaled there (synchronous=NORMAL: a replay needs
    crash safety, not power-cut safety) and `backfill` serves it; `frames` loops the video up to N frames."""
    video = opts.video
    if not video.is_file():
        raise InspectorError(f"video {video} does not exist")
    if not _readable(video):
        raise InspectorError(f"video {video} cannot be read: not a video, or truncated before its first frame")
    if opts.backfill and opts.state is None:
        raise InspectorError("replay: --backfill needs --state DIR (it serves the journal)")
    if opts.frames is not None and opts.frames < 1:
        raise InspectorError(f"replay: --frames must be >= 1, got {opts.frames}")
    if opts.json_out is not None:
        check_writable(opts.json_out)  # before the replay, not after it: a summary is never lost
    truth = read_ground_truth(opts.ground_truth) if opts.ground_truth else None
    camera: dict[str, Any] = {"source": str(video), "loop": opts.frames is not None, "max_frames": opts.frames or 0}
    overrides: dict[str, Any] = {"camera": camera, "engine": {"path": str(opts.model)},
                                 "publish": {"bind": opts.publish or "", "backfill_bind": opts.backfill or ""},
                                 "state": {"journal": opts.state is not None}}
    if opts.state is not None:
        overrides["state"]["dir"] = str(opts.state)
    if opts.shadow is not None:
        overrides["shadow"] = {"model": str(opts.shadow)}
    cfg = replay_config(opts, overrides)
    setup_logging("warning", cfg.logging.format, cfg.station_id, stream=sys.stderr)
    headers: list[dict[str, Any]] = []
    code, pipeline = run_station(cfg, realtime=opts.realtime, synchronous="NORMAL",
                                 after_publish=[lambda h, _images: headers.append(h)],
                                 read_config=lambda: replay_config(opts, overrides))  # SIGHUP: --model again
    if code != 0:
        return code
    summary = summarize(headers, pipeline.stats.frames_captured, pipeline.ended_mono - pipeline.started_mono)
    summary["model_id"] = pipeline.model_id
    summary["drift"] = pipeline.drift.status()  # the drift watch at the end (inspector/drift.py)
    if truth is not None:
        summary.update(evaluate(headers, truth))
    print(format_summary(summary), flush=True)
    if opts.json_out is not None:
        text = json.dumps(summary, indent=2) + "\n"
        try:
            _write_atomically(opts.json_out, text)
        except OSError as e:  # checked before the replay, failed anyway (disk full, folder gone): keep it on stdout
            print(text, end="", flush=True)
            raise InspectorError(f"replay: could not write the summary to {opts.json_out} ({e.strerror or e}); it is "
                                 "printed above as JSON instead: save it from there, or free the disk / fix the "
                                 "path and replay again") from None
    return 0


def replay_config(opts: ReplayOptions, overrides: dict[str, Any]) -> InspectorConfig:
    """The file's configuration under the command line's; with --publish the first result waits for a listener;
    a control socket only where the file (or the environment) binds one, so replays never share its port."""
    cfg = load_config(opts.config, overrides)
    if opts.publish and cfg.publish.wait_subscribers == 0:
        cfg.publish.wait_subscribers = 1  # a listener started first must not miss the first results
    if "bind" not in cfg.control.model_fields_set:
        cfg.control.bind = None
    return cfg


def check_writable(path: Path) -> None:
    """An InspectorError unless PATH can be written as a file: not a directory, and its folder (or the
    nearest one that exists, the rest is created) a directory this process can write in."""
    try:
        _check_writable(path)
    except OSError as e:  # e.g. a folder on the way that this user may not enter
        raise InspectorError(f"replay: --json {path} cannot be checked ({e.strerror or e}); pass a path you can "
                             "write to") from None


def _check_writable(path: Path) -> None:
    if path.is_dir():
        raise InspectorError(f"replay: --json {path} is a directory; pass a file name, e.g. {path / 'replay.json'}")
    folder = next((p for p in path.parents if p.exists()), Path("."))
    if not folder.is_dir():
        raise InspectorError(f"replay: --json {path}: {folder} is not a directory; pass a path in a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InspectorError(f"replay: --json {path}: cannot write in {folder} (permission denied or a read-only "
                             "file system); pass a path you can write to")
    if path.exists() and not os.access(path, os.W_OK):
        raise InspectorError(f"replay: --json {path} exists and is not writable; pass another path")


def _write_atomically(path: Path, text: str) -> None:
    """PATH has the whole text or stays as it was (a temporary file beside it, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _readable(video: Path) -> bool:
    """Whether OpenCV can open the file and decode its first frame (a camera is retried; a file is not)."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        return bool(cap.isOpened() and cap.read()[0])
    finally:
        cap.release()


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"parts {s['parts']}  passed {s['passed']}  failed {s['failed']}  errors {s['errors']}",
             f"frames {s['frames']} in {s['seconds']} s: {s['fps']} fps, {s['parts_per_s']} parts/s; "
             f"latency p50 {s['latency_p50_ms']} ms, p99 {s['latency_p99_ms']} ms"]
    if s.get("truth_parts") is not None:
        lines.append(f"ground truth: {s['truth_parts']} parts, accuracy {s['accuracy']}, AUROC {s['auroc']}, "
                     f"missed {s['missed']}, duplicates {s['duplicates']}, spurious {s['spurious']}")
        for w in s["wrong"]:
            lines.append(f"  wrong: part {w['part_id']} ({w['label']}) got {w['verdict']} at frame {w['frame']}"
                         f" ({w['why']})")
    if s.get("drift"):
        lines.append(f"drift: {s['drift']['state']}: {s['drift']['reason']}")
    return "\n".join(lines)
