"""The pipeline in-process over real video files: several ROIs per part, a failing engine (error verdicts,
never silence), an ROI outside the frame (exit 2), grey models, the header and status messages.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from test_inspector_support import FakeEngine, write_conveyor_video

from common.images import fit_image
from inspector.config import InspectorConfig
from inspector.errors import InspectorError
from inspector.pipeline import Pipeline
from inspector.stages.encode import heatmap_overlay


def config(video: Path, **sections: Any) -> InspectorConfig:
    base: dict[str, Any] = {"station_id": "unit", "camera": {"source": str(video)},
                            "publish": {"bind": "", "status_interval_s": 0.1},
                            "engine": {"max_batch": 4, "max_wait_ms": 2}}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return InspectorConfig(**base)


def run(cfg: InspectorConfig, engine: FakeEngine) -> tuple[int, list[dict[str, Any]], list[list[bytes]], Pipeline]:
    headers: list[dict[str, Any]] = []
    images: list[list[bytes]] = []

    def collect(h: dict[str, Any], imgs: list[bytes]) -> None:
        headers.append(h)
        images.append(imgs)

    p = Pipeline(cfg, engine, after_publish=[collect])  # type: ignore[arg-type]
    code = p.run(handle_signals=False)
    return code, headers, images, p


def test_two_rois_per_part_with_their_own_thresholds(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=2)
    rois = [{"name": "left", "x": 0, "y": 0, "width": 64, "height": 64},
            {"name": "middle", "x": 64, "y": 0, "width": 64, "height": 64}]
    cfg = config(v.video, rois=rois, trigger={"mode": "continuous", "every_n": 5},
                 decision={"threshold": 1000.0, "roi_thresholds": {"middle": 0.0}})
    code, headers, images, p = run(cfg, FakeEngine())
    assert code == 0
    assert len(headers) == (v.frames + 4) // 5 == p.stats.parts_triggered
    assert [h["sequence"] for h in headers] == list(range(1, len(headers) + 1))
    first = headers[0]
    assert [(r["name"], r["threshold"], r["verdict"]) for r in first["rois"]] == [
        ("left", 1000.0, "pass"), ("middle", 0.0, "fail")]
    assert first["verdict"] == "fail"  # any ROI failing fails the part
    assert len(images[0]) == len(first["images"]) == 6  # 2 ROIs × input, reconstruction, heat map
    status = p.publisher.status(final=True)
    assert status["parts_inspected"] == len(headers) and status["failed"] == len(headers)
    assert status["frames_captured"] == v.frames and status["camera"]["state"] == "ended"


def test_failing_engine_publishes_an_error_verdict_for_every_part(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=4)
    cfg = config(v.video, trigger={"mode": "presence"}, publish={"send_images": "failed"})
    code, headers, images, p = run(cfg, FakeEngine(fail=True))
    assert code == 0
    assert len(headers) == 4 and all(h["verdict"] == "error" for h in headers)
    assert all("illegal memory access" in h["error"] for h in headers)
    assert all(r["score"] is None for h in headers for r in h["rois"])
    assert all([i["kind"] for i in h["images"]] == ["input"] for h in headers)  # what was inspected, at least
    assert p.stats.verdicts.errors == 4


def test_roi_outside_the_frame_stops_with_exit_code_2(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=1)
    cfg = config(v.video, rois=[{"name": "off", "x": 150, "y": 0, "width": 64, "height": 64}])
    code, headers, _, p = run(cfg, FakeEngine())
    assert code == 2 and isinstance(p.fatal, InspectorError)
    assert "roi 'off'" in str(p.fatal) and "192x64" in str(p.fatal)


def test_crops_become_model_input_size_and_channels() -> None:
    bgr = np.zeros((100, 100, 3), np.uint8)
    bgr[..., 2] = 255  # red
    grey = fit_image(bgr, (32, 32), 1)
    assert grey.shape == (32, 32, 1) and abs(int(grey[0, 0, 0]) - 76) <= 1  # BGR -> grey weights
    assert fit_image(grey, (16, 16), 3).shape == (16, 16, 3)


def test_heatmap_overlay_is_red_where_the_map_is_high() -> None:
    crop = np.full((8, 8, 1), 128, np.uint8)
    amap = np.zeros((8, 8), np.float32)
    amap[:, 4:] = 10.0
    overlay = heatmap_overlay(crop, amap, threshold=5.0)
    assert overlay.shape == (8, 8, 3)
    assert overlay[0, 7, 2] > overlay[0, 7, 0]  # red channel dominates where map = 2 × threshold
    assert overlay[0, 0, 0] > overlay[0, 0, 2]  # blue where it is zero


def test_every_header_and_status_field_is_documented(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=1)
    cfg = config(v.video, trigger={"mode": "continuous", "every_n": 1000})
    _, headers, _, p = run(cfg, FakeEngine())
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    status = p.publisher.status()
    fields = [*headers[0], *headers[0]["rois"][0], *headers[0]["images"][0], *status, *status["camera"]]
    missing = [f for f in fields if f"`{f}`" not in doc]
    assert not missing, f"not documented in docs/protocol.md: {missing}"


def _plc(endpoint: str, part_ids: list[str]) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(endpoint)
    for pid in part_ids:
        time.sleep(0.1)
        push.send_json({"part_id": pid})
    push.close()
    ctx.term()


def test_external_trigger_from_a_plc_process_gives_one_result_per_message(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=2, fps=200.0)
    endpoint = "ipc://" + str(tmp_path / "trigger.ipc")
    cfg = config(v.video, camera={"loop": True}, trigger={"mode": "external", "endpoint": endpoint})
    headers: list[dict[str, Any]] = []
    p = Pipeline(cfg, FakeEngine(), realtime=True, after_publish=[lambda h, _i: headers.append(h)])  # type: ignore[arg-type]
    runner = threading.Thread(target=lambda: p.run(handle_signals=False))
    runner.start()
    plc = mp.get_context("spawn").Process(target=_plc, args=(endpoint, ["A-1", "A-2", "A-3"]))
    plc.start()
    plc.join(20)
    deadline = time.monotonic() + 10
    while len(headers) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    p.request_stop()
    runner.join(10)
    assert [h["part_id"] for h in headers] == ["A-1", "A-2", "A-3"]
    assert all(h["trigger"] == "external" for h in headers)
    assert headers[0]["frame"] < headers[1]["frame"] < headers[2]["frame"]


def test_a_bug_in_a_stage_ends_the_run_with_exit_code_1_instead_of_hanging(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=2)
    cfg = config(v.video, trigger={"mode": "continuous"})
    p = Pipeline(cfg, FakeEngine())  # type: ignore[arg-type]

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    p._make_part = broken  # type: ignore[method-assign]
    t0 = time.monotonic()
    assert p.run(handle_signals=False) == 1
    assert isinstance(p.fatal, RuntimeError) and time.monotonic() - t0 < 10
    assert p.publisher.status()["parts_inspected"] == 0
