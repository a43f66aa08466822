"""The low-rate `preview` topic: the camera's latest frame as a small JPEG with its ROIs, for live views.

Off the hot path: the capture thread only keeps a reference to its newest frame (`Capture.latest`); this
thread looks at it `publish.preview_fps` times a second, scales it down to at most `publish.preview_width`
pixels and encodes it, and leaves the message in a one-message slot. The publisher thread, which owns the
socket, sends whatever the slot holds when it next wakes (`take()`); a preview not taken before the next one
is ready is replaced (dropped), so a busy publisher never queues previews and capture or scoring never wait.

    [b"preview", header JSON, JPEG]   header: docs/protocol.md, "preview"
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
import structlog

from inspector.config import PublishConfig, RoiConfig
from inspector.records import Frame, Roi
from inspector.stages.crop import frame_rois
from inspector.stages.encode import SCHEMA_VERSION

log = structlog.get_logger("inspector.preview")

PREVIEW_TOPIC = b"preview"
JPEG_QUALITY = 70


def preview_message(frame: Frame, rois: list[Roi], max_width: int, station_id: str, run_id: str) -> list[bytes]:
    """[topic, header, JPEG] for one frame: scaled down (INTER_AREA) to at most `max_width` pixels wide, ROIs
    given in the preview's pixels."""
    image = frame.image
    h, w = image.shape[:2]
    scale = min(1.0, max_width / w)
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    ph, pw = image.shape[:2]
    header = {
        "schema_version": SCHEMA_VERSION, "type": "preview", "station_id": station_id, "run_id": run_id,
        "frame": frame.number, "captured_at": round(frame.t_wall, 6), "width": pw, "height": ph,
        "frame_width": w, "frame_height": h,
        "rois": [{"name": r.name, "x": round(r.x * scale), "y": round(r.y * scale),
                  "width": max(1, round(r.width * scale)), "height": max(1, round(r.height * scale))} for r in rois],
    }
    return [PREVIEW_TOPIC, json.dumps(header).encode(), jpeg.tobytes()]


class PreviewEncoder(threading.Thread):
    """Encodes the latest frame `fps` times a second into a slot the publisher takes from; see the module."""

    def __init__(self, cfg: PublishConfig, latest: Callable[[], Frame | None], rois: list[RoiConfig], *,
                 station_id: str, run_id: str) -> None:
        super().__init__(name="preview", daemon=True)
        self.interval = 1.0 / cfg.preview_fps if cfg.preview_fps > 0 else 0.0
        self.max_width = cfg.preview_width
        self.latest = latest
        self.roi_config = rois
        self.station_id = station_id
        self.run_id = run_id
        self.encoded = 0  # previews made
        self.sent = 0  # previews the publisher took
        self.errors = 0
        self._lock = threading.Lock()
        self._slot: list[bytes] | None = None
        self._halt = threading.Event()
        self._rois: tuple[tuple[int, ...], list[Roi]] | None = None  # resolved for one frame shape

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def start(self) -> None:
        if self.enabled:
            super().start()

    def stop(self, timeout: float | None = 2.0) -> None:
        self._halt.set()
        if self.ident is not None and self is not threading.current_thread():
            self.join(timeout)

    def take(self) -> list[bytes] | None:
        """The message waiting to be sent, if any (called by the publisher's thread)."""
        with self._lock:
            msg, self._slot = self._slot, None
        if msg is not None:
            self.sent += 1
        return msg

    def run(self) -> None:
        last_frame = -1
        next_due = time.monotonic()
        while not self._halt.wait(max(0.0, next_due - time.monotonic())):
            next_due = max(next_due + self.interval, time.monotonic())  # no burst to catch up after a stall
            frame = self.latest()
            if frame is None or frame.number == last_frame:
                continue
            last_frame = frame.number
            try:
                msg = preview_message(frame, self._frame_rois(frame), self.max_width, self.station_id, self.run_id)
            except Exception as e:  # a preview is never worth stopping for
                self.errors += 1
                if self.errors <= 3:
                    log.warning("preview failed", error=str(e))
                continue
            with self._lock:
                self._slot = msg
            self.encoded += 1

    def _frame_rois(self, frame: Frame) -> list[Roi]:
        shape = frame.image.shape
        if self._rois is None or self._rois[0] != shape:
            try:
                rois = frame_rois(self.roi_config, shape)
            except Exception:  # an ROI outside the frame: the pipeline reports it; the preview shows none
                rois = []
            self._rois = (shape, rois)
        return self._rois[1]
