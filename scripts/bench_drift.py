#!/usr/bin/env python3
"""Evidence for the drift watch (inspector/drift.py): prints tables, writes one JSON.

Three parts:

1. `synthetic`: score streams with no model. A reference of 40 held-out normal scores ~ N(0, 1) (the size a
   shipped model holds out) and its threshold mean + 3 sd, as `trainer fit` sets it; a window of 200 parts
   whose good parts are shifted by `shift` standard deviations and of which a share `defects` are real
   defects (scores uniform in 8..40). Per cell: how often the watch warns (trials), and the false-reject
   rate the shift gives good parts (exact, from the normal distribution): where the warning fires versus
   where false rejects climb, and whether a burst of defects looks like drift.
2. `replay`: `inspector replay` (the daemon's own pipeline, in a subprocess) of each model on each video with
   its ground truth: accuracy, good parts rejected, and the drift object the daemon ends with; beside it the
   same watch fed with the good parts only (the bulk of good parts, without the video's defects).
3. `lighting`: the line's station-collected crops (good and defective, in line order) with their
   brightness scaled by a gain, scored by each model through engines.load_engine: the watch's state and
   shift against the good crops' false-reject rate, per gain.

    python scripts/bench_drift.py --out docs/research/bench/lifecycle/drift.json \
        --model station128=build/drift/station128.onnx --model stills128=build/drift/stills128.onnx \
        --video line=build/demo128/line.mp4 --crops build/demo128/station/test
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import structlog

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.manifest import read_manifest, reference_scores  # noqa: E402
from inspector.drift import DriftWatch  # noqa: E402

SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
DEFECTS = (0.0, 0.05, 0.2, 0.4)
GAINS = (0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03, 1.05, 1.1, 1.2)


REJECT_LIMIT = 0.1   # the opt-in [drift] max_fail_rate the replays are also judged with (offline)


def settings(window: int = 200, min_parts: int = 50, warn_shift: float = 1.0, max_fail_rate: float = 0.0
             ) -> SimpleNamespace:
    return SimpleNamespace(enabled=True, window=window, min_parts=min_parts, warn_shift=warn_shift,
                           max_fail_rate=max_fail_rate)


def feed(watch: DriftWatch, model_id: str, scores: Any, threshold: float) -> dict[str, Any]:
    """One-ROI result headers for `scores` through the watch's publish hook; its status at the end."""
    for s in scores:
        watch.observe({"model_id": model_id, "verdict": "fail" if s > threshold else "pass",
                       "rois": [{"name": "part", "score": float(s), "threshold": threshold}]})
    return watch.status()


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


# --- 1. synthetic ----------------------------------------------------------------------------------------
def synthetic(trials: int, warn_shift: float, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for defects in DEFECTS:
        for shift in SHIFTS:
            warned, shifts, fails = 0, [], []
            for _ in range(trials):
                ref = rng.normal(0, 1, 40)
                thr = float(ref.mean() + 3 * ref.std(ddof=1))
                n_bad = int(round(200 * defects))
                scores = np.concatenate([rng.normal(shift, 1, 200 - n_bad), rng.uniform(8, 40, n_bad)])
                rng.shuffle(scores)
                st = feed(DriftWatch(settings(warn_shift=warn_shift), "m", SimpleNamespace(
                    normal_scores=reference_scores(ref))), "m", scores, thr)
                warned += st["state"] == "warning"
                shifts.append(st["median_shift"])
                fails.append(st["fail_rate_recent"])
            rows.append({"defects": defects, "shift_sd": shift, "warning_rate": round(warned / trials, 3),
                         "median_shift_mean": round(float(np.mean(shifts)), 3),
                         "median_shift_p5_p95": [round(float(np.percentile(shifts, q)), 3) for q in (5, 95)],
                         "fail_rate_mean": round(float(np.mean(fails)), 4),
                         "good_false_reject_rate": round(_normal_sf(3 - shift), 4)})
    return rows


# --- 2. replays ------------------------------------------------------------------------------------------
def replay(model: Path, video: Path, workdir: Path) -> dict[str, Any]:
    summary = workdir / f"{model.stem}-{video.stem}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ENGINES_ORT_THREADS": os.environ.get("ENGINES_ORT_THREADS", "1")}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "inspector", "replay", str(video), "--model", str(model),
                           "--config", str(video.with_suffix(".toml")), "--ground-truth", str(video.with_suffix(".csv")),
                           "--json", str(summary)], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"replay of {video} with {model} failed: {proc.stderr.strip()[-2000:]}")
    out = json.loads(summary.read_text())
    out["_seconds"] = round(time.monotonic() - t0, 1)
    return out


