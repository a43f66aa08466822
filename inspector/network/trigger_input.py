"""The external trigger's input: the PULL socket a PLC pushes one message per part to.

A message is one frame: empty, or a JSON object with an optional "part_id" string (at most 128
characters). Anything else (more frames, over 1 KiB, not JSON) is counted as dropped and ignored.
The trigger stage (stages/trigger.py, ExternalTrigger) takes the messages that arrived before each frame.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from pathlib import Path

import structlog
import zmq

from inspector.network.sockets import SocketThread
from inspector.stats import Stats

log = structlog.get_logger("inspector.trigger")

MAX_TRIGGER_BYTES = 1024
MAX_PENDING_TRIGGERS = 10_000  # triggers waiting for a frame; beyond, the oldest is dropped


class ExternalTriggerReceiver(SocketThread):
    """Owns the PULL socket the PLC pushes to; stamps each valid message with its arrival time."""

    def __init__(self, ctx: zmq.Context, endpoint: str, stats: Stats,
                 curve_secret: str | Path | None = None) -> None:
        super().__init__("external-trigger", ctx, endpoint, label=f"trigger.endpoint {endpoint}",
                         curve_secret=curve_secret, bind_timeout_s=5.0)
        self.stats = stats
        self._lock = threading.Lock()
        self._pending: deque[tuple[float, str | None]] = deque()

    def make_socket(self) -> zmq.Socket:
        sock = self.context.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_TRIGGER_BYTES)
        return sock

    def serve(self, sock: zmq.Socket | None) -> None:
        assert sock is not None
        log.info("external trigger listening", endpoint=self.bind_endpoint)
        while not self.halted.is_set():
            if not sock.poll(100):
                continue
            msg = sock.recv_multipart()
            now = time.monotonic()
            part_id = parse_trigger(msg)
            if part_id is False:
                self.stats.drop("bad_trigger")
                continue
            with self._lock:
                if len(self._pending) >= MAX_PENDING_TRIGGERS:  # a flood with no frames: bounded
                    self._pending.popleft()
                    self.stats.drop("trigger_overflow")
                self._pending.append((now, part_id or None))

    def take_before(self, t_mono: float) -> list[str | None]:
        """Part ids of the triggers that arrived before a frame captured at t_mono."""
        out: list[str | None] = []
        with self._lock:
            while self._pending and self._pending[0][0] <= t_mono:
                out.append(self._pending.popleft()[1])
        return out

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)


def parse_trigger(msg: list[bytes]) -> str | None | bool:
    """The part id (None if not given), or False for an invalid message."""
    if len(msg) != 1 or len(msg[0]) > MAX_TRIGGER_BYTES:
        return False
    if not msg[0].strip():
        return None
    try:
        body = json.loads(msg[0])
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: "[[[[…"
        return False
    if not isinstance(body, dict):
        return False
    part_id = body.get("part_id")
    if part_id is None:
        return None
    if not isinstance(part_id, str) or not 0 < len(part_id) <= 128:
        return False
    return part_id
