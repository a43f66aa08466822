"""External triggers from the plant (OPC UA `Inspect(part_id)`, the Modbus trigger coil) to the station.

The station's external trigger (docs/protocol.md, "External triggers"): a PULL socket at
`trigger.endpoint`; one single-frame message per part, `{"part_id": "..."}` (1-128 characters), the
station inspects the first frame captured after it arrives. This forwarder is the PUSH side.

A trigger is only worth sending now: the socket is ZMQ_IMMEDIATE (nothing is queued for a station that is
not connected) with LINGER 0, so a trigger never reaches a station minutes later and marks an unrelated
part with a PLC's id. When no connection is up within `wait_s`, `inspect` raises TriggerUnavailable.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import zmq

from inspector.network.security import apply_client_curve

MAX_PART_ID = 128        # characters (docs/protocol.md)
MAX_MESSAGE = 1024       # bytes: the station ignores a longer message


class TriggerUnavailable(ConnectionError):
    """The station's trigger endpoint is not connected (station down, wrong endpoint, or not in
    trigger.mode = "external"): the part was not triggered."""


def check_part_id(part_id: object) -> str:
    """`part_id` if the station accepts it: a string of 1-128 printable characters; ValueError otherwise."""
    if not isinstance(part_id, str):
        raise ValueError(f"part_id must be a string, not {type(part_id).__name__}")
    if not 0 < len(part_id) <= MAX_PART_ID:
        raise ValueError(f"part_id must be 1-{MAX_PART_ID} characters, got {len(part_id)}")
    if not part_id.isprintable():
        raise ValueError("part_id must be printable characters only (no control characters)")
    if len(trigger_message(part_id)) > MAX_MESSAGE:
        raise ValueError(f"part_id is longer than a trigger message allows ({MAX_MESSAGE} bytes as JSON)")
    return part_id


def trigger_message(part_id: str) -> bytes:
    return json.dumps({"part_id": part_id}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class TriggerForwarder:
    """PUSH to the station's external-trigger endpoint; use it on the event loop's thread only.

    The socket connects when the forwarder is made, so it is usually up by the first trigger."""

    def __init__(self, endpoint: str, *, context: zmq.Context | None = None, wait_s: float = 1.0,
                 client_secret: Path | None = None, server_public: Path | None = None) -> None:
        self.endpoint = endpoint
        self.wait_s = wait_s
        self.sent = 0
        self.refused = 0          # bad part ids
        self.unavailable = 0      # no connection to the station
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        if endpoint:
            sock = self._ctx.socket(zmq.PUSH)
            try:
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.IMMEDIATE, 1)
                sock.setsockopt(zmq.SNDHWM, 100)
                if client_secret is not None and server_public is not None:
                    apply_client_curve(sock, client_secret, server_public)
                sock.connect(endpoint)
            except BaseException:
                sock.close(0)
                raise
            self._sock = sock

    async def inspect(self, part_id: str) -> None:
        """Ask the station to inspect the next part as `part_id`. ValueError for a bad part id,
        TriggerUnavailable when the station's trigger endpoint is not connected within `wait_s`."""
        try:
            message = trigger_message(check_part_id(part_id))
        except ValueError:
            self.refused += 1
            raise
        if self._sock is None:
            self.unavailable += 1
            raise TriggerUnavailable("no trigger endpoint configured (gateway.trigger)")
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                self._sock.send(message, zmq.NOBLOCK)
                self.sent += 1
                return
            except zmq.Again:
                if time.monotonic() >= deadline:
                    self.unavailable += 1
                    raise TriggerUnavailable(f"the station's trigger endpoint {self.endpoint} is not connected "
                                             "(is the station running with trigger.mode = \"external\"?)") from None
                await asyncio.sleep(0.01)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
