"""MQTT: the station's results and status to the plant's broker (paho-mqtt 2.x), docs/plant.md "mqtt".

Topics, for PREFIX = gateway.mqtt.topic_prefix and STATION = the station id:

- PREFIX/STATION/result   every result header as JSON (no image bytes), QoS gateway.mqtt.qos, not retained;
- PREFIX/STATION/status   a summary of the station (state, counters, latency), retained, QoS 1, at most 1 Hz;
- PREFIX/STATION/gateway  {"online": true, ...} retained, QoS 1; the broker publishes the last will
                          {"online": false, ...} when the gateway dies, the gateway itself when it stops.

Every result the hub delivers is handed to the broker once per gateway run, in sequence order. While the
broker is away the results wait in one bounded queue here (gateway.mqtt.queue_limit, the oldest dropped
and counted) and go out in order once paho has reconnected.

Why the queue is here and not only in paho's: paho keeps unacknowledged QoS>0 messages across a reconnect
and re-sends them in order when CONNACK arrives (`Client._handle_connack`, paho-mqtt 2.2.0), but a
`publish()` made from another thread after its CONNECT went out and before that re-send runs is written at
once, ahead of the older ones. So results are handed to paho only while the "gate" is open: it closes in
`on_pre_connect` / `on_disconnect` (under a lock, so a publish in progress finishes first), and opens when
the broker acknowledges the `online` message published in `on_connect` — by then paho's re-send of the
previous connection's messages is written (it runs in the same network-thread step as `on_connect`).
Paho's own queue then holds at most WINDOW results (in flight or waiting for an in-flight slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from inspector.errors import InspectorError
from inspector.gateway.config import MqttConfig, check_mqtt_topic, split_host_port
from inspector.gateway.hub import Event, Hub

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 1.0     # the status (and the gateway's counters) are published at most this often
WINDOW = 200                # results handed to paho and not yet acknowledged, at most
CLOSE_TIMEOUT_S = 3.0       # how long a stopping gateway waits for the broker to take its last messages


@dataclass
class MqttStats:
    """What the bridge has done this run (the web page's /metrics may read it)."""

    connected: bool = False
    published: int = 0          # results handed to the broker connection
    delivered: int = 0          # ... of which the broker acknowledged (QoS 1/2) or that were written (QoS 0)
    dropped: int = 0            # results never sent: the queue was full (the oldest go first)
    queued: int = 0             # results waiting for the broker now
    connects: int = 0           # successful connections, the first included
    connected_since: float | None = None


def mqtt_topics(prefix: str, station_id: str) -> dict[str, str]:
    """{"result"|"status"|"gateway": topic}; a ValueError when the prefix or the station id cannot be used."""
    check_mqtt_topic(prefix, "gateway.mqtt.topic_prefix")
    check_mqtt_topic(station_id, "the station id", one_level=True)
    return {kind: f"{prefix}/{station_id}/{kind}" for kind in ("result", "status", "gateway")}


def read_password(cfg: MqttConfig) -> str | None:
    """The broker password: the first line of gateway.mqtt.password_file (None without one)."""
    if cfg.password_file is None:
        return None
    if not cfg.username:
        raise InspectorError("gateway.mqtt.password_file is set but gateway.mqtt.username is empty")
    try:
        lines = cfg.password_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InspectorError(f"gateway.mqtt.password_file {cfg.password_file}: cannot read it "
                             f"({getattr(e, 'strerror', None) or e})") from None
    if not lines or not lines[0]:
        raise InspectorError(f"gateway.mqtt.password_file {cfg.password_file}: its first line is empty")
    return lines[0]


def status_summary(hub: Hub, station_id: str) -> dict[str, Any]:
    """The payload of PREFIX/STATION/status: the station as the gateway sees it now."""
    s = hub.status or {}
    c = hub.counters
    return {"station_id": station_id, "state": hub.state, "connected": hub.connected, "model_id": hub.model_id,
            "run_id": s.get("run_id"), "parts": c.parts, "passed": c.passed, "failed": c.failed,
            "errors": c.errors, "reject_rate": round((c.failed + c.errors) / c.parts, 6) if c.parts else None,
            "last_sequence": hub.last_sequence, "frames_dropped": hub.frames_dropped, "fps": s.get("fps"),
            "latency_p50_ms": s.get("latency_p50_ms"), "latency_p99_ms": s.get("latency_p99_ms"),
            "camera": (s.get("camera") or {}).get("state"), "journal": (s.get("journal") or {}).get("state"),
            "station_published_at": s.get("published_at"), "published_at": round(time.time(), 6)}


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class MqttLink:
    """paho's client on its network thread (loop_start) and the results waiting for it, in order.

    Every method not named on_* runs on the asyncio loop; on_* are paho's callbacks (its network thread),
    which only close the gate or hand work to the loop (call_soon_threadsafe): `on_publish` runs under
    paho's message lock, so it must not wait for ours.
    """

    def __init__(self, cfg: MqttConfig, station_id: str, password: str | None, loop: asyncio.AbstractEventLoop,
                 stats: MqttStats, summary: Callable[[], dict[str, Any]], ready: Callable[[str], None]) -> None:
        self.cfg, self.station_id, self.stats = cfg, station_id, stats
        self.topics = mqtt_topics(cfg.topic_prefix, station_id)
        self.client_id = cfg.client_id or f"inspector-gateway-{station_id}"
        host, self.port = split_host_port(cfg.broker, "gateway.mqtt.broker")
        self.host = host.strip("[]")
        self.url = f"{'mqtts' if cfg.tls else 'mqtt'}://{cfg.broker}"
        self._loop, self._summary, self._ready = loop, summary, ready
        self._lock = threading.Lock()      # the gate: held while handing messages to paho / closing it
        self._open = False
        self._epoch = 0                    # connection attempts so far: an `online` ack of an older one is ignored
        self._online: tuple[int, int] | None = None   # (mid, epoch) of the last `online` message
        self._buffer: deque[bytes] = deque()    # result headers (JSON) waiting, oldest first
        self._pending: set[int] = set()    # mids of results handed to paho, not yet acknowledged
        self._announced = False
        self._closing = False
        self._warned = False
        self._last_refusal = ""
        self._gateway_published: tuple[int, int] | None = None
        self.started_at = time.time()
        self.client = self._make_client(password)

    def _make_client(self, password: str | None) -> mqtt.Client:
        # A persistent session (clean_session False, MQTT 3.1.1) with a fixed client id: the broker keeps
        # the session's QoS 1 state across our reconnects.
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        # A safety net only (WINDOW bounds what we hand over while running), room for the final flush in close().
        # paho refuses to change it once connected.
        c.max_queued_messages_set(self.cfg.queue_limit + WINDOW + 16)
        c.reconnect_delay_set(1, 30)
        c.will_set(self.topics["gateway"], _json(self._gateway_payload(False, "connection lost")), qos=1,
                   retain=True)
        if self.cfg.username:
            c.username_pw_set(self.cfg.username, password)
        if self.cfg.tls:
            try:
                c.tls_set(ca_certs=str(self.cfg.ca_file) if self.cfg.ca_file else None)
            except (OSError, ValueError) as e:
                raise InspectorError(f"gateway.mqtt.ca_file {self.cfg.ca_file}: cannot use it ({e})") from None
        c.on_pre_connect = self.on_pre_connect
        c.on_connect = self.on_connect
        c.on_connect_fail = self.on_connect_fail
        c.on_disconnect = self.on_disconnect
        c.on_publish = self.on_publish
        return c

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    # -- paho's network thread -------------------------------------------------------------------------
    def _close_gate(self) -> None:
        with self._lock:
            self._open = False
            self._epoch += 1
        self._soon(self._gate_closed)

    def on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._close_gate()

    def on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.stats.connected = False
        self._close_gate()
        self._soon(self._lost)

    def on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._soon(self._unreachable)

    def on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._soon(self._refused, str(reason))
            return
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.connected_since = time.time()
        self._gateway_published = (self.stats.dropped, self.stats.connects)
        info = client.publish(self.topics["gateway"], _json(self._gateway_payload(True)), qos=1, retain=True)
        self._online = (info.mid, self._epoch)

    def on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        online = self._online
        if online is not None and mid == online[0]:
            self._soon(self._gate_opened, online[1])
        else:
            self._soon(self._acked, mid)

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):     # the loop is closed: the gateway is exiting
            self._loop.call_soon_threadsafe(fn, *args)

    # -- the asyncio loop ------------------------------------------------------------------------------
    def _gate_opened(self, epoch: int) -> None:
        with self._lock:
            if epoch != self._epoch:
                return
            self._open = True
        self._warned, self._last_refusal = False, ""
        if self.stats.connects > 1:
            log.info("mqtt: reconnected to %s; %d results waiting go out now", self.url, len(self._buffer))
        self.pump()
        self.publish_state()
        if not self._announced:
            self._announced = True
            self._ready(f"mqtt: publishing to {self.url} as {self.client_id}: "
                        f"{self.cfg.topic_prefix}/{self.station_id}/{{result,status,gateway}}")

    def _gate_closed(self) -> None:
        if self.cfg.qos == 0:
            self._pending.clear()       # QoS 0 messages not yet written are lost with the connection

    def _acked(self, mid: int) -> None:
        if mid in self._pending:
            self._pending.discard(mid)
            self.stats.delivered += 1
            self.pump()

    def _lost(self) -> None:
        if self._announced and not self._warned and not self._closing:
            self._warned = True
            log.warning("mqtt: lost the connection to %s; results are held (up to %d) and sent in order after "
                        "reconnecting", self.url, self.cfg.queue_limit)

    def _unreachable(self) -> None:
        if not self._warned:
            self._warned = True
            tls = ", or its TLS certificate is not one gateway.mqtt.ca_file trusts" if self.cfg.tls else ""
            log.warning("mqtt: cannot connect to %s (not reachable%s); retrying with backoff (up to 30 s), "
                        "results are held (up to %d)", self.url, tls, self.cfg.queue_limit)

    def _refused(self, reason: str) -> None:
        if reason != self._last_refusal:
            self._last_refusal = reason
            log.error("mqtt: broker %s refused the connection: %s (check gateway.mqtt.username, password_file, "
                      "client_id); retrying with backoff", self.url, reason)

    @property
    def is_open(self) -> bool:
        return self._open

    def submit(self, header: dict[str, Any]) -> None:
        """One result to publish: queued behind any others waiting, then handed over as the gate allows."""
        if len(self._buffer) >= self.cfg.queue_limit:
            self._buffer.popleft()
            self.stats.dropped += 1
        self._buffer.append(_json(header))
        self.pump()

    def pump(self) -> None:
        """Hand waiting results to paho, oldest first, while the gate is open and the window has room."""
        with self._lock:
            while self._open and self._buffer and len(self._pending) < WINDOW:
                info = self.client.publish(self.topics["result"], self._buffer[0], qos=self.cfg.qos, retain=False)
                if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                    break               # paho's safety net is full: keep it here, try again on the next ack
                self._buffer.popleft()
                self.stats.published += 1
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or self.cfg.qos > 0:
                    self._pending.add(info.mid)     # QoS > 0: paho keeps it until acknowledged
        self.stats.queued = len(self._buffer) + len(self._pending)

    def publish_state(self) -> None:
        """The retained status, and the gateway's own message when its counters moved; only while open."""
        with self._lock:
            if not self._open:
                return
            self.client.publish(self.topics["status"], _json(self._summary()), qos=1, retain=True)
            counters = (self.stats.dropped, self.stats.connects)
            if counters != self._gateway_published:
                self._gateway_published = counters
                self.client.publish(self.topics["gateway"], _json(self._gateway_payload(True)), qos=1, retain=True)

    def _gateway_payload(self, online: bool, reason: str | None = None) -> dict[str, Any]:
        s = self.stats
        out: dict[str, Any] = {"online": online, "station_id": self.station_id, "client_id": self.client_id,
                               "started_at": round(self.started_at, 6)}
        if reason:
            out["reason"] = reason
        if reason != "connection lost":     # the last will is fixed at connect time: no counters in it
            out.update(since=s.connected_since, results_published=s.published, results_dropped=s.dropped,
                       results_queued=s.queued, connects=s.connects, published_at=round(time.time(), 6))
        return out

    async def close(self) -> None:
        """Hand over what is waiting, publish `online: false` (retained), disconnect, stop paho's thread."""
        info = None
        self._closing = True
        with self._lock:
            while self._open and self._buffer:
                self.client.publish(self.topics["result"], self._buffer.popleft(), qos=self.cfg.qos)
                self.stats.published += 1
            if self._open:
                info = self.client.publish(self.topics["gateway"], _json(self._gateway_payload(False, "stopped")),
                                           qos=1, retain=True)
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while info is not None and not info.is_published() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._buffer:
            log.warning("mqtt: stopping with %d results never sent (broker %s away)", len(self._buffer), self.url)
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


