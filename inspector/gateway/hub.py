"""The gateway's one picture of a station: fed by the subscriber (gateway/feed.py), read by every server.

Everything runs on the gateway's one asyncio loop: the feed calls `on_result` / `on_status`, each server
(OPC UA, Modbus, HTTP, MQTT) reads the attributes and awaits its own `listen()` queue of events. A server
that falls behind loses result *events* from its queue (the oldest first, counted in `dropped`), never
counts: counters, the last result and the handshakes are state, read whole whenever a server looks.

The PLC handshakes (`Handshake`, one per PLC protocol) present results one at a time, oldest first, until
the PLC acknowledges each one by its sequence number: a PLC that must not miss a part reads
`current`, acts, writes the ack, and the next one is presented. The acknowledged sequence is persisted by
the store given to the hub, so that a restarted gateway presents the first unacknowledged result again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from inspector.stats import VerdictCounts

VERDICT_CODES = {"pass": 1, "fail": 2, "error": 3}     # the number a PLC reads (0 = no result yet)
StationState = Literal["unknown", "running", "camera_lost", "engine_error", "stopped"]
STATE_CODES: dict[str, int] = {"unknown": 0, "running": 1, "camera_lost": 2, "engine_error": 3, "stopped": 4}
DRIFT_STATES = ("unknown", "ok", "warning", "off")   # the station's drift watch (status `drift`)
RECENT = 200        # results the hub keeps in memory (with their images) for the web page
QUEUE = 1000        # events a server's queue holds before the oldest are dropped


@dataclass(frozen=True)
class RoiResult:
    name: str
    score: float | None
    threshold: float
    verdict: str


@dataclass(frozen=True)
class PartResult:
    """One result message (docs/protocol.md, `result` header) and the images that came with it."""

    sequence: int
    part_id: str
    verdict: str                 # "pass" | "fail" | "error"
    rois: tuple[RoiResult, ...]
    latency_ms: float
    captured_at: float
    published_at: float
    model_id: str
    station_id: str
    run_id: str
    frame: int
    trigger: str
    error: str | None
    header: dict[str, Any] = field(repr=False, compare=False)
    images: tuple[tuple[dict[str, Any], bytes], ...] = field(default=(), repr=False, compare=False)
    raw: str | None = field(default=None, repr=False, compare=False)   # the header's JSON as received

    @classmethod
    def from_message(cls, header: dict[str, Any], images: list[bytes] | None = None,
                     raw: bytes | None = None) -> PartResult:
        """From a result header and its image frames (in the order of header["images"]); `raw`, the header
        frame as it came, is what the store keeps (not encoded again)."""
        rois = tuple(RoiResult(r["name"], None if r.get("score") is None else float(r["score"]),
                               float(r["threshold"]), r["verdict"]) for r in header.get("rois", []))
        pairs = tuple(zip(header.get("images") or [], images or [], strict=False))
        return cls(int(header["sequence"]), str(header["part_id"]), str(header["verdict"]), rois,
                   float(header.get("latency_ms", 0.0)), float(header.get("captured_at", 0.0)),
                   float(header.get("published_at", 0.0)), str(header.get("model_id", "")),
                   str(header.get("station_id", "")), str(header.get("run_id", "")), int(header.get("frame", -1)),
                   str(header.get("trigger", "")), header.get("error"), header, pairs,
                   raw.decode("utf-8", "replace") if raw is not None else None)

    @property
    def verdict_code(self) -> int:
        return VERDICT_CODES.get(self.verdict, VERDICT_CODES["error"])


class Counters(VerdictCounts):
    """Results the gateway has taken in, over the station's whole journal (persisted by the store, so a
    restarted gateway continues them): exact, never sampled."""


@dataclass(frozen=True)
class Event:
    kind: Literal["result", "status", "handshake"]
    result: PartResult | None = None
    status: dict[str, Any] | None = None
    channel: str | None = None      # for "handshake": which one moved


class History(Protocol):
    """The results the gateway has taken in, on disk (gateway/store.py implements it): what the web page
    searches. Headers as received (docs/protocol.md); images fetched from the station on demand."""

    def search(self, *, verdict: str | None = None, since: float | None = None, until: float | None = None,
               part_id: str | None = None, limit: int = 100, before_sequence: int | None = None,
               ) -> list[dict[str, Any]]:
        """Newest first: headers whose verdict, captured_at in [since, until] and part_id (substring)
        match; at most `limit`; only sequences below `before_sequence` when given (paging)."""
        ...

    def get(self, sequence: int) -> dict[str, Any] | None: ...

    async def images(self, sequence: int) -> list[tuple[dict[str, Any], bytes]]:
        """The stored images of one result (descriptor, bytes), from memory or the station's backfill;
        empty when the station no longer has them."""
        ...


def station_state(status: dict[str, Any] | None) -> StationState:
    """The station's state from its latest status header: running, camera lost, engine error or stopped."""
    if not status:
        return "unknown"
    if status.get("final"):
        return "stopped"
    engine = status.get("engine")
    if isinstance(engine, dict) and engine.get("state") == "error":   # docs/protocol.md, status `engine`
        return "engine_error"
    camera = status.get("camera")
    camera = camera.get("state") if isinstance(camera, dict) else None
    if camera in ("connecting", "reconnecting", "failed"):
        return "camera_lost"
    return "running"


