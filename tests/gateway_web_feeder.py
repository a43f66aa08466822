"""A made-up station for the web page's tests and benchmark (no tests here): result headers with small PNG
images, status headers, preview JPEGs, an in-memory History; and, run as a script, a gateway process that
serves the page over a Hub and feeds it on command.

    python tests/gateway_web_feeder.py [--users FILE.json]
    stdout: "http: http://127.0.0.1:PORT/ ..." once serving; then per command on stdin:
      feed N RATE [all]  -> N results at RATE/s, with images on failed parts (all: on every part);
                            "progress T_WALL COUNT" every 0.1 s, then "fed COUNT"
      drift STATE        -> the following statuses carry a drift object in STATE (ok|warning; none: no
                            object); "drift STATE" back
      quit
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inspector.gateway.config import HttpConfig  # noqa: E402
from inspector.gateway.hub import Hub, PartResult  # noqa: E402

ROIS = [{"name": "left", "x": 8, "y": 8, "width": 48, "height": 48},
        {"name": "right", "x": 72, "y": 8, "width": 48, "height": 48}]
KINDS = ("input", "reconstruction", "heatmap")


def part_images(seed: int, size: int = 64) -> dict[str, bytes]:
    """PNGs of one crop as the station sends them: a brushed-metal part with a scratch (input), the part
    without it (reconstruction), and the difference in JET colours over the crop (heat map)."""
    rng = np.random.default_rng(seed)
    base = np.full((size, size), 150, np.float32) + rng.normal(0, 6, (size, size)).astype(np.float32)
    base = cv2.GaussianBlur(base, (1, 9), 0)  # brushed along one axis
    recon = np.clip(base, 0, 255).astype(np.uint8)
    scratched = recon.copy()
    x0, y0 = int(rng.integers(8, size // 2)), int(rng.integers(8, size - 8))
    cv2.line(scratched, (x0, y0), (x0 + size // 3, y0 + int(rng.integers(-10, 10))), 70, 2)
    diff = cv2.GaussianBlur(cv2.absdiff(scratched, recon), (7, 7), 0)
    jet = cv2.applyColorMap(cv2.normalize(diff, None, 0, 255, cv2.NORM_MINMAX), cv2.COLORMAP_JET)
    heat = cv2.addWeighted(cv2.cvtColor(scratched, cv2.COLOR_GRAY2BGR), 0.5, jet, 0.5, 0)
    enc = lambda img: cv2.imencode(".png", img)[1].tobytes()  # noqa: E731
    return {"input": enc(cv2.cvtColor(scratched, cv2.COLOR_GRAY2BGR)),
            "reconstruction": enc(cv2.cvtColor(recon, cv2.COLOR_GRAY2BGR)), "heatmap": enc(heat)}


VARIANTS = [part_images(i) for i in range(8)]


def verdict_of(seq: int) -> str:
    return "error" if seq % 30 == 0 else "fail" if seq % 7 == 0 else "pass"


def result(seq: int, t: float | None = None, *, images: bool | None = None) -> tuple[dict[str, Any], list[bytes]]:
    """A result header as the station publishes it (docs/protocol.md) and its images; failed parts (and,
    with images=True, every part) carry input/reconstruction/heat map PNGs of both ROIs."""
    t = time.time() if t is None else t
    verdict = verdict_of(seq)
    rois = [{**r, "score": None if verdict == "error" else (0.4 if verdict == "fail" and i == 0 else 0.1),
             "threshold": 0.25, "verdict": "error" if verdict == "error" else
             ("fail" if verdict == "fail" and i == 0 else "pass")} for i, r in enumerate(ROIS)]
    send = verdict != "pass" if images is None else images
    descs = [{"roi": r["name"], "kind": k, "format": "png", "width": 64, "height": 64, "channels": 3}
             for r in ROIS for k in KINDS] if send else []
    header = {"schema_version": 1, "type": "result", "sequence": seq, "station_id": "line-a", "run_id": "0badc0de",
              "part_id": f"LOT7-{seq:06d}", "frame": seq * 3, "trigger": "external", "captured_at": t - 0.02,
              "published_at": t, "latency_ms": 12.0 + (seq % 10), "verdict": verdict,
              "error": "engine failed" if verdict == "error" else None, "model_id": "ours-proj-1ec412cd591b",
              "rois": rois, "images": descs}
    return header, [VARIANTS[(seq + i // 3) % len(VARIANTS)][d["kind"]] for i, d in enumerate(descs)]


def drift(state: str) -> dict[str, Any]:
    """A status topic's `drift` object (docs/protocol.md) in STATE: "warning" is a line whose parts moved up."""
    shift = 2.4 if state == "warning" else 0.2
    reason = ("scores of good-looking parts have moved up by 2.4 normal spreads since the model was trained (the "
              "median of the last 200 parts): lighting, camera or part change? False rejects will climb"
              if state == "warning" else "scores of the last 200 parts match the model's held-out good parts")
    return {"state": state, "reason": reason, "model_id": "ours-proj-1ec412cd591b", "window_n": 200,
            "min_parts": 50, "reference_n": 40, "warn_shift": 1.0, "median_shift": shift, "ks": 0.61 if shift > 1 else 0.08,
            "fail_rate_recent": 0.19 if shift > 1 else 0.01, "fail_rate_expected": 0.025}


