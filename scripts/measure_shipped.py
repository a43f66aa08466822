#!/usr/bin/env python
"""The shipped model measured through the daemon (issue 22): `inspector replay` at full speed and at the camera's
rate, `inspector run` at the camera's rate, a continuous-trigger replay for the engine-bound rate, and `engines
bench` at the same batch and threads; one JSON and a table, every figure labelled with what it counts.

    .venv/bin/python scripts/measure_shipped.py --run build/demo128/run --model build/demo128/model.onnx \
        --video build/demo128/line.mp4 --config build/demo128/line.toml --ground-truth build/demo128/line.csv \
        --out docs/research/bench/shipped/128px

Run it with the machine otherwise idle; set OMP_NUM_THREADS=1 on a shared box. The daemon's engine threads are its
own default (all cores but one) unless ENGINES_ORT_THREADS or [engine] cpu_threads says otherwise; `engines bench`
runs at the same count. Writes OUT/shipped.json, OUT/shipped.md (the table) and each step's own JSON beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import soak  # noqa: E402  (scripts/soak.py)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip install tomli
    import tomli as tomllib  # type: ignore[no-redef]

LATENCY = ("capture -> publish: from the moment the frame the part was inspected on was read from the camera (or "
           "file) to the moment its result was built for publishing (before the journal commit and the send)")
COUNTS = {
    "frames_per_s": "frames read from the video per wall-clock second",
    "parts_per_s": "results published per second (one per part the trigger fired on)",
    "crops_per_s": "ROI crops that reached the engine per second (parts x ROIs)",
    "frames_scored": "frames a part was inspected on (the trigger fired): their crops went to the engine",
    "frames_skipped": "frames read that the trigger did not fire on (belt between parts, the part before or after "
                      "its best-centred frame): never reached the engine",
}


def derived_config(base: Path, out: Path, **sections: dict[str, Any]) -> Path:
    """BASE with some sections' fields replaced, written to OUT."""
    data = tomllib.loads(base.read_text())
    for name, fields in sections.items():
        data.setdefault(name, {}).update(fields)
    out.write_text(soak.toml_dumps(data))
    return out


