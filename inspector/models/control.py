"""The control socket: reload or promote the production model, or ask which model runs (docs/protocol.md
"Control").

Clients speak REQ: one JSON object per request, one JSON object per reply.

    {"command": "status"}                                    -> {"ok": true, "model_id": ..., "last_reload": ...}
    {"command": "reload", "path": "/m/new.onnx", "timeout_s": 60}   path optional: the configured one
    {"command": "promote", "path": "/m/cand.onnx"}           path optional: the running shadow's
        -> {"ok": true, "model_id": new, "previous": old, "agreement": {...}, ...}
        or {"ok": false, "error": "...", "busy": true?, "pending": true?}

The server is a ROUTER speaking the REQ envelope (a REP socket would hold every other client behind a
reload that takes a minute): while a reload runs, status requests are answered and a second reload
gets a "busy" reply at once. A reload's reply waits for its outcome up to `timeout_s` ([control]
reply_timeout_s at most); after that the reply says it is still pending and the reload goes on. A
malformed request gets an error reply; nothing a client sends stops the thread.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import zmq

from inspector.errors import InspectorError
from inspector.models.loader import Busy, ModelLoader, Reload
from inspector.network.security import apply_client_curve
from inspector.network.sockets import SocketThread

log = structlog.get_logger("inspector.control")

COMMANDS = ("status", "reload", "promote")
MAX_REQUEST_BYTES = 4096
_FIELDS = {"command", "path", "timeout_s"}


class ControlError(Exception):
    """No reply in time (daemon not running, control off, wrong keys) or a reply that is not JSON."""


@dataclass
class _Waiting:
    envelope: list[bytes]
    ticket: Reload
    deadline: float
    timeout_s: float


class ControlServer(SocketThread):
    """A thread owning the control socket; reloads run in the loader's own thread."""

    def __init__(self, endpoint: str, loader: ModelLoader, *, context: zmq.Context,
                 curve_secret: str | Path | None = None, reply_timeout_s: float = 120.0, poll_ms: int = 50) -> None:
        super().__init__("control", context, endpoint, label=f"control.bind {endpoint}", curve_secret=curve_secret,
                         bind_timeout_s=None)
        self.loader = loader
        self.reply_timeout_s = reply_timeout_s
        self.poll_ms = poll_ms
        self.counters = {"requests": 0, "rejected": 0}
        self._waiting: list[_Waiting] = []

    def make_socket(self) -> zmq.Socket:
        sock = self.context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.maxmsgsize = 65536
        return sock

    def serve(self, sock: zmq.Socket | None) -> None:
        assert sock is not None
        try:
            while not self.halted.is_set():
                if sock.poll(self.poll_ms, zmq.POLLIN):
                    frames = sock.recv_multipart()
                    envelope, body = _split(frames)
                    if envelope:
                        self._handle(sock, envelope, body)
                self._answer_waiting(sock, time.monotonic())
        finally:
            for w in self._waiting:  # best effort: the daemon is stopping
                _send(sock, w.envelope, {"ok": False, "error": "the daemon is stopping; the reload may not have "
                                                             "finished: ask again after the restart"})

    def _handle(self, sock: zmq.Socket, envelope: list[bytes], body: list[bytes]) -> None:
        self.counters["requests"] += 1
        try:
            command, path, timeout_s = parse_request(body, self.reply_timeout_s)
        except ValueError as e:
            self.counters["rejected"] += 1
            _send(sock, envelope, {"ok": False, "error": f"bad request: {e}"})
            return
        if command == "status":
            _send(sock, envelope, {"ok": True, **self.loader.status()["model"]})
            return
        try:
            ticket = self.loader.request(path, promote=command == "promote", source="control")
        except Busy as e:
            _send(sock, envelope, {"ok": False, "error": str(e), "busy": True})
            return
        except InspectorError as e:
            _send(sock, envelope, {"ok": False, "error": str(e)})
            return
        self._waiting.append(_Waiting(envelope, ticket, time.monotonic() + timeout_s, timeout_s))

    def _answer_waiting(self, sock: zmq.Socket, now: float) -> None:
        for w in list(self._waiting):
            if w.ticket.done.is_set() and w.ticket.outcome is not None:
                _send(sock, w.envelope, w.ticket.outcome)
            elif now >= w.deadline:
                _send(sock, w.envelope, {"ok": False, "pending": True, "error": (
                    f"no outcome within {w.timeout_s:g} s; the reload goes on: ask {{\"command\": \"status\"}} "
                    "(last_reload) or watch the status topic")})
            else:
                continue
            self._waiting.remove(w)


def parse_request(body: list[bytes], max_timeout_s: float) -> tuple[str, Path | None, float]:
    """(command, path, timeout_s) of a request's frames; ValueError saying what is wrong."""
    if len(body) != 1:
        raise ValueError("a request is one frame holding a JSON object")
    if len(body[0]) > MAX_REQUEST_BYTES:
        raise ValueError(f"a request is at most {MAX_REQUEST_BYTES} bytes")
    try:
        req = json.loads(body[0].decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not UTF-8 JSON ({type(e).__name__})") from None
    if not isinstance(req, dict):
        raise ValueError("the request must be a JSON object")
    unknown = set(req) - _FIELDS
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    command = req.get("command")
    if command not in COMMANDS:
        raise ValueError(f"command must be one of {', '.join(COMMANDS)}, got {command!r}")
    path = req.get("path")
    if path is not None and (not isinstance(path, str) or not path.strip() or "\0" in path):
        raise ValueError("path must be a non-empty string (the model file on the station)")
    if command == "status" and path is not None:
        raise ValueError("status takes no path")
    timeout_s = req.get("timeout_s", max_timeout_s)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not math.isfinite(timeout_s) \
            or timeout_s <= 0:
        raise ValueError("timeout_s must be a number > 0")
    return command, Path(path) if path is not None else None, min(float(timeout_s), max_timeout_s)


def _split(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(envelope, body) of a ROUTER message: the identity frames up to and including the empty delimiter
    (REQ), or the identity alone (a DEALER sending without one)."""
    if b"" in frames[1:]:
        i = frames.index(b"", 1)
        return frames[: i + 1], frames[i + 1:]
    return frames[:1], frames[1:]


def _send(sock: zmq.Socket, envelope: list[bytes], reply: dict[str, Any]) -> None:
    try:
        sock.send_multipart([*envelope, json.dumps(reply, default=str).encode()], flags=zmq.NOBLOCK)
    except zmq.ZMQError as e:  # the client is gone
        log.debug("control reply not delivered", error=str(e))


def request(endpoint: str, body: dict[str, Any], timeout_s: float, *, client_secret: str | Path | None = None,
            server_public: str | Path | None = None, context: zmq.Context | None = None) -> dict[str, Any]:
    """Send one request over a fresh REQ socket and return the reply; ControlError if none comes in time."""
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    try:
        if client_secret is not None and server_public is not None:
            apply_client_curve(sock, client_secret, server_public)
        sock.connect(endpoint)
        sock.send(json.dumps(body).encode())
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise ControlError(f"no answer from {endpoint} within {timeout_s:g} s")
        reply = sock.recv()
    finally:
        sock.close()
    try:
        out = json.loads(reply)
    except ValueError:
        raise ControlError(f"{endpoint} answered something that is not JSON") from None
    if not isinstance(out, dict):
        raise ControlError(f"{endpoint} answered {type(out).__name__}, not a JSON object")
    return out
