"""Publish results and status over ZeroMQ: multipart [topic, header JSON, images…], one gapless sequence.

One thread owns the socket. It takes every result waiting in its queue (up to MAX_BATCH), numbers and
encodes them (stages/encode.py), runs the `before_publish` hooks, has the recorder store images and
journal the whole batch in one commit, then sends them one by one and runs the `after_publish` hooks:
a verdict is journaled before it is published, and the journal's fsync is paid once per batch, not once
per part.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
import zmq

from inspector.config import PublishConfig
from inspector.network.preview import PreviewEncoder
from inspector.network.sockets import SocketThread
from inspector.records import Outgoing, Result
from inspector.stages.encode import SCHEMA_VERSION, build_outgoing
from inspector.stages.shadow import shadow_header
from inspector.state.recorder import Recorder
from inspector.stats import Stats

log = structlog.get_logger("inspector.publish")

RESULT_TOPIC = b"result"
STATUS_TOPIC = b"status"
SHADOW_TOPIC = b"shadow"  # [shadow] model's verdicts (docs/protocol.md); the gateway never subscribes to it
END = None
MAX_BATCH = 256  # results journaled in one commit at most
PREVIEW_POLL_S = 0.05  # with previews on, an idle publisher looks for one this often

# (header, images) -> None. A hook may raise: it is logged and counted, publishing goes on.
PublishHook = Callable[[dict[str, Any], list[bytes]], None]


class Publisher(SocketThread):
    """Consumes Results from `results` until END, publishing each and a status message every interval."""

    def __init__(self, cfg: PublishConfig, ctx: zmq.Context, results: queue.Queue, stats: Stats, *,
                 station_id: str, run_id: str, info: dict[str, Any], first_sequence: int = 1,
                 before_publish: Sequence[PublishHook] = (), after_publish: Sequence[PublishHook] = (),
                 status_sources: Sequence[Callable[[], dict[str, Any]]] = (),
                 abort: threading.Event | None = None, recorder: Recorder | None = None,
                 curve_secret: str | Path | None = None, preview: PreviewEncoder | None = None) -> None:
        super().__init__("publish", ctx, cfg.bind, label=f"publish.bind {cfg.bind}", curve_secret=curve_secret)
        self.cfg = cfg
        self.results = results
        self.stats = stats
        self.station_id = station_id
        self.run_id = run_id
        self.info = info  # static fields of every status: model_id, backend, camera source
        self.first_sequence = first_sequence  # from the journal: numbers continue across restarts
        self.next_sequence = first_sequence
        self.recorder = recorder  # journal + image store, used and closed by this thread only
        self.before_publish = list(before_publish)
        self.after_publish = list(after_publish)
        self.status_sources = list(status_sources)  # extra status fields (a journal's health, ...)
        self.abort = abort or threading.Event()  # upstream died: publish what is queued, then end
        self.subscribers = 0  # subscriptions to results seen so far (XPUB)
        self.hook_errors = 0
        self.error: Exception | None = None
        self.preview = preview if preview is not None and preview.enabled and cfg.bind else None  # `preview` topic
        self._sock: zmq.Socket | None = None
        self._started_wall = time.time()

    def make_socket(self) -> zmq.Socket:
        sock = self.context.socket(zmq.XPUB)
        sock.setsockopt(zmq.SNDHWM, self.cfg.send_hwm)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.setsockopt(zmq.LINGER, self.cfg.linger_ms)  # close() waits this long for queued messages
        return sock

    def serve(self, sock: zmq.Socket | None) -> None:
        self._sock = sock
        try:
            self._wait_for_subscribers()
            self._loop()
        except Exception as e:  # a bug: the supervisor sees it and exits 1
            self.error = e
            log.exception("publisher failed", error=str(e))
        finally:
            if self.recorder is not None:
                self.recorder.close()

    def _loop(self) -> None:
        next_status = time.monotonic()
        while True:
            self._drain_subscriptions()
            now = time.monotonic()
            if now >= next_status:
                self._send_status(final=False)
                next_status = now + self.cfg.status_interval_s
            self._send_preview()
            wait = max(0.0, next_status - time.monotonic())
            try:
                result = self.results.get(timeout=min(wait, PREVIEW_POLL_S) if self.preview else wait)
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
        passed_every = self.recorder.store_passed_every if self.recorder is not None else 0
        batch = []
        for result in results:
            out = build_outgoing(result, self.next_sequence, self.station_id, self.run_id, self.cfg,
                                 time.time(), time.monotonic(), store_kinds, passed_every)
            if result.shadow is not None:  # journaled in the result's row, sent after it
                out.shadow = shadow_header(result, result.shadow, self.next_sequence, self.station_id,
                                           self.run_id, SCHEMA_VERSION)
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
            if out.shadow is not None:
                self._sock.send_multipart([SHADOW_TOPIC, json.dumps(out.shadow).encode()])
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

    def _send_preview(self) -> None:
        """The preview waiting in the encoder's slot, if any: never blocks (PUB drops at its high-water mark)."""
        msg = self.preview.take() if self.preview is not None and self._sock is not None else None
        if msg is not None:
            self._sock.send_multipart(msg, copy=False)  # type: ignore[union-attr]

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