def replay_row(name: str, model: Path, video_name: str, video: Path, workdir: Path) -> dict[str, Any]:
    m = read_manifest(model)
    s = replay(model, video, workdir)
    thr = float(m.threshold or 0.0)
    per_part = [p for p in s["per_part"] if p["margin"] is not None]
    good = [p["margin"] + thr for p in per_part if p["label"] == "good"]
    good_only = feed(DriftWatch(settings(), m.model_id, m), m.model_id, good, thr)
    limited = feed(DriftWatch(settings(max_fail_rate=REJECT_LIMIT), m.model_id, m), m.model_id,
                   [p["margin"] + thr for p in per_part], thr)
    d = s["drift"]
    return {"model": name, "video": video_name, "model_id": m.model_id, "parts": s["parts"],
            "defective": sum(p["label"] != "good" for p in per_part), "accuracy": s["accuracy"], "auroc": s["auroc"],
            "good": len(good), "good_rejected": sum(g > thr for g in good),
            "drift": {k: d.get(k) for k in ("state", "median_shift", "set_aside", "ks", "fail_rate_recent",
                                           "fail_rate_expected", "window_n", "reason")},
            "good_only": {k: good_only.get(k) for k in ("state", "median_shift", "ks", "fail_rate_recent",
                                                      "fail_rate_expected", "window_n")},
            "with_max_fail_rate": {"max_fail_rate": REJECT_LIMIT, "state": limited["state"], "cause": limited["cause"]},
            "replay_seconds": s["_seconds"]}


# --- 3. lighting -----------------------------------------------------------------------------------------
def load_crops(folder: Path) -> tuple[np.ndarray, list[str]]:
    """The collected crops (inspector collect: test/<label>/<frame>_<roi>.png) in line order, with labels."""
    import cv2

    items = sorted((p.name, p.parent.name, p) for p in folder.glob("*/*.png"))
    if not items:
        raise SystemExit(f"no crops under {folder}/<label>/*.png (inspector collect ... --ground-truth)")
    return np.stack([cv2.imread(str(p)) for _, _, p in items]), [label for _, label, _ in items]


def lighting(name: str, model: Path, crops: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    import cv2

    from engines import load_engine
    from engines.base import infer_in_batches

    m = read_manifest(model)
    thr = float(m.threshold or 0.0)
    engine = load_engine(model, backend="onnxruntime", threads=1)
    size = engine.input_shape[0]
    good = np.array([label == "good" for label in labels])
    rows = []
    try:
        for gain in GAINS:
            lit = np.clip(crops.astype(np.float32) * gain, 0, 255).astype(np.uint8)
            if lit.shape[1] != size:
                lit = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in lit])
            scores = infer_in_batches(engine, lit).scores.astype(np.float64)
            st = feed(DriftWatch(settings(), m.model_id, m), m.model_id, scores, thr)
            rows.append({"model": name, "gain": gain, "state": st["state"], "median_shift": st["median_shift"],
                         "ks": st["ks"], "fail_rate_recent": st["fail_rate_recent"],
                         "fail_rate_expected": st["fail_rate_expected"],
                         "good_false_reject_rate": round(float((scores[good] > thr).mean()), 4),
                         "defects_caught": round(float((scores[~good] > thr).mean()), 4) if (~good).any() else None})
    finally:
        engine.close()
    return rows


# --- tables ----------------------------------------------------------------------------------------------
def print_synthetic(rows: list[dict[str, Any]], trials: int, warn_shift: float) -> None:
    print(f"\n1. synthetic streams: reference 40 ~ N(0,1), threshold mean+3sd, window 200 parts, warn_shift "
          f"{warn_shift}, {trials} trials per cell: share of trials that warn (median shift mean)")
    print(f"{'good parts shift (sd)':>22} " + " ".join(f"{s:>6}" for s in SHIFTS))
    print(f"{'good false-reject rate':>22} " + " ".join(f"{100 * (_normal_sf(3 - s)):>5.1f}%" for s in SHIFTS))
    for d in DEFECTS:
        cells = [r for r in rows if r["defects"] == d]
        print(f"{f'warns, {100 * d:.0f} % defects':>22} " + " ".join(f"{r['warning_rate']:>6.2f}" for r in cells))
        print(f"{'(median shift)':>22} " + " ".join(f"{r['median_shift_mean']:>6.2f}" for r in cells))


