"""Backfill endpoint (the ZeroMQ guide's Clone-pattern snapshot): a ROUTER thread that replays journaled
verdicts after a sequence number, and the DEALER client helper `backfill()` for listen and tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from inspector.network.security import apply_client_curve
from inspector.network.sockets import SocketThread
from inspector.state.image_store import read_image
from inspector.state.journal_reader import JournalReader, JournalUnavailable, header_seq

# The protocol (docs/reliability.md): DEALER -> ROUTER, no empty delimiter frame.
#   request  [b"BACKFILL", JSON {"since": int >= 0, "limit": 1..10000 (default 1000), "images": bool}]
#   replies  [b"result", header_json]                                       one per verdict, seq > since, in order
#            [b"result", header_json, manifest_json, blob, ...]             with "images": true
#            [b"END", JSON {"last_seq", "last_sent", "count", "more"}]      after the last result
#            [b"ERROR", JSON {"error": code, "detail": str}]                instead, for a rejected request
COMMAND = b"BACKFILL"
MAX_REQUEST_BYTES = 4096
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_LIMIT_IMAGES = 100
REJECT_CODES = ("oversized", "malformed", "unknown_command", "bad_request")
_FIELDS = {"since", "limit", "images"}
_MAX_FRAME_BYTES = 65536  # libzmq disconnects a peer sending a larger frame (not counted here)


class RequestError(Exception):
    """A rejected request: `code` is one of REJECT_CODES."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail


class BackfillError(Exception):
    """The server answered ERROR, broke the protocol, or did not answer in time."""


@dataclass(frozen=True)
class Request:
    since: int
    limit: int = DEFAULT_LIMIT
    images: bool = False