def inspector(*args: str | Path) -> None:
    cmd = [sys.executable, "-m", "inspector", *map(str, args)]
    print("$ inspector " + " ".join(map(str, args)), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def bench(model: Path, batches: list[int], threads: int, seconds: float, out: Path) -> dict[int, float]:
    cmd = [sys.executable, "-m", "engines", "bench", str(model), "--batch", ",".join(map(str, batches)),
           "--threads", str(threads), "--seconds", str(seconds), "--json", str(out)]
    print("$ engines " + " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    return {r["batch"]: r["images_per_s"] for r in json.loads(out.read_text()) if r["backend"] == "onnxruntime"}


def replay_figures(r: dict[str, Any], rois: int) -> dict[str, Any]:
    """A replay summary (`inspector replay --json`) as the labelled figures."""
    return {"frames": r["frames"], "seconds": r["seconds"], "frames_per_s": r["fps"], "parts": r["parts"],
            "parts_per_s": r["parts_per_s"], "crops_per_s": r["crops_per_s"], "frames_scored": r["parts"],
            "frames_skipped": r["frames"] - r["parts"], "rois": rois, "accuracy": r.get("accuracy"),
            "auroc": r.get("auroc"), "missed": r.get("missed"), "duplicates": r.get("duplicates"),
            "spurious": r.get("spurious"), "latency_p50_ms": r["latency_p50_ms"],
            "latency_p99_ms": r["latency_p99_ms"]}


def run_figures(s: dict[str, Any], rois: int, fps: float) -> dict[str, Any]:
    """`inspector run` (scripts/soak.py, the video played once) as the labelled figures."""
    frames, parts = s["frames_captured"] or 0, s["parts_inspected"] or 0
    rate = s["sampled"]  # between the first and the last sample: start-up (model load) and the drain excluded
    gt = (s.get("ground_truth") or {}).get("per_loop") or [{}]
    return {"frames": frames, "seconds": s["seconds"], "video_seconds": round(frames / fps, 2) if fps else None,
            "frames_per_s": rate["frames_per_s"], "parts": parts, "parts_per_s": rate["parts_per_s"],
            "crops_per_s": round(rate["parts_per_s"] * rois, 3) if rate["parts_per_s"] is not None else None,
            "frames_scored": parts,
            "frames_skipped": frames - parts, "frames_dropped": sum((s["frames_dropped"] or {}).values()),
            "rois": rois, "accuracy": gt[0].get("accuracy"), "auroc": gt[0].get("auroc"),
            "missed": gt[0].get("missed"), "duplicates": gt[0].get("duplicates"), "spurious": gt[0].get("spurious"),
            "latency_p50_ms": s["latency_p50_ms"], "latency_p99_ms": s["latency_p99_ms"],
            "daemon_cpu_cores": s["cpu_cores_mean"], "rss_mib_end": s.get("rss_mib_end"),
            "journaled": s["journaled"], "received": s["results_received"]}


def training_facts(run: Path | None) -> dict[str, Any]:
    """What `trainer fit` / `trainer evaluate` left in the run folder (no torch needed)."""
    if run is None:
        return {}
    facts: dict[str, Any] = {"run": str(run)}
    log = run / "log.jsonl"
    if log.exists():
        epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        facts.update(epochs=len(epochs), train_seconds=round(sum(e.get("seconds", 0.0) for e in epochs), 1))
    metrics = run / "metrics.json"
    if metrics.exists():
        m = json.loads(metrics.read_text())
        facts["evaluate"] = {k: m.get(k) for k in ("image_auroc", "auroc_per_type", "test_at_threshold", "n_good",
                                                   "n_defect", "threshold", "threshold_source")}
    else:
        facts["evaluate"] = "not run (trainer evaluate RUN writes metrics.json)"
    return facts


def measure(a: argparse.Namespace) -> dict[str, Any]:
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(a.model.with_suffix(".json").read_text())
    cfg = tomllib.loads(a.config.read_text())
    rois = max(1, len(cfg.get("rois", [])))
    fps = a.fps or float(cfg.get("camera", {}).get("fps") or 0) or 30.0
    max_batch = int(cfg.get("engine", {}).get("max_batch", 8))
    threads = soak.engine_threads(a.config)
    station = derived_config(a.config, out / "station.toml", camera={"fps": fps})
    t0 = time.monotonic()
    result: dict[str, Any] = {
        "model": {"path": str(a.model), "model_id": manifest["model_id"], "variant": manifest["variant"],
                  "image_size": manifest["image_size"], "threshold": manifest["threshold"]},
        "training": training_facts(a.run), "video": str(a.video), "config": str(a.config),
        "camera_fps": fps, "rois": rois, "engine_max_batch": max_batch, "engine_threads": threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores; OMP_NUM_THREADS="
                   f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; load average at start {os.getloadavg()[0]:.2f}",
        "counts": COUNTS, "latency_measured": LATENCY,
    }
    batches = sorted({1, max_batch})
    common = ["--model", a.model, "--config", station]
    inspector("replay", a.video, *common, "--ground-truth", a.ground_truth, "--json", out / "replay-fast.json")
    result["replay_fast"] = {"what": "inspector replay, as fast as the pipeline goes (lossless), presence trigger; "
                                     "latency here is queueing in a flood, not a station's",
                             **replay_figures(json.loads((out / "replay-fast.json").read_text()), rois)}
    inspector("replay", a.video, *common, "--ground-truth", a.ground_truth, "--realtime",
              "--json", out / "replay-realtime.json")
    result["replay_realtime"] = {"what": f"inspector replay --realtime: frames paced at {fps:g} fps (the camera's "
                                         "rate), presence trigger; parts/s is the line's part rate",
                                 **replay_figures(json.loads((out / "replay-realtime.json").read_text()), rois)}
    # the engine alone just before and just after the engine-bound replays: a shared box's load moves both
    before = bench(a.model, batches, threads, a.bench_seconds, out / "bench-before.json")
    cont = derived_config(station, out / "continuous.toml", trigger={"mode": "continuous", "every_n": 1})
    bare = derived_config(cont, out / "continuous-noimg.toml", publish={"send_images": "none"})
    for key, config, images in (("replay_continuous", cont, "the configuration's images per part"),
                                ("replay_continuous_noimg", bare, "no images encoded (send_images = none)")):
        name = key.replace("_", "-") + ".json"
        inspector("replay", a.video, "--model", a.model, "--config", config, "--json", out / name)
        c = replay_figures(json.loads((out / name).read_text()), rois)
        for k in ("accuracy", "auroc", "missed", "duplicates", "spurious"):
            c.pop(k)
        result[key] = {
            "what": f"inspector replay, as fast as it goes, continuous trigger, {images}: every frame is a part, so "
                    "the engine is the bottleneck; crops/s against engines bench at batch engine.max_batch and the "
                    "same threads is the '% of engine throughput' figure", **c,
            "share_of_engine_bench": None}  # below, once the second bench has run
    after = bench(a.model, batches, threads, a.bench_seconds, out / "bench-after.json")
    engine = {b: round((before[b] + after[b]) / 2, 2) for b in batches}
    result["engine_bench"] = {"what": f"engines bench --threads {threads} --seconds {a.bench_seconds:g}: images/s of "
                                      "the engine alone (random images, no video, no pipeline) per batch, the mean "
                                      "of a run before and one after the continuous-trigger replays",
                              "images_per_s": engine, "before": before, "after": after}
    for key in ("replay_continuous", "replay_continuous_noimg"):
        result[key]["share_of_engine_bench"] = round(result[key]["crops_per_s"] / engine[max_batch], 3)
    print(f"$ scripts/soak.py --video {a.video} (played once at {fps:g} fps through inspector run)", flush=True)
    s = soak.soak(None, fps, 5.0, out=out / "run.json", echo=False, model=a.model, video=a.video, config=a.config,
                  ground_truth=a.ground_truth, minutes=None, work=a.work)
    if s["exit_code"] != 0:
        raise SystemExit(f"inspector run failed (exit {s['exit_code']}): {s['stderr_tail']}")
    result["run_realtime"] = {"what": f"inspector run, the video as a camera at {fps:g} fps (frames dropped when "
                                      "behind), journal FULL and image store as configured, one subscriber; rates "
                                      "per second of video", **run_figures(s, rois, fps)}
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


ROWS = [("accuracy", "accuracy (per part, first verdict)", "{:.3f}"), ("auroc", "AUROC (per part, max ROI margin)",
        "{:.4f}"), ("frames_per_s", "frames/s read", "{:.1f}"), ("parts_per_s", "parts/s published", "{:.2f}"),
        ("crops_per_s", "crops/s to the engine", "{:.2f}"), ("frames_scored", "frames scored", "{}"),
        ("frames_skipped", "frames skipped by the trigger", "{}"), ("latency_p50_ms", "latency p50 ms", "{:.1f}"),
        ("latency_p99_ms", "latency p99 ms", "{:.1f}"), ("share_of_engine_bench", "crops/s / engines bench", "{:.0%}"),
        ("daemon_cpu_cores", "daemon CPU (cores)", "{:.2f}"), ("frames_dropped", "frames dropped", "{}")]


def table(r: dict[str, Any]) -> str:
    cols = [("replay_fast", "replay, full speed"), ("replay_realtime", f"replay --realtime {r['camera_fps']:g} fps"),
            ("run_realtime", f"run at {r['camera_fps']:g} fps"), ("replay_continuous", "replay, continuous trigger"),
            ("replay_continuous_noimg", "the same, no images")]
    lines = [f"{r['model']['model_id']} ({r['model']['image_size']} px), {r['video']}, engine threads "
             f"{r['engine_threads']}, batch <= {r['engine_max_batch']}; {r['machine']}", "",
             "| figure | " + " | ".join(c for _, c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key, label, fmt in ROWS:
        cells = []
        for col, _ in cols:
            v = r.get(col, {}).get(key)
            cells.append(fmt.format(v) if v is not None else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    e = r["engine_bench"]
    eng = ", ".join(f"batch {b}: {v:.1f} (before {e['before'][b]:.1f}, after {e['after'][b]:.1f})"
                    for b, v in e["images_per_s"].items())
    lines += ["", f"engines bench (engine alone, {r['engine_threads']} thread(s)), images/s: {eng}",
              f"latency: {r['latency_measured']}"]
    lines += [f"{k}: {v}" for k, v in r["counts"].items()]
    ev = r["training"].get("evaluate")
    if isinstance(ev, dict):
        lines.append(f"trainer evaluate (crops of the same video's parts): image AUROC {ev['image_auroc']:.3f}, "
                     f"per type {ev['auroc_per_type']}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=None, help="the trainer run folder (epochs, evaluate's metrics)")
    p.add_argument("--model", type=Path, required=True, help="MODEL.onnx with MODEL.json beside it")
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--config", type=Path, required=True, help="the station's TOML (ROIs, trigger, camera.fps)")
    p.add_argument("--ground-truth", type=Path, required=True)
    p.add_argument("--fps", type=float, default=None, help="the camera's rate (default: the config's camera.fps, "
                                                           "else 30)")
    p.add_argument("--bench-seconds", type=float, default=3.0)
    p.add_argument("--work", type=Path, default=None, help="folder for inspector run's temporary state")
    p.add_argument("--out", type=Path, required=True, help="folder for shipped.json, shipped.md and the steps' JSON")
    a = p.parse_args()
    r = measure(a)
    text = table(r)
    (a.out / "shipped.json").write_text(json.dumps(r, indent=1) + "\n")
    (a.out / "shipped.md").write_text(text + "\n")
    print(text)
    print(f"wrote {a.out / 'shipped.json'} and {a.out / 'shipped.md'} ({r['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
