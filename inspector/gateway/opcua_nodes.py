"""The OPC UA address space of a station (docs/plant.md, section "opcua") and the values it shows.

Everything lives under `Objects/Station` with browse names in the station namespace
(`urn:bigan-inspect:station`) and string node ids `ns=N;s=Station.LastResult.Sequence` (the browse path
with dots). `Node.values_*` compute what the variables should show from the hub; `NodeWriter` writes
every changed variable in ONE Write of the server's internal session (asyncua runs the server on the
event loop and applies a Write's values one after the other without giving the loop away: the
datachange callbacks it awaits only queue notifications, asyncua/server/address_space.py
`write_attribute_value` and internal_subscription.py `_enqueue_event`), so a client reading
LastResult or Handshake never sees half of one result and half of the next.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from asyncua import Node, Server, ua

from inspector.gateway.hub import STATE_CODES, Handshake, Hub, PartResult

log = logging.getLogger(__name__)
V = ua.VariantType
NO_TIME = datetime(1601, 1, 1, tzinfo=timezone.utc)    # OPC UA's "no time" (encodes as 0)

# (object path under Station, browse name, type, array); "" = the Station object itself.
VARIABLES: tuple[tuple[str, str, ua.VariantType, bool], ...] = (
    ("", "StationId", V.String, False),
    ("", "State", V.String, False),
    ("", "StateCode", V.Int32, False),
    ("", "ModelId", V.String, False),
    ("", "Connected", V.Boolean, False),
    ("Counters", "Parts", V.UInt64, False),
    ("Counters", "Passed", V.UInt64, False),
    ("Counters", "Failed", V.UInt64, False),
    ("Counters", "Errors", V.UInt64, False),
    ("Counters", "FramesDropped", V.UInt64, False),
    ("LastResult", "Sequence", V.Int64, False),
    ("LastResult", "PartId", V.String, False),
    ("LastResult", "Verdict", V.String, False),
    ("LastResult", "VerdictCode", V.Int32, False),
    ("LastResult", "Latency", V.Double, False),
    ("LastResult", "Timestamp", V.DateTime, False),
    ("LastResult", "RoiNames", V.String, True),
    ("LastResult", "RoiScores", V.Double, True),
    ("LastResult", "RoiThresholds", V.Double, True),
    ("LastResult", "RoiVerdicts", V.String, True),
    ("Handshake", "ResultReady", V.Boolean, False),
    ("Handshake", "Sequence", V.Int64, False),
    ("Handshake", "PartId", V.String, False),
    ("Handshake", "Verdict", V.String, False),
    ("Handshake", "VerdictCode", V.Int32, False),
    ("Handshake", "RoiScores", V.Double, True),
    ("Handshake", "ResultAck", V.Int64, False),
)
OBJECTS = ("Counters", "LastResult", "Handshake")
ACK = "Handshake/ResultAck"
TYPES = {f"{obj}/{name}" if obj else name: (vt, arr) for obj, name, vt, arr in VARIABLES}


def node_id(idx: int, path: str) -> ua.NodeId:
    return ua.NodeId("Station." + path.replace("/", "."), idx)


def _default(vt: ua.VariantType, array: bool) -> Any:
    if array:
        return []
    return {V.String: "", V.Boolean: False, V.Double: 0.0, V.DateTime: NO_TIME}.get(vt, 0)


async def build(server: Server, idx: int) -> tuple[Node, dict[str, ua.NodeId]]:
    """Create Objects/Station and everything under it; returns the Station node and path -> NodeId.
    Every variable is read-only (asyncua's default AccessLevel CurrentRead) except Handshake/ResultAck."""
    station = await server.nodes.objects.add_object(ua.NodeId("Station", idx), ua.QualifiedName("Station", idx))
    parents = {"": station}
    for obj in OBJECTS:
        parents[obj] = await station.add_object(node_id(idx, obj), ua.QualifiedName(obj, idx))
    ids: dict[str, ua.NodeId] = {}
    for obj, name, vt, array in VARIABLES:
        path = f"{obj}/{name}" if obj else name
        var = await parents[obj].add_variable(node_id(idx, path), ua.QualifiedName(name, idx),
                                              ua.Variant(_default(vt, array), vt), vt)
        if array:   # asyncua leaves ValueRank unset for a list value: say "one dimension, any length"
            await var.write_attribute(ua.AttributeIds.ValueRank,
                                      ua.DataValue(ua.Variant(ua.ValueRank.OneDimension, V.Int32)))
            await var.write_attribute(ua.AttributeIds.ArrayDimensions,
                                      ua.DataValue(ua.Variant([0], V.UInt32)))
        if path == ACK:
            await var.set_writable(True)
        ids[path] = var.nodeid
    return station, ids


def station_values(hub: Hub, station_id: str) -> dict[str, Any]:
    state = hub.state
    return {"StationId": station_id or (hub.last_result.station_id if hub.last_result else ""),
            "State": state, "StateCode": STATE_CODES.get(state, 0), "ModelId": hub.model_id,
            "Connected": bool(hub.connected)}


_warned: dict[str, str] = {}


def counter_values(hub: Hub) -> dict[str, Any]:
    c = hub.counters
    values = {"Counters/Parts": c.parts, "Counters/Passed": c.passed, "Counters/Failed": c.failed,
              "Counters/Errors": c.errors}
    try:    # from the station's status: one it cannot count leaves FramesDropped as it was
        values["Counters/FramesDropped"] = hub.frames_dropped
    except (TypeError, ValueError, AttributeError):
        bad = repr((hub.status or {}).get("frames_dropped"))[:200]
        if bad != _warned.get("frames_dropped"):     # once per bad value, not at every write
            _warned["frames_dropped"] = bad
            log.warning("OPC UA: the station's frames_dropped is not a set of counts: %s", bad)
    return {k: max(0, int(v)) for k, v in values.items()}     # UInt64


def _score(score: float | None) -> float:
    return math.nan if score is None else score     # an unscored ROI (verdict "error") reads NaN


def last_values(r: PartResult | None) -> dict[str, Any]:
    if r is None:
        return {f"LastResult/{name}": _default(vt, arr) for obj, name, vt, arr in VARIABLES if obj == "LastResult"}
    return {"LastResult/Sequence": r.sequence, "LastResult/PartId": r.part_id, "LastResult/Verdict": r.verdict,
            "LastResult/VerdictCode": r.verdict_code, "LastResult/Latency": r.latency_ms,
            "LastResult/Timestamp": when(r.captured_at),
            "LastResult/RoiNames": [x.name for x in r.rois],
            "LastResult/RoiScores": [_score(x.score) for x in r.rois],
            "LastResult/RoiThresholds": [x.threshold for x in r.rois],
            "LastResult/RoiVerdicts": [x.verdict for x in r.rois]}


def handshake_values(hs: Handshake) -> dict[str, Any]:
    """The presented result (Sequence 0, empty strings, VerdictCode 0 while nothing is presented)."""
    r = hs.current
    return {"Handshake/ResultReady": r is not None, "Handshake/Sequence": r.sequence if r else 0,
            "Handshake/PartId": r.part_id if r else "", "Handshake/Verdict": r.verdict if r else "",
            "Handshake/VerdictCode": r.verdict_code if r else 0,
            "Handshake/RoiScores": [_score(x.score) for x in r.rois] if r else []}


def when(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc) if t > 0 else NO_TIME


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@dataclass
class Group:
    """Variables written together: all of them whenever `key` changes (LastResult, Handshake), or each
    one that changed (key None: station and counters)."""

    values: Callable[[], dict[str, Any]]
    key: Callable[[], Any] | None = None
    source_time: Callable[[], datetime | None] = lambda: None
    name: str = ""


class NodeWriter:
    """Writes the changed variables of some groups in one Write of the server's internal session."""

    def __init__(self, server: Server, ids: dict[str, ua.NodeId]) -> None:
        self._server = server
        self._ids = ids
        self._shown: dict[str, Any] = {}
        self._keys: dict[int, Any] = {}

    async def write(self, groups: Iterable[Group], force: bool = False) -> int:
        now = datetime.now(timezone.utc)
        todo = []       # all computed first: a group that cannot be computed is left as shown
        for i, g in enumerate(groups):
            key = g.key() if g.key else None
            whole = g.key is not None and (force or i not in self._keys or self._keys[i] != key)
            if g.key is None or whole:
                try:
                    todo.append((i, key, whole, g.values(), g.source_time() or now))
                except Exception:   # e.g. a status header the hub cannot read: the other groups still go
                    log.exception("OPC UA: cannot compute the %s variables", g.name)
        items: list[ua.WriteValue] = []
        for i, key, whole, values, src in todo:
            self._keys[i] = key
            for path, value in values.items():
                if not whole and not force and path in self._shown and _same(self._shown[path], value):
                    continue
                self._shown[path] = value
                vt, _ = TYPES[path]
                items.append(ua.WriteValue(NodeId=self._ids[path], AttributeId=ua.AttributeIds.Value,
                                           Value=ua.DataValue(ua.Variant(value, vt), SourceTimestamp=src,
                                                              ServerTimestamp=now)))
        if items:
            results = await self._server.iserver.isession.write(ua.WriteParameters(NodesToWrite=items))
            for item, status in zip(items, results, strict=True):
                if not status.is_good():    # a bug; the server goes on with the other variables
                    log.error("OPC UA: writing %s failed: %s", item.NodeId.to_string(), status)
        return len(items)


def groups(hub: Hub, hs: Handshake, station_id: str) -> list[Group]:
    """Station + counters (per variable), LastResult (whole, on a new sequence, source time = capture),
    Handshake (whole, when the presented result changes)."""
    def last_key() -> int:
        return hub.last_result.sequence if hub.last_result else 0

    def hs_key() -> int:
        return hs.current.sequence if hs.current else 0

    return [Group(lambda: station_values(hub, station_id), name="Station"),
            Group(lambda: counter_values(hub), name="Counters"),
            Group(lambda: last_values(hub.last_result), last_key,
                  lambda: when(hub.last_result.captured_at) if hub.last_result else None, "LastResult"),
            Group(lambda: handshake_values(hs), hs_key, name="Handshake")]
