"""Publish results and status over ZeroMQ: multipart [topic, header JSON, images…], one gapless sequence.

One thread owns the socket. It takes every result waiting in its queue (up to MAX_BATCH), numbers them,
runs the `before_publish` hooks, has the recorder store images and journal the whole batch in one
commit, then sends them one by one and runs the `after_publish` hooks: a verdict is journaled before
it is published, and the journal's fsync is paid once per batch, not once per part.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import structlog
import zmq

from inspector.config import PublishConfig
from inspector.records import Result, RoiResult
from inspector.security import SecurityError, apply_server_curve
from inspector.stats import Stats

if TYPE_CHECKING:
    from inspector.recorder import Recorder

log = structlog.get_logger("inspector.publish")

SCHEMA_VERSION = 1
RESULT_TOPIC = b"result"
STATUS_TOPIC = b"status"
END = None
MAX_BATCH = 256  # results journaled in one commit at most

# (header, images) -> None. A hook may raise: it is logged and counted, publishing goes on.
PublishHook = Callable[[dict[str, Any], list[bytes]], None]


def encode_image(image: np.ndarray, fmt: str, jpeg_quality: int = 90) -> bytes:
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as {fmt}")
    return buf.tobytes()


def heatmap_overlay(crop: np.ndarray, amap: np.ndarray, threshold: float) -> np.ndarray:
    """The anomaly map in JET colours over the crop; red where the map reaches twice the threshold."""
    scale = 2 * threshold if threshold > 0 else max(float(amap.max()), 1e-6)
    heat = cv2.applyColorMap(np.clip(amap / scale * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    if heat.shape[:2] != crop.shape[:2]:
        heat = cv2.resize(heat, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    base = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR) if crop.shape[-1] == 1 or crop.ndim == 2 else crop
    return cv2.addWeighted(base, 0.5, heat, 0.5, 0)


def _roi_images(r: RoiResult, kinds: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    out: list[tuple[str, np.ndarray]] = []
    for kind in kinds:
        if kind == "input" and r.crop is not None:
            out.append((kind, r.crop))
        elif kind == "reconstruction" and r.reconstruction is not None:
            out.append((kind, r.reconstruction))
        elif kind == "heatmap" and r.anomaly_map is not None and r.crop is not None:
            out.append((kind, heatmap_overlay(r.crop, r.anomaly_map, r.threshold)))
    return out


@dataclass
class Outgoing:
    """One result ready to leave: its header (and the exact JSON sent), the images sent after it, and
    the images kept in the image store for a failed or error part, {(roi, kind): (format, bytes)}."""
    header: dict[str, Any]
    raw: bytes
    images: list[bytes]
    stored: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)


def build_result(result: Result, sequence: int, station_id: str, run_id: str, cfg: PublishConfig,
                 now_wall: float, now_mono: float) -> tuple[dict[str, Any], list[bytes]]:
    """The header and encoded images of one result message (documented field by field in docs/protocol.md)."""
    out = build_outgoing(result, sequence, station_id, run_id, cfg, now_wall, now_mono)
    return out.header, out.images


def build_outgoing(result: Result, sequence: int, station_id: str, run_id: str, cfg: PublishConfig,
                   now_wall: float, now_mono: float, store_kinds: Sequence[str] = ()) -> Outgoing:
    """The result message, plus the images the store keeps (`store_kinds` of a failed/error part).

    What is stored does not depend on what is sent: an image both sent and stored is encoded once.
    """
    part = result.part
    send = cfg.send_images == "all" or (cfg.send_images == "failed" and result.verdict != "pass")
    store = bool(store_kinds) and result.verdict != "pass"
    descriptors: list[dict[str, Any]] = []
    images: list[bytes] = []
    stored: dict[tuple[str, str], tuple[str, bytes]] = {}
    for r in result.rois:
        sent_kinds = list(cfg.images) if send else []
        kept_kinds = list(store_kinds) if store else []
        wanted = sent_kinds + [k for k in kept_kinds if k not in sent_kinds]  # sent ones in configured order
        for kind, img in _roi_images(r, wanted):
            data = encode_image(img, cfg.image_format, cfg.jpeg_quality)
            if kind in kept_kinds:
                stored[(r.name, kind)] = (cfg.image_format, data)
            if kind in sent_kinds:
                images.append(data)
                descriptors.append({"roi": r.name, "kind": kind, "format": cfg.image_format,
                                    "width": int(img.shape[1]), "height": int(img.shape[0]),
                                    "channels": int(img.shape[2]) if img.ndim == 3 else 1})
    header = {
        "schema_version": SCHEMA_VERSION,
        "type": "result",
        "sequence": sequence,
        "station_id": station_id,
        "run_id": run_id,
        "part_id": part.part_id,
        "frame": part.frame.number,
        "trigger": part.trigger,
        "captured_at": round(part.frame.t_wall, 6),
        "published_at": round(now_wall, 6),
        "latency_ms": round((now_mono - part.frame.t_mono) * 1000, 3),
        "verdict": result.verdict,
        "error": result.error,
        "model_id": result.model_id,
        "rois": [
            {"name": r.name, "x": roi.x, "y": roi.y, "width": roi.width, "height": roi.height,
             "score": None if r.score is None else round(r.score, 6), "threshold": r.threshold, "verdict": r.verdict}
            for r, roi in zip(result.rois, part.rois, strict=True)
        ],
        "images": descriptors,
    }
    return Outgoing(header, json.dumps(header).encode(), images, stored)


class Publisher(threading.Thread):
    """Consumes Results from `results` until END, publishing each and a status message every interval."""

    def __init__(self, cfg: PublishConfig, ctx: zmq.Context, results: queue.Queue, stats: Stats, *,
                 station_id: str, run_id: str, info: dict[str, Any], first_sequence: int = 1,
                 before_publish: Sequence[PublishHook] = (), after_publish: Sequence[PublishHook] = (),
                 status_sources: Sequence[Callable[[], dict[str, Any]]] = (),
                 abort: threading.Event | None = None, recorder: Recorder | None = None,
                 curve_secret: str | Path | None = None) -> None:
        super().__init__(name="publish", daemon=True)
        self.cfg = cfg
        self.results = results
        self.stats = stats
        self.station_id = station_id
        self.run_id = run_id
        self.info = info  # static fields of every status: model_id, backend, camera source
        self.first_sequence = first_sequence  # from the journal: numbers continue across restarts
        self.next_sequence = first_sequence
        self.recorder = recorder  # journal + image store, used and closed by this thread only
        self.curve_secret = curve_secret  # the station's key pair: CURVE server when set
        self.before_publish = list(before_publish)
        self.after_publish = list(after_publish)
        self.status_sources = list(status_sources)  # extra status fields (a journal's health, ...)
        self.abort = abort or threading.Event()  # upstream died: publish what is queued, then end
        self.subscribers = 0  # subscriptions to results seen so far (XPUB)
        self.hook_errors = 0
        self.bound = threading.Event()
        self.bind_error: str | None = None
        self.error: Exception | None = None
        self._ctx = ctx
        self._sock: zmq.Socket | None = None
        self._started_wall = time.time()

    def run(self) -> None:
        if self.cfg.bind:
            self._sock = self._ctx.socket(zmq.XPUB)
            self._sock.setsockopt(zmq.SNDHWM, self.cfg.send_hwm)
            self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)
            self._sock.setsockopt(zmq.LINGER, self.cfg.linger_ms)
            try:
                if self.curve_secret is not None:
                    apply_server_curve(self._sock, self.curve_secret)
                self._sock.bind(self.cfg.bind)
            except (zmq.ZMQError, SecurityError) as e:
                self.bind_error = f"publish.bind {self.cfg.bind}: {e}"
                self._sock.close(0)
                self._sock = None
        self.bound.set()
        if self.bind_error:
            return
        try:
            self._wait_for_subscribers()
            self._loop()
        except Exception as e:  # a bug: the supervisor sees it and exits 1
            self.error = e
            log.exception("publisher failed", error=str(e))
        finally:
            if self.recorder is not None:
                self.recorder.close()
            if self._sock is not None:
                self._sock.close()  # waits up to linger_ms for queued messages to leave

    def _loop(self) -> None:
        next_status = time.monotonic()
        while True:
            self._drain_subscriptions()
            now = time.monotonic()
            if now >= next_status:
                self._send_status(final=False)
                next_status = now + self.cfg.status_interval_s
            try:
                result = self.results.get(timeout=max(0.0, next_status - time.monotonic()))
            except queue.Empty:
                if self.abort.is_set():
                    self._send_status(final=True)
                    return
                continue
            batch, ended = [result], result is END
            while not ended and len(batch) < MAX_BATCH:  # everything already waiting: one journal commit
                try:
                    result = self.results.get_nowait()
                except queue.Empty:
                    break
                ended = result is END
                if not ended:
                    batch.append(result)
            if batch[0] is not END:
                self.publish_many(batch)
            if ended:
                self._send_status(final=True)
                return

    def publish(self, result: Result) -> None:
        self.publish_many([result])

    def publish_many(self, results: Sequence[Result]) -> None:
        """Number, record (journal before sending) and send results, in order."""
        store_kinds = self.recorder.store_kinds if self.recorder is not None else ()
        batch = []
        for result in results:
            out = build_outgoing(result, self.next_sequence, self.station_id, self.run_id, self.cfg,
                                 time.time(), time.monotonic(), store_kinds)
            self.next_sequence += 1
            self._run_hooks(self.before_publish, out.header, out.images)
            batch.append(out)
        if self.recorder is not None:
            self.recorder.record(batch)
        for out in batch:
            self._send(out)

    def _send(self, out: Outgoing) -> None:
        header = out.header
        if self._sock is not None:
            self._sock.send_multipart([RESULT_TOPIC, out.raw, *out.images], copy=False)
        self.stats.published(header["verdict"], header["latency_ms"] / 1000)
        with structlog.contextvars.bound_contextvars(sequence=header["sequence"]):
            level = log.debug if header["verdict"] == "pass" else log.info
            level("result", part_id=header["part_id"], frame=header["frame"], verdict=header["verdict"],
                  error=header["error"], latency_ms=header["latency_ms"],
                  scores={r["name"]: r["score"] for r in header["rois"]})
        self._run_hooks(self.after_publish, header, out.images)

    def _run_hooks(self, hooks: list[PublishHook], header: dict[str, Any], images: list[bytes]) -> None:
        for hook in hooks:
            try:
                hook(header, images)
            except Exception as e:
                self.hook_errors += 1
                log.error("publish hook failed", hook=getattr(hook, "__name__", repr(hook)), error=str(e))

    def status(self, final: bool = False) -> dict[str, Any]:
        snap = self.stats.snapshot()
        snap["camera"]["source"] = self.info.get("source")
        extra: dict[str, Any] = self.recorder.stats() if self.recorder is not None else {}
        for source in self.status_sources:
            try:
                extra.update(source())
            except Exception as e:
                log.error("status source failed", error=str(e))
        return {
            "schema_version": SCHEMA_VERSION,
            "type": "status",
            "station_id": self.station_id,
            "run_id": self.run_id,
            "started_at": round(self._started_wall, 6),
            "published_at": round(time.time(), 6),
            "uptime_s": round(time.time() - self._started_wall, 3),
            "first_sequence": self.first_sequence,
            "last_sequence": self.next_sequence - 1,
            "model_id": self.info.get("model_id"),
            "backend": self.info.get("backend"),
            "subscribers": self.subscribers,
            "final": final,
            "hook_errors": self.hook_errors,
            **snap,
            **extra,
        }

    def _send_status(self, final: bool) -> None:
        if self._sock is not None:
            self._sock.send_multipart([STATUS_TOPIC, json.dumps(self.status(final)).encode()])

    def _drain_subscriptions(self) -> None:
        if self._sock is None:
            return
        while self._sock.poll(0):
            msg = self._sock.recv()
            if msg[:1] == b"\x01" and RESULT_TOPIC.startswith(msg[1:]):
                self.subscribers += 1
                log.info("subscriber joined", subscribers=self.subscribers)

    def _wait_for_subscribers(self) -> None:
        want = self.cfg.wait_subscribers
        if self._sock is None or want <= 0:
            return
        deadline = time.monotonic() + self.cfg.wait_subscribers_s
        while self.subscribers < want and time.monotonic() < deadline:
            if self._sock.poll(50):
                self._drain_subscriptions()
        if self.subscribers < want:
            log.warning("publishing without the awaited subscribers", joined=self.subscribers, wanted=want)
