"""The camera in its own thread: open with timeouts, number every frame, reconnect with backoff.

A file source ends the stream at its end (replay); --realtime paces it against a monotonic clock.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import structlog

from inspector.config import CameraConfig
from inspector.records import Frame
from inspector.stats import Stats

log = structlog.get_logger("inspector.capture")

END = None  # put on the frame queue when capture is over
_APIS = {"any": cv2.CAP_ANY, "ffmpeg": cv2.CAP_FFMPEG, "gstreamer": cv2.CAP_GSTREAMER, "v4l2": cv2.CAP_V4L2}

# OpenCV prints its own warning for every failed open; our log says it once, with the backoff.
with contextlib.suppress(AttributeError):
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def source_kind(source: int | str) -> str:
    """'device' (index or /dev/video*), 'pipeline' (GStreamer), 'stream' (URL) or 'file' (a video, or an
    image sequence such as frames/%05d.png)."""
    if isinstance(source, int) or source.isdigit() or source.startswith("/dev/video"):
        return "device"
    if "!" in source:
        return "pipeline"
    if "://" in source:
        return "stream"
    return "file"


class Capture(threading.Thread):
    """Reads frames into `frames` (a bounded queue), then END; never waits on the stages downstream.

    With `lossless` (default: a file read as fast as possible) it waits for room instead of dropping;
    `realtime` paces a file at camera.fps (or its recorded rate) like a camera.
    """

    def __init__(self, cfg: CameraConfig, frames: queue.Queue, stats: Stats, realtime: bool = False,
                 lossless: bool | None = None) -> None:
        super().__init__(name="capture", daemon=True)
        self.cfg = cfg
        self.frames = frames
        self.stats = stats
        self.kind = source_kind(cfg.source)
        self.realtime = realtime and self.kind == "file"  # a live source paces itself
        self.lossless = (self.kind == "file" and not realtime) if lossless is None else lossless
        self.opened = threading.Event()  # set once the source has been opened the first time
        self.latest: Frame | None = None  # the newest frame read, for the preview topic (network/preview.py)
        self._halt = threading.Event()
        self._next_number = 0
        self._consumer_gone = False

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # a bug: report it on the status topic and end the stream cleanly
            log.exception("capture failed", error=str(e))
            self.stats.camera("failed", error=str(e))
        finally:
            self._put(END, force=True)

    def _run(self) -> None:
        delay = self.cfg.reconnect_min_s
        state, attempts = "connecting", 0
        self.stats.camera(state)
        while not self._halt.is_set():
            cap, error = self._open()
            attempts += 1
            if cap is None:
                self.stats.camera(state, error=error, reconnect=attempts > 1)
                log.warning("camera open failed", source=str(self.cfg.source), error=error, retry_in_s=delay)
                self._halt.wait(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
                continue
            self.stats.camera("open", reconnect=attempts > 1)
            self.opened.set()
            log.info("camera open", source=str(self.cfg.source), backend=cap.getBackendName(),
                     width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            got_any = self._read_all(cap)
            cap.release()
            if got_any:
                delay = self.cfg.reconnect_min_s
            if self._halt.is_set():
                break
            if self._limit_reached():
                self.stats.camera("ended")
                log.info("frame limit reached", frames=self._next_number)
                return
            if self.kind == "file":
                if self.cfg.loop and got_any:
                    attempts = 0  # starting the file again is not a reconnect
                    continue
                self.stats.camera("ended")
                log.info("end of video", frames=self._next_number)
                return
            state = "reconnecting"
            self.stats.camera(state, error="no frame from the camera (read failed or timed out)")
            log.warning("camera lost", source=str(self.cfg.source), retry_in_s=delay)
            self._halt.wait(delay)
            delay = min(delay * 2, self.cfg.reconnect_max_s)
        self.stats.camera("stopped")

    def _open(self) -> tuple[cv2.VideoCapture | None, str | None]:
        src = self.cfg.source
        if self.kind == "file" and "%" not in str(src) and not Path(str(src)).is_file():  # %: image sequence
            return None, f"no such file: {src}"
        if self.kind == "device" and isinstance(src, str) and src.isdigit():
            src = int(src)
        api = _APIS[self.cfg.api]
        if api == cv2.CAP_ANY and self.kind == "pipeline":
            api = cv2.CAP_GSTREAMER
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.cfg.open_timeout_ms,
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.cfg.read_timeout_ms]
        cap = cv2.VideoCapture(src, api, params)
        if not cap.isOpened():
            cap.release()
            return None, f"cannot open {src} (backend {self.cfg.api})"
        if self.kind == "device":  # requests; the camera may pick the nearest mode it has
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width),
                                (cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height), (cv2.CAP_PROP_FPS, self.cfg.fps)):
                if value:
                    cap.set(prop, value)
        return cap, None

    def _read_all(self, cap: cv2.VideoCapture) -> bool:
        """Read until the source fails, ends or we are stopped; True if any frame was read."""
        fps = self.cfg.fps or cap.get(cv2.CAP_PROP_FPS) or 30.0
        t0 = time.monotonic()
        k = 0
        got_any = False
        while not self._halt.is_set() and not self._limit_reached():
            if self.realtime:
                wait = t0 + k / fps - time.monotonic()
                if wait > 0 and self._halt.wait(wait):
                    break
            ok, image = cap.read()
            if not ok or image is None:
                return got_any
            got_any = True
            k += 1
            if image.ndim == 2:
                image = image[:, :, None]
            if image.dtype != np.uint8 or image.shape[2] not in (1, 3):
                self.stats.drop("corrupt")
                continue
            frame = Frame(self._next_number, image, time.monotonic(), time.time())
            self._next_number += 1
            self.stats.frame_captured()
            self.latest = frame  # one reference, no copy: the preview thread reads it when due
            self._put(frame)
        return got_any

    def _limit_reached(self) -> bool:
        return 0 < self.cfg.max_frames <= self._next_number

    def _put(self, frame: Frame | None, force: bool = False) -> None:
        if not (self.lossless or force):
            try:
                self.frames.put_nowait(frame)
            except queue.Full:
                self.stats.drop("queue_full")
            return
        while True:  # lossless: wait for room, but never forever once stopped and the consumer is gone
            try:
                self.frames.put(frame, timeout=0.1)
                return
            except queue.Full:
                if self._consumer_gone:
                    return

    def consumer_gone(self) -> None:
        """The trigger stage has ended: stop waiting for room in the queue."""
        self._consumer_gone = True