class Handshake:
    """Results presented to one PLC protocol one at a time, oldest unacknowledged first.

    `pending` holds what the feed delivered above the acknowledged sequence (the store persists
    `acked`); `ack(seq)` accepts only the sequence presented now, so a stale or repeated ack changes
    nothing (returns False).
    """

    def __init__(self, channel: str, acked: int, persist: Callable[[str, int], None]) -> None:
        self.channel = channel
        self.acked = acked
        self._persist = persist
        self.pending: deque[PartResult] = deque()

    @property
    def current(self) -> PartResult | None:
        return self.pending[0] if self.pending else None

    @property
    def ready(self) -> bool:
        return bool(self.pending)

    def offer(self, result: PartResult) -> None:
        if result.sequence > self.acked and (not self.pending or result.sequence > self.pending[-1].sequence):
            self.pending.append(result)

    def ack(self, sequence: int) -> bool:
        if not self.pending or self.pending[0].sequence != sequence:
            return False
        self.pending.popleft()
        self.acked = sequence
        self._persist(self.channel, sequence)
        return True


class Hub:
    """The station as the gateway sees it; see the module's docstring."""

    def __init__(self, counters: Counters | None = None, last_sequence: int = 0) -> None:
        self.counters = counters or Counters()
        self.last_sequence = last_sequence          # the newest result taken in (0: none yet)
        self.last_result: PartResult | None = None
        self.status: dict[str, Any] | None = None   # the latest status header, as received
        self.recent: deque[PartResult] = deque(maxlen=RECENT)
        self.handshakes: dict[str, Handshake] = {}
        self.connected = False                      # whether the feed hears the station now
        self.history: History | None = None         # set by the gateway when it has its store
        self._queues: list[asyncio.Queue[Event]] = []
        self.dropped = 0                            # events dropped from slow servers' queues
        self.preview: tuple[dict[str, Any], bytes] | None = None   # the latest `preview` (header, JPEG)

    @property
    def state(self) -> StationState:
        return station_state(self.status) if self.connected or self.status else "unknown"

    @property
    def model_id(self) -> str:
        if self.status and self.status.get("model_id"):
            return str(self.status["model_id"])
        return self.last_result.model_id if self.last_result else ""

    @property
    def drift(self) -> dict[str, Any] | None:
        """The station's drift watch (status `drift`: state, reason, median_shift, ...; docs/protocol.md),
        None until a status carries one."""
        drift = (self.status or {}).get("drift")
        return drift if isinstance(drift, dict) else None

    @property
    def frames_dropped(self) -> int:
        """Frames the station dropped, all reasons, this run (from its status)."""
        return sum(int(v) for v in ((self.status or {}).get("frames_dropped") or {}).values())

    def handshake(self, channel: str, acked: int, persist: Callable[[str, int], None]) -> Handshake:
        """The handshake of one PLC protocol ("opcua", "modbus"), created once; results after `acked` that
        the hub still holds are offered to it at once."""
        if channel not in self.handshakes:
            hs = Handshake(channel, acked, persist)
            for r in self.recent:
                hs.offer(r)
            self.handshakes[channel] = hs
        return self.handshakes[channel]

    def listen(self) -> asyncio.Queue[Event]:
        """A new queue of events for one server (call on the loop)."""
        q: asyncio.Queue[Event] = asyncio.Queue(QUEUE)
        self._queues.append(q)
        return q

    def unlisten(self, q: asyncio.Queue[Event]) -> None:
        """Stop feeding a server's queue (a server that stops)."""
        if q in self._queues:
            self._queues.remove(q)

    def _emit(self, event: Event) -> None:
        for q in self._queues:
            if q.full():
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(event)

    def on_result(self, result: PartResult) -> None:
        """A result taken in, in sequence order, exactly once (the feed guarantees both)."""
        self.counters.add(result.verdict)
        self.last_sequence = max(self.last_sequence, result.sequence)
        self.last_result = result
        self.recent.append(result)
        self._emit(Event("result", result=result))
        for hs in self.handshakes.values():
            was = hs.current
            hs.offer(result)
            if hs.current is not was:
                self._emit(Event("handshake", channel=hs.channel))

    def on_status(self, header: dict[str, Any]) -> None:
        self.status = header
        self.connected = True
        self._emit(Event("status", status=header))

    def on_preview(self, header: dict[str, Any], jpeg: bytes) -> None:
        """The station's latest preview frame (docs/protocol.md, `preview`): kept, the older one dropped;
        no event (the web page asks for it at its own rate)."""
        self.preview = (header, jpeg)

    def on_disconnect(self) -> None:
        """The feed has heard nothing from the station for a while (no status, no result)."""
        if self.connected:
            self.connected = False
            self._emit(Event("status", status=self.status))

    def ack(self, channel: str, sequence: int) -> bool:
        """A PLC's acknowledgement through `channel`; emits a handshake event when it advanced."""
        hs = self.handshakes.get(channel)
        if hs is None or not hs.ack(sequence):
            return False
        self._emit(Event("handshake", channel=channel))
        return True