async def serve_mqtt(hub: Hub, cfg: MqttConfig, ready: Callable[[str], None], station_id: str, *,
                     stats: MqttStats | None = None) -> None:
    """Publish the hub's results and status to cfg.broker until cancelled; `ready(line)` once connected.

    Returns at once when no broker is configured. A bad topic prefix or station id, or an unreadable
    password file or CA file, raises InspectorError (one line) before connecting.
    """
    if not cfg.broker:
        return
    try:
        mqtt_topics(cfg.topic_prefix, station_id)
    except ValueError as e:
        raise InspectorError(str(e)) from None
    loop = asyncio.get_running_loop()
    link = MqttLink(cfg, station_id, read_password(cfg), loop, stats or MqttStats(),
                    lambda: status_summary(hub, station_id), ready)
    events = hub.listen()
    link.start()
    try:
        await _forward(hub, events, link)
    finally:
        await link.close()


async def _forward(hub: Hub, events: asyncio.Queue[Event], link: MqttLink) -> None:
    loop = asyncio.get_running_loop()
    last = hub.last_sequence        # results up to it were taken in before this bridge listened
    seen_dropped = hub.dropped
    next_status, dirty = 0.0, True
    while True:
        timeout = max(0.0, next_status - loop.time()) if dirty else None
        try:
            event = await asyncio.wait_for(events.get(), timeout)
        except TimeoutError:
            event = None
        if event is not None and event.kind == "result" and event.result is not None:
            r = event.result
            if r.sequence > last + 1 and hub.dropped > seen_dropped:
                _refill(hub, link, last, r.sequence)     # our queue of events overflowed: take them from the hub
            seen_dropped = hub.dropped
            link.submit(r.header)
            last = r.sequence
            dirty = True
        elif event is not None and event.kind == "status":
            dirty = True
        if dirty and loop.time() >= next_status:
            next_status = loop.time() + STATUS_INTERVAL_S
            if link.is_open:
                link.publish_state()
                dirty = False


def _refill(hub: Hub, link: MqttLink, last: int, upto: int) -> None:
    """Results in (last, upto) that this bridge's event queue lost, from the hub's memory or its store."""
    recent = {r.sequence: r.header for r in hub.recent}
    for seq in range(max(last + 1, upto - 20_000), upto):
        header = recent.get(seq) or (hub.history.get(seq) if hub.history is not None else None)
        if header is not None:
            link.submit(header)
