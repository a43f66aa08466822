"""The `preview` topic (docs/protocol.md): a subscriber receives small JPEGs of the latest frame at about
`publish.preview_fps` during a real-time replay, and the results are the same as without previews."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq
from test_inspector_support import FakeEngine, free_endpoint, write_conveyor_video

from inspector.config import InspectorConfig
from inspector.network.preview import preview_message
from inspector.pipeline import Pipeline
from inspector.records import Frame, Roi


def _config(video: Path, bind: str, preview_fps: float, preview_width: int = 640) -> InspectorConfig:
    return InspectorConfig(
        station_id="unit", camera={"source": str(video)},
        rois=[{"name": "center", "x": 64, "y": 0, "width": 64, "height": 64}],
        trigger={"mode": "presence"},
        publish={"bind": bind, "backfill_bind": "", "status_interval_s": 0.2, "wait_subscribers": 1 if bind else 0,
                 "preview_fps": preview_fps, "preview_width": preview_width},
        engine={"max_batch": 4, "max_wait_ms": 2}, state={"journal": False})


def _run(cfg: InspectorConfig, realtime: bool) -> tuple[list[tuple[int, str]], Pipeline]:
    results: list[tuple[int, str]] = []
    p = Pipeline(cfg, FakeEngine(), realtime=realtime,  # type: ignore[arg-type]
                 after_publish=[lambda h, _i: results.append((h["frame"], h["verdict"]))])
    assert p.run(handle_signals=False) == 0
    return results, p


def test_a_subscriber_gets_previews_at_about_the_configured_rate_and_results_are_unchanged(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=8, fps=50.0)
    endpoint, fps = free_endpoint(), 5.0
    received: list[tuple[float, dict[str, Any], bytes]] = []
    results: list[dict[str, Any]] = []
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    for topic in (b"preview", b"result"):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(endpoint)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            if sub.poll(50):
                topic, header, *frames = sub.recv_multipart()
                h = json.loads(header)
                if topic == b"preview":
                    received.append((time.monotonic(), h, frames[0]))
                else:
                    results.append(h)

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    t0 = time.monotonic()
    with_preview, p = _run(_config(v.video, endpoint, fps, preview_width=96), realtime=True)
    elapsed = time.monotonic() - t0
    time.sleep(0.3)
    stop.set()
    t.join(2)
    sub.close(0)
    ctx.term()

    without, q = _run(_config(v.video, "", 0.0), realtime=False)
    assert with_preview == without and len(without) == len(v.rows)  # every part, same verdicts and frames
    assert [(h["frame"], h["verdict"]) for h in results] == with_preview
    assert not p.stats.dropped and q.preview.encoded == 0 and not q.preview.is_alive()

    expected = fps * elapsed
    assert 0.5 * expected <= len(received) <= 1.2 * expected + 1, (len(received), elapsed)
    gaps = np.diff([r[0] for r in received])
    assert gaps.min() > 0.5 / fps  # never a burst
    frames = [h["frame"] for _, h, _ in received]
    assert frames == sorted(set(frames)) and frames[-1] < v.frames
    for _, h, jpeg in received:
        assert h["type"] == "preview" and h["schema_version"] == 1 and h["station_id"] == "unit"
        assert h["run_id"] == p.run_id and h["captured_at"] > 0
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[:2] == (h["height"], h["width"]) == (32, 96)  # 192×64 scaled to 96
        assert (h["frame_width"], h["frame_height"]) == (192, 64)
        assert h["rois"] == [{"name": "center", "x": 32, "y": 0, "width": 32, "height": 32}]
    assert p.preview.sent == len(received) and p.preview.errors == 0


def test_preview_message_keeps_small_frames_and_grey_frames_as_they_are() -> None:
    grey = np.full((40, 60, 1), 128, np.uint8)
    topic, header, jpeg = preview_message(Frame(7, grey, 0.0, 1.5), [Roi("a", 1, 2, 3, 4)], 640, "s", "r")
    h = json.loads(header)
    assert topic == b"preview" and (h["width"], h["height"], h["frame"]) == (60, 40, 7)
    assert h["rois"] == [{"name": "a", "x": 1, "y": 2, "width": 3, "height": 4}]
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2] == (40, 60)
