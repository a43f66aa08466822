"""Replay a recorded video through the daemon's own pipeline and summarise it, optionally against ground truth.

Ground truth is the CSV `trainer synth --video` writes: part_id,first_frame,last_frame,center_frame,label.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from inspector.config import load_config
from inspector.errors import InspectorError
from common.ground_truth import TruthPart, part_at, read_ground_truth
from inspector.logs import setup_logging
from inspector.pipeline import Pipeline
from inspector.scoring import open_engine
from inspector.station import open_station


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve by ranks (Mann-Whitney U, ties averaged); None without both classes."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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


def run_replay(video: Path, model: Path, config: Path | None = None, realtime: bool = False,
               ground_truth: Path | None = None, publish: str | None = None, json_out: Path | None = None,
               *, state: Path | None = None, backfill: str | None = None, frames: int | None = None) -> int:
    """Replay VIDEO; with `state` every verdict is journaled there (synchronous=NORMAL: a replay needs
    crash safety, not power-cut safety) and `backfill` serves it; `frames` loops the video up to N frames."""
    if not video.is_file():
        raise InspectorError(f"video {video} does not exist")
    if not _readable(video):
        raise InspectorError(f"video {video} cannot be read: not a video, or truncated before its first frame")
    if backfill and state is None:
        raise InspectorError("replay: --backfill needs --state DIR (it serves the journal)")
    if frames is not None and frames < 1:
        raise InspectorError(f"replay: --frames must be >= 1, got {frames}")
    truth = read_ground_truth(ground_truth) if ground_truth else None
    camera: dict[str, Any] = {"source": str(video), "loop": frames is not None, "max_frames": frames or 0}
    overrides: dict[str, Any] = {"camera": camera, "engine": {"path": str(model)},
                                 "publish": {"bind": publish or "", "backfill_bind": backfill or ""},
                                 "state": {"journal": state is not None}}
    if state is not None:
        overrides["state"]["dir"] = str(state)
    cfg = load_config(config, overrides)
    if publish and cfg.publish.wait_subscribers == 0:
        cfg.publish.wait_subscribers = 1  # a listener started first must not miss the first results
    setup_logging("warning", cfg.logging.format, cfg.station_id, stream=sys.stderr)
    engine = open_engine(cfg.engine)
    headers: list[dict[str, Any]] = []
    try:
        station = open_station(cfg, str(getattr(engine.manifest, "model_id", "unknown")), synchronous="NORMAL")
        pipeline = Pipeline(cfg, engine, realtime=realtime, after_publish=[lambda h, _images: headers.append(h)],
                            **station.pipeline_kwargs())
        code = pipeline.run(handle_signals=True)
    finally:
        engine.close()
    if isinstance(pipeline.fatal, InspectorError):
        raise pipeline.fatal
    if code != 0:
        return code
    summary = summarize(headers, pipeline.stats.frames_captured, pipeline.ended_mono - pipeline.started_mono)
    summary["model_id"] = pipeline.model_id
    if truth is not None:
        summary.update(evaluate(headers, truth))
    print(format_summary(summary))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


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
    return "\n".join(lines)