def print_replays(rows: list[dict[str, Any]]) -> None:
    print("\n2. replays (inspector replay, the daemon's pipeline): the drift object at the end; good parts only beside")
    print(f"{'model':<11}{'video':<7}{'parts':>6}{'defect':>7}{'acc':>7}{'good rej':>10}  {'state':<8}{'shift':>7}"
          f"{'ks':>6}{'fail':>7}{'expect':>7}   {'good only: state':<17}{'shift':>6}{'fail':>7}"
          f"   max_fail_rate {REJECT_LIMIT}")
    for r in rows:
        d, g = r["drift"], r["good_only"]
        print(f"{r['model']:<11}{r['video']:<7}{r['parts']:>6}{r['defective']:>7}{r['accuracy']:>7}"
              f"{r['good_rejected']:>5}/{r['good']:<4}  {d['state']:<8}{d['median_shift']:>7}{d['ks']:>6}"
              f"{d['fail_rate_recent']:>7}{d['fail_rate_expected']:>7}   {g['state']:<17}{g['median_shift']:>6}"
              f"{g['fail_rate_recent']:>7}   {r['with_max_fail_rate']['state']}")


def print_lighting(rows: list[dict[str, Any]]) -> None:
    print("\n3. lighting: the line's station-collected crops with brightness x gain, each model")
    print(f"{'model':<11}{'gain':>6}  {'state':<8}{'shift':>7}{'ks':>6}{'fail':>7}{'expect':>7}{'good rej':>9}"
          f"{'caught':>8}")
    for r in rows:
        caught = "-" if r["defects_caught"] is None else f"{r['defects_caught']:.2f}"
        print(f"{r['model']:<11}{r['gain']:>6}  {r['state']:<8}{r['median_shift']:>7}{r['ks']:>6}"
              f"{r['fail_rate_recent']:>7}{r['fail_rate_expected']:>7}{r['good_false_reject_rate']:>9}{caught:>8}")


def named(values: list[str], what: str) -> list[tuple[str, Path]]:
    out = []
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"--{what} {v!r}: give NAME=PATH of an existing file")
        out.append((name, Path(path)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the JSON written")
    ap.add_argument("--model", action="append", default=[], help="NAME=MODEL.onnx (manifest with normal_scores)")
    ap.add_argument("--video", action="append", default=[], help="NAME=VIDEO.mp4 (VIDEO.toml and VIDEO.csv beside)")
    ap.add_argument("--crops", type=Path, help="collected crops of a line, <label>/*.png (the lighting part)")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--warn-shift", type=float, default=1.0)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))  # not its warnings
    models, videos = named(args.model, "model"), named(args.video, "video")
    for name, path in models:
        if not read_manifest(path).normal_scores:
            raise SystemExit(f"{name}: {path} has no normal_scores; `trainer evaluate RUN` + `trainer export` first")
    result: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                              "warn_shift": args.warn_shift, "window": 200, "min_parts": 50}
    t0 = time.monotonic()
    result["synthetic"] = synthetic(args.trials, args.warn_shift)
    print_synthetic(result["synthetic"], args.trials, args.warn_shift)
    with tempfile.TemporaryDirectory() as tmp:
        result["replays"] = [replay_row(mn, mp, vn, vp, Path(tmp)) for vn, vp in videos for mn, mp in models]
    if result["replays"]:
        print_replays(result["replays"])
    if args.crops is not None:
        crops, labels = load_crops(args.crops)
        result["lighting"] = [row for name, path in models for row in lighting(name, path, crops, labels)]
        print_lighting(result["lighting"])
    result["models"] = {name: {"path": str(path), "model_id": read_manifest(path).model_id,
                               "threshold": read_manifest(path).threshold,
                               "normal_scores_n": len(read_manifest(path).normal_scores)} for name, path in models}
    result["seconds"] = round(time.monotonic() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