def status(parts: int, *, camera: str = "open", drift: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**({"drift": drift} if drift is not None else {}), "schema_version": 1, "type": "status", "station_id": "line-a", "run_id": "0badc0de",
            "started_at": time.time() - 60, "published_at": time.time(), "uptime_s": 60.0, "first_sequence": 1,
            "last_sequence": parts, "model_id": "ours-proj-1ec412cd591b", "backend": "onnxruntime",
            "final": False, "frames_captured": parts * 3, "frames_examined": parts * 3, "parts_triggered": parts,
            "parts_inspected": parts, "frames_dropped": {"queue_full": 2, "bad_trigger": 1}, "fps": 300.0,
            "latency_p50_ms": 14.5, "latency_p99_ms": 21.0,
            "camera": {"state": camera, "error": None, "reconnects": 0, "source": "/dev/video0"},
            "journal": {"state": "ok", "pending": 0}, "image_store": {"state": "ok", "bytes": 5 << 20,
                                                                         "quota_bytes": 2 << 30}}


def preview(frame: int) -> tuple[dict[str, Any], bytes]:
    img = np.full((64, 128, 3), 60, np.uint8)
    x = (frame * 4) % 128
    cv2.rectangle(img, (x, 16), (x + 24, 40), (200, 200, 200), -1)
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    return ({"schema_version": 1, "type": "preview", "station_id": "line-a", "run_id": "0badc0de", "frame": frame,
             "captured_at": time.time(), "width": 128, "height": 64, "frame_width": 128, "frame_height": 64,
             "rois": [{k: r[k] for k in ("name", "x", "y", "width", "height")} for r in ROIS]}, jpeg)


class MemoryHistory:
    """The History protocol over lists (what gateway/store.py does with SQLite); images of failed parts."""

    def __init__(self) -> None:
        self.headers: dict[int, dict[str, Any]] = {}
        self.stored: dict[int, list[tuple[dict[str, Any], bytes]]] = {}
        self.lock = threading.Lock()
        self.image_requests = 0

    def add(self, header: dict[str, Any], images: list[bytes]) -> None:
        with self.lock:
            self.headers[header["sequence"]] = header
            if header["verdict"] != "pass":
                self.stored[header["sequence"]] = list(zip(header["images"], images, strict=True))

    def search(self, *, verdict: str | None = None, since: float | None = None, until: float | None = None,
               part_id: str | None = None, limit: int = 100, before_sequence: int | None = None,
               ) -> list[dict[str, Any]]:
        with self.lock:
            out = [h for s, h in sorted(self.headers.items(), reverse=True)
                   if (verdict is None or h["verdict"] == verdict) and (since is None or h["captured_at"] >= since)
                   and (until is None or h["captured_at"] <= until) and (not part_id or part_id in h["part_id"])
                   and (before_sequence is None or s < before_sequence)]
        return out[:limit]

    def get(self, sequence: int) -> dict[str, Any] | None:
        with self.lock:
            return self.headers.get(sequence)

    async def images(self, sequence: int) -> list[tuple[dict[str, Any], bytes]]:
        self.image_requests += 1
        with self.lock:
            return list(self.stored.get(sequence, []))


def take(hub: Hub, history: MemoryHistory, seq: int, t: float | None = None, images: bool | None = None) -> None:
    header, imgs = result(seq, t, images=images)
    history.add(header, imgs)
    hub.on_result(PartResult.from_message(header, imgs))


async def _serve(users: dict[str, str]) -> None:
    from inspector.gateway.web import serve_http

    hub, history = Hub(), MemoryHistory()
    hub.history = history
    hub.on_status(status(0))
    hub.on_preview(*preview(0))
    server = asyncio.create_task(serve_http(hub, HttpConfig.model_construct(bind="127.0.0.1:0", users=users, preview_fps=5.0),
                                            lambda line: print(line, flush=True), "line-a"))
    loop = asyncio.get_running_loop()
    frame = 0
    drift_now: dict[str, Any] | None = None

    async def previews() -> None:
        nonlocal frame
        while True:
            await asyncio.sleep(0.2)
            frame += 1
            hub.on_preview(*preview(frame))
            hub.on_status(status(hub.last_sequence, drift=drift_now))

    side = asyncio.create_task(previews())
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line or line[0] == "quit":
            break
        if line[0] == "drift":
            drift_now = None if line[1] == "none" else drift(line[1])
            print(f"drift {line[1]}", flush=True)
        if line[0] == "feed":
            n, rate = int(line[1]), float(line[2])
            images = True if line[3:] == ["all"] else None
            t0, start, last_progress = time.monotonic(), hub.last_sequence, 0.0
            for i in range(1, n + 1):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                take(hub, history, start + i, images=images)
                if time.monotonic() - last_progress >= 0.1:
                    last_progress = time.monotonic()
                    print(f"progress {time.time():.4f} {hub.counters.parts}", flush=True)
            print(f"progress {time.time():.4f} {hub.counters.parts}", flush=True)
            print(f"fed {hub.counters.parts}", flush=True)
    side.cancel()
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", help="JSON file {user: password hash}")
    args = ap.parse_args()
    users = json.loads(Path(args.users).read_text()) if args.users else {}
    asyncio.run(_serve(users))


if __name__ == "__main__":
    main()