@dataclass
class Result:
    """One replayed verdict: the header exactly as published, parsed, and images still on disk."""
    raw: bytes
    header: dict[str, Any]
    images: dict[str, bytes] = field(default_factory=dict)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request(frames: list[bytes]) -> Request:
    """Validate a request's frames (without the ROUTER identity); raises RequestError."""
    if sum(len(f) for f in frames) > MAX_REQUEST_BYTES:
        raise RequestError("oversized", f"a request is at most {MAX_REQUEST_BYTES} bytes")
    if not frames or frames[0] != COMMAND:
        raise RequestError("unknown_command", "the first frame must be b'BACKFILL'")
    if len(frames) != 2:
        raise RequestError("malformed", "a request is two frames: b'BACKFILL' and a JSON object")
    try:
        body = json.loads(frames[1].decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise RequestError("malformed", f"the second frame is not UTF-8 JSON: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise RequestError("malformed", "the second frame must be a JSON object")
    return _request_from(body)


def _request_from(body: dict[str, Any]) -> Request:
    unknown = set(body) - _FIELDS
    if unknown:
        raise RequestError("bad_request", f"unknown fields {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    since, limit, images = body.get("since"), body.get("limit", DEFAULT_LIMIT), body.get("images", False)
    if not _is_int(since) or not 0 <= since < 2**63:
        raise RequestError("bad_request", "since must be an integer >= 0")
    if not _is_int(limit) or not 1 <= limit <= MAX_LIMIT:
        raise RequestError("bad_request", f"limit must be an integer in 1..{MAX_LIMIT}")
    if not isinstance(images, bool):
        raise RequestError("bad_request", "images must be true or false")
    return Request(since, min(limit, MAX_LIMIT_IMAGES) if images else limit, images)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class BackfillServer(SocketThread):
    """A thread owning one ROUTER socket and one read-only journal connection.

    A client never holds it for long: replies go out with ROUTER_MANDATORY + NOBLOCK; when the
    client's queue (`sndhwm` messages) is full the server retries for at most `send_wait_ms` per
    reply, then abandons the reply and counts it as `aborted` (the client sees no END and asks
    again). Rejected requests are answered with ERROR and counted by code.
    """

    def __init__(self, endpoint: str, journal_path: str | Path, *, image_root: str | Path | None = None,
                 context: zmq.Context | None = None, curve_secret: str | Path | None = None,
                 sndhwm: int = 2 * MAX_LIMIT + 10, send_wait_ms: int = 200, poll_ms: int = 100) -> None:
        super().__init__("backfill", context or zmq.Context.instance(), endpoint,
                         label=f"publish.backfill_bind {endpoint}", curve_secret=curve_secret, bind_timeout_s=None)
        self.journal_path = Path(journal_path)
        self.image_root = Path(image_root) if image_root is not None else None
        self.sndhwm, self.send_wait_ms, self.poll_ms = sndhwm, send_wait_ms, poll_ms
        self._counters = {"requests": 0, "results_sent": 0, "aborted": 0, "unavailable": 0,
                          **{f"rejected_{code}": 0 for code in REJECT_CODES}}
        self._lock = threading.Lock()
        self._deadline = 0.0  # of the reply being sent (monotonic seconds)

    def stats(self) -> dict[str, int]:
        """Counters for the status topic (requests, results_sent, aborted, unavailable, rejected_*)."""
        with self._lock:
            return dict(self._counters)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    def make_socket(self) -> zmq.Socket:
        sock = self.context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.router_mandatory = 1
        sock.sndhwm = self.sndhwm
        sock.maxmsgsize = _MAX_FRAME_BYTES
        return sock

    def serve(self, sock: zmq.Socket | None) -> None:
        assert sock is not None
        reader = JournalReader(self.journal_path)
        try:
            while not self.halted.is_set():
                if sock.poll(self.poll_ms, zmq.POLLIN):
                    frames = sock.recv_multipart()
                    self._handle(sock, reader, frames[0], frames[1:])
        finally:
            reader.close()

    def _handle(self, sock: zmq.Socket, reader: JournalReader, peer: bytes, frames: list[bytes]) -> None:
        try:
            request = parse_request(frames)
        except RequestError as exc:
            self._count(f"rejected_{exc.code}")
            self._send(sock, peer, [b"ERROR", _json({"error": exc.code, "detail": exc.detail})])
            return
        self._count("requests")
        self._deadline = time.monotonic() + self.send_wait_ms / 1000
        try:
            self._serve(sock, reader, peer, request)
        except JournalUnavailable as exc:
            self._count("unavailable")
            self._send(sock, peer, [b"ERROR", _json({"error": "unavailable", "detail": str(exc)})])

    def _serve(self, sock: zmq.Socket, reader: JournalReader, peer: bytes, request: Request) -> None:
        rows = list(reader.since(request.since, request.limit + 1))
        last_seq = reader.last_seq()
        sent = request.since
        for row in rows[: request.limit]:
            if not self._send(sock, peer, self._result_frames(row, request.images)):
                self._count("aborted")
                return
            sent = row["seq"]
            self._count("results_sent")
        end = {"last_seq": last_seq, "last_sent": sent, "count": min(len(rows), request.limit),
               "more": len(rows) > request.limit}
        if not self._send(sock, peer, [b"END", _json(end)]):
            self._count("aborted")

    def _result_frames(self, row: dict[str, Any], images: bool) -> list[bytes]:
        frames = [b"result", row["header_json"].encode()]
        if not images:
            return frames
        manifest, blobs = [], []
        for key, name in row["images"].items():
            data = read_image(self.image_root, name) if self.image_root is not None else None
            if data is not None:
                manifest.append({"key": key, "name": name})
                blobs.append(data)
        return [*frames, _json(manifest), *blobs]

    def _send(self, sock: zmq.Socket, peer: bytes, frames: list[bytes]) -> bool:
        """Send without blocking; while the peer's queue is full retry until this reply's deadline.
        False when the peer is gone or the deadline passed."""
        while True:
            try:
                sock.send_multipart([peer, *frames], flags=zmq.NOBLOCK)
                return True
            except zmq.Again:
                if time.monotonic() >= self._deadline:
                    return False
                time.sleep(0.001)
            except zmq.ZMQError:  # EHOSTUNREACH: the peer disconnected
                return False


def iter_backfill(endpoint: str, since: int, timeout_ms: int = 2000, *, limit: int | None = None,
                  page: int = DEFAULT_LIMIT, images: bool = False, context: zmq.Context | None = None,
                  client_secret: str | Path | None = None, server_public: str | Path | None = None,
                  ) -> Iterator[Result]:
    """Every verdict after `since` in order (page by page), at most `limit`.

    `timeout_ms` bounds the wait for each message, not the whole transfer. Raises BackfillError on
    an ERROR reply, a protocol violation or a timeout. With CURVE pass the client's secret key file
    and the station's public key file.
    """
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if client_secret is not None and server_public is not None:
        apply_client_curve(sock, client_secret, server_public)
    sock.connect(endpoint)
    try:
        remaining = limit
        while remaining is None or remaining > 0:
            n = page if remaining is None else min(page, remaining)
            sock.send_multipart([COMMAND, _json({"since": since, "limit": n, "images": images})])
            end = yield from _read_page(sock, since, timeout_ms)
            since = end["last_sent"]
            remaining = None if remaining is None else remaining - end["count"]
            if not end["more"]:
                return
    finally:
        sock.close()


def _read_page(sock: zmq.Socket, since: int, timeout_ms: int) -> Iterator[Result]:
    """Yield one page's results; returns the END object."""
    while True:
        if not sock.poll(timeout_ms, zmq.POLLIN):
            raise BackfillError(f"no answer within {timeout_ms} ms")
        frames = sock.recv_multipart()
        kind = frames[0]
        if kind == b"END":
            return json.loads(frames[1])
        if kind == b"ERROR":
            raise BackfillError(f"server rejected the request: {frames[1].decode(errors='replace')}")
        if kind != b"result" or len(frames) < 2:
            raise BackfillError(f"unexpected reply {frames[:1]!r}")
        result = _result(frames)
        seq = header_seq(result.header)
        if not isinstance(seq, int) or seq <= since:
            raise BackfillError(f"out of order: sequence {seq!r} after {since}")
        since = seq
        yield result


def _result(frames: list[bytes]) -> Result:
    result = Result(raw=frames[1], header=json.loads(frames[1]))
    if len(frames) > 2:
        manifest = json.loads(frames[2])
        result.images = {m["key"]: blob for m, blob in zip(manifest, frames[3:], strict=True)}
    return result


def backfill(endpoint: str, since: int, timeout_ms: int = 2000, **kwargs: Any) -> list[dict[str, Any]]:
    """The headers of every verdict after `since`, in order (see iter_backfill for the options)."""
    return [r.header for r in iter_backfill(endpoint, since, timeout_ms, **kwargs)]
