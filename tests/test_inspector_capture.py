"""Capture: monotonic frame numbers, end of a file, realtime pacing, a camera lost mid-run and back with backoff.

Real video files through OpenCV; the flaky network camera is a source wrapper around frames in memory.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

import numpy as np
from structlog.testing import capture_logs
from test_inspector_support import write_conveyor_video

from inspector.config import CameraConfig
from inspector.records import Frame
from inspector.stages.capture import END, Capture, source_kind
from inspector.stats import Stats


def drain(q: queue.Queue, timeout: float = 20.0) -> list[Frame]:
    out: list[Frame] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = q.get(timeout=timeout)
        if item is END:
            return out
        out.append(item)
    raise AssertionError("no END from capture")


def test_source_kinds() -> None:
    assert source_kind(0) == source_kind("2") == source_kind("/dev/video1") == "device"
    assert source_kind("rtsp://10.0.0.5/stream1") == "stream"
    assert source_kind("v4l2src ! videoconvert ! appsink") == "pipeline"
    assert source_kind("/data/line.mp4") == "file"


def test_file_source_reads_every_frame_in_order_then_ends(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=3)
    q: queue.Queue = queue.Queue(2)  # smaller than the video: fast replay must wait, not drop
    stats = Stats()
    cap = Capture(CameraConfig(source=str(v.video)), q, stats)
    cap.start()
    frames = drain(q)
    cap.join(5)
    assert [f.number for f in frames] == list(range(v.frames))
    assert frames[0].image.shape == (64, 192, 3) and frames[0].image.dtype == np.uint8
    snap = stats.snapshot()
    assert snap["frames_captured"] == v.frames and snap["frames_dropped"] == {}
    assert snap["camera"]["state"] == "ended"


def test_realtime_paces_a_file_at_its_rate(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=1, fps=100.0)  # ~ 40 frames: 0.4 s
    q: queue.Queue = queue.Queue(1000)
    cap = Capture(CameraConfig(source=str(v.video)), q, Stats(), realtime=True)
    t0 = time.monotonic()
    cap.start()
    frames = drain(q)
    elapsed = frames[-1].t_mono - t0
    expected = (len(frames) - 1) / 100.0  # as fast as possible would be a few ms
    assert expected - 0.02 < elapsed < expected + 0.5, elapsed


class FlakyCamera:
    """A network camera: delivers a few frames, then the link drops; some reconnects fail."""

    def __init__(self, script: list[int]) -> None:
        self.script = script  # per open attempt: -1 = open fails, n = n frames then the stream dies
        self.opens: list[float] = []

    def open(self) -> object | None:
        self.opens.append(time.monotonic())
        n = self.script.pop(0) if self.script else -1
        return None if n < 0 else _Stream(n)


class _Stream:
    def __init__(self, n: int) -> None:
        self.left = n

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.full((24, 32, 3), 100, np.uint8)

    def get(self, _prop: int) -> float:
        return 0.0

    def getBackendName(self) -> str:  # noqa: N802 - OpenCV's name
        return "FAKE"

    def release(self) -> None:
        pass


def test_camera_lost_mid_run_reconnects_with_backoff_and_reports_state() -> None:
    camera = FlakyCamera([-1, 5, -1, -1, 4])
    q: queue.Queue = queue.Queue(100)
    stats = Stats()
    states: list[str] = []
    cfg = CameraConfig(source="rtsp://camera.local/stream", reconnect_min_s=0.05, reconnect_max_s=0.2)
    cap = Capture(cfg, q, stats)
    cap._open = lambda: ((c := camera.open()), None if c else "cannot open")  # type: ignore[method-assign]
    original = stats.camera

    def record(state: str, error: str | None = None, reconnect: bool = False) -> None:
        states.append(state)
        original(state, error, reconnect)

    stats.camera = record  # type: ignore[method-assign]
    with capture_logs() as logs:
        cap.start()
        frames: list[Frame] = []
        while len(frames) < 9:
            frames.append(q.get(timeout=10))
        snap = stats.snapshot()
        cap.stop()
        cap.join(5)
    assert [f.number for f in frames] == list(range(9))  # numbering continues across reconnects
    assert snap["camera"]["reconnects"] == 4
    # connecting (fails) -> open -> lost -> reconnecting (fails twice) -> open
    assert states[:4] == ["connecting", "connecting", "open", "reconnecting"]
    assert states.count("open") == 2 and "reconnecting" in states
    # backoff: 0.05 after the first failure; reset once frames flowed; then doubling to the 0.2 cap
    delays = [e["retry_in_s"] for e in logs if e["event"] in ("camera open failed", "camera lost")][:4]
    assert delays == [0.05, 0.05, 0.1, 0.2]
    waited = np.diff(camera.opens)
    assert all(w >= d * 0.9 for w, d in zip(waited, delays, strict=True))  # and it really waited
