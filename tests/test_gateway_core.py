"""The gateway's core, in one process: password hashes, the store (one transaction per batch, counters,
acks, history, retention), the PLC handshake across a restart, the feed against a real PUB socket and a
real backfill server (gaps filled, duplicates dropped, order kept), the trigger forwarder, the engine
state in the daemon's status, the [gateway] configuration and the CLI's one-line errors (exit 2)."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from test_inspector_support import FakeEngine, inspector_cmd, subprocess_env

from inspector.config import effective_toml, load_config
from inspector.errors import InspectorError
from inspector.gateway.feed import Feed, FeedOptions, image_fetcher
from inspector.gateway.hub import Event, Hub, PartResult, station_state
from inspector.gateway.passwords import hash_password, is_hash, passwd_line, verify_password
from inspector.gateway.run import (
    SERVERS,
    GatewayOptions,
    Server,
    check_gateway,
    gateway_config,
    import_server,
    new_hub,
)
from inspector.gateway.store import Store
from inspector.gateway.trigger import TriggerForwarder, TriggerUnavailable, check_part_id
from inspector.network.backfill import BackfillServer
from inspector.network.security import apply_server_curve, keygen, start_authenticator
from inspector.network.trigger_input import parse_trigger
from inspector.records import Part
from inspector.stages.scoring import score_batch
from inspector.state.journal import Journal
from inspector.stats import Stats


def header(seq: int, verdict: str = "pass", part_id: str | None = None, t: float | None = None) -> dict[str, Any]:
    return {"schema_version": 1, "type": "result", "sequence": seq, "station_id": "st", "run_id": "r1",
            "part_id": part_id or f"p{seq}", "frame": seq, "trigger": "presence",
            "captured_at": t if t is not None else 1000.0 + seq, "published_at": 1000.5 + seq, "latency_ms": 3.0,
            "verdict": verdict, "error": None, "model_id": "m",
            "rois": [{"name": "center", "score": 0.5, "threshold": 0.4 if verdict == "fail" else 0.6,
                      "verdict": verdict}], "images": []}


def result(seq: int, verdict: str = "pass", **kw: Any) -> PartResult:
    return PartResult.from_message(header(seq, verdict, **kw))


# --- passwords --------------------------------------------------------------------------------------------
def test_password_hashes_verify_only_the_right_password() -> None:
    stored = hash_password("correct horse")
    assert is_hash(stored) and stored.startswith("scrypt$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct horsE") and not verify_password(stored, "")
    assert hash_password("correct horse") != stored                      # a new salt each time
    for bad in ("", "plain", "scrypt$1$8$1$AAAA$BBBB", stored[:-4], stored.replace("16384", "3"),
                "scrypt$1073741824$8$1$" + stored.split("$", 4)[4]):   # never hours of work for a bad entry
        assert not verify_password(bad, "correct horse") and not is_hash(bad)
    assert not verify_password(stored, "x" * 5000)
    with pytest.raises(ValueError):
        hash_password("")
    assert passwd_line("operator", "pw").startswith('operator = "scrypt$')
    assert passwd_line("a.b@plant", "pw").startswith('"a.b@plant" = "scrypt$')
    with pytest.raises(InspectorError):
        passwd_line("a b", "pw")


def test_gateway_passwd_reads_stdin_and_prints_a_toml_line(tmp_path: Path) -> None:
    r = subprocess.run(inspector_cmd("gateway-passwd", "plc"), input="s3cret\n", capture_output=True, text=True,
                       env=subprocess_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert "s3cret" not in line and line.startswith('plc = "scrypt$')
    toml = tmp_path / "g.toml"
    toml.write_text(f"[gateway.opcua.users]\n{line}\n")
    cfg = load_config(toml)
    assert verify_password(cfg.gateway.opcua.users["plc"], "s3cret") and check_gateway(cfg) == []


# --- store --------------------------------------------------------------------------------------------------
def test_store_takes_each_sequence_once_and_survives_a_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path)
    taken = store.add_many([result(1), result(2, "fail"), result(3, "error")])
    assert [r.sequence for r in taken] == [1, 2, 3]
    assert store.add_many([result(2), result(3)]) == []                  # duplicates: nothing written
    assert [r.sequence for r in store.add_many([result(3), result(4)])] == [4]
    store.set_acked("opcua", 2)
    store.close()                                                        # writes the noted ack

    again = Store(tmp_path)
    assert again.last_sequence == 4
    assert (again.counters.parts, again.counters.passed, again.counters.failed, again.counters.errors) == (4, 2, 1, 1)
    assert again.acked("opcua") == 2 and again.acked("modbus") == 0
    assert [h["sequence"] for h in again.search()] == [4, 3, 2, 1]      # newest first
    assert again.get(2)["verdict"] == "fail" and again.get(99) is None
    again.close()


def test_store_writes_a_batch_in_one_transaction(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add_many([result(1)])
    conn = sqlite3.connect(tmp_path / "gateway.db")
    conn.execute("CREATE TRIGGER boom BEFORE INSERT ON results WHEN NEW.seq = 3 BEGIN SELECT RAISE(ABORT, 'x'); END")
    conn.commit()
    with pytest.raises(sqlite3.DatabaseError):
        store.add_many([result(2), result(3)])
    assert store.last_sequence == 1 and store.counters.parts == 1      # neither 2 nor the counters moved
    assert [h["sequence"] for h in store.search()] == [1]
    conn.execute("DROP TRIGGER boom")
    conn.commit()
    conn.close()
    assert [r.sequence for r in store.add_many([result(2), result(3)])] == [2, 3]
    store.close()


def test_history_search_filters_and_pages(tmp_path: Path) -> None:
    store = Store(tmp_path)
    verdicts = ["pass", "fail", "pass", "error", "fail", "pass"]
    store.add_many([result(i + 1, v, part_id=f"LOT7-{i:03d}" if i % 2 else f"LOT8-{i:03d}")
                    for i, v in enumerate(verdicts)])
    assert [h["sequence"] for h in store.search(verdict="fail")] == [5, 2]
    assert [h["sequence"] for h in store.search(since=1002.0, until=1004.0)] == [4, 3, 2]
    assert [h["sequence"] for h in store.search(part_id="LOT7")] == [6, 4, 2]
    assert [h["sequence"] for h in store.search(limit=2)] == [6, 5]
    assert [h["sequence"] for h in store.search(limit=2, before_sequence=5)] == [4, 3]
    assert store.search(part_id="'; DROP TABLE results; --") == [] and store.get(1) is not None
    store.close()


def test_retention_keeps_the_newest_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("inspector.gateway.store.PRUNE_EVERY", 10)
    store = Store(tmp_path, retention=25)
    for start in range(1, 101, 10):
        store.add_many([result(s) for s in range(start, start + 10)])
    seqs = [h["sequence"] for h in store.search(limit=1000)]
    assert seqs == list(range(100, 75, -1)) and store.counters.parts == 100   # counters are not pruned
    store.close()


def test_images_come_from_the_hub_then_from_the_station(tmp_path: Path) -> None:
    store = Store(tmp_path, fetch_images=lambda seq: [({"roi": "center", "kind": "input", "format": "png"},
                                                       f"station-{seq}".encode())])
    hub = Hub()
    store.hub = hub
    store.add_many([result(1), result(2)])
    desc = {"roi": "center", "kind": "input", "format": "png"}
    hub.on_result(PartResult.from_message({**header(2), "images": [desc]}, [b"in-memory"]))
    assert asyncio.run(store.images(2)) == [(desc, b"in-memory")]
    assert asyncio.run(store.images(1)) == [(desc, b"station-1")]
    assert asyncio.run(store.images(3)) == []                            # never taken in
    store.fetch_images = lambda seq: 1 / 0                               # the station fails: no images
    assert asyncio.run(store.images(1)) == []
    store.close()


# --- hub and handshake -------------------------------------------------------------------------------------
def test_handshake_presents_each_result_once_and_resumes_after_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path)
    hub = new_hub(store)
    hs = store.open_handshake(hub, "opcua")
    queue = hub.listen()
    results = [result(s, "fail" if s % 3 == 0 else "pass") for s in range(1, 7)]
    store.add_many(results)
    for r in results:
        hub.on_result(r)
    seen = []
    while hs.current is not None and len(seen) < 3:
        seen.append(hs.current.sequence)
        assert not hub.ack("opcua", hs.current.sequence + 1)             # not the one presented: ignored
        assert hub.ack("opcua", hs.current.sequence)
        assert not hub.ack("opcua", seen[-1])                            # a repeated ack changes nothing
    assert seen == [1, 2, 3] and store.acked("opcua") == 3
    kinds = [queue.get_nowait().kind for _ in range(queue.qsize())]
    assert kinds.count("result") == 6 and "handshake" in kinds
    store.close()                                                        # the gateway stops (acks written)

    store = Store(tmp_path)
    hub = new_hub(store)
    assert hub.counters.parts == 6 and hub.last_sequence == 6 and hub.last_result.sequence == 6
    hs = store.open_handshake(hub, "opcua")
    assert [r.sequence for r in hs.pending] == [4, 5, 6]                 # from the store, not re-counted
    assert store.open_handshake(hub, "opcua") is hs
    fresh = store.open_handshake(hub, "modbus")
    assert [r.sequence for r in fresh.pending] == [1, 2, 3, 4, 5, 6]
    r7 = result(7)
    store.add_many([r7])
    hub.on_result(r7)
    assert [r.sequence for r in hs.pending] == [4, 5, 6, 7]
    store.close()


def test_handshake_backlog_is_bounded(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add_many([result(s) for s in range(1, 51)])
    hub = new_hub(store)
    hs = store.open_handshake(hub, "modbus", backlog=10)
    assert [r.sequence for r in hs.pending] == list(range(41, 51))
    store.close()


def test_station_state_reads_the_engine_and_camera() -> None:
    base = {"camera": {"state": "open"}, "engine": {"state": "ok"}}
    assert station_state(None) == "unknown"
    assert station_state(base) == "running"
    assert station_state({**base, "engine": {"state": "error", "errors": 1}}) == "engine_error"
    assert station_state({**base, "camera": {"state": "reconnecting"}}) == "camera_lost"
    assert station_state({**base, "final": True}) == "stopped"
    assert station_state({"camera": None, "engine": "bogus"}) == "running"


def test_the_status_engine_object_follows_the_engine_calls() -> None:
    stats = Stats()
    assert stats.snapshot()["engine"] == {"state": "ok", "calls": 0, "errors": 0, "last_error": None}
    part = Part("p1", None, "continuous", [])  # type: ignore[arg-type]
    part.crops = [__import__("numpy").zeros((32, 32, 3), "uint8")]
    score_batch(FakeEngine(fail=True), [part], stats=stats)
    engine = stats.snapshot()["engine"]
    assert engine["state"] == "error" and engine["errors"] == 1 and "illegal memory access" in engine["last_error"]
    assert station_state({"engine": engine}) == "engine_error"
    score_batch(FakeEngine(), [part], stats=stats)
    assert stats.snapshot()["engine"]["state"] == "ok" and stats.snapshot()["engine"]["calls"] == 2


# --- trigger ------------------------------------------------------------------------------------------------
def test_part_ids_are_checked_as_the_station_does() -> None:
    for good in ("LOT7-000123", "x" * 128, "Teil-ÄÖÜ 42", 'quote"back\\slash'):
        assert check_part_id(good) == good
    for bad in ("", "x" * 129, "tab\there", "nl\n", "\x00", 42, None, b"bytes"):
        with pytest.raises(ValueError):
            check_part_id(bad)


def test_trigger_forwarder_reaches_a_pull_socket_and_refuses_without_one() -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    fwd = TriggerForwarder(f"tcp://127.0.0.1:{port}", context=ctx, wait_s=5)

    async def send() -> None:
        await fwd.inspect("LOT7-000123")
        with pytest.raises(ValueError):
            await fwd.inspect("bad\npart")

    asyncio.run(send())
    assert pull.poll(5000)
    assert parse_trigger(pull.recv_multipart()) == "LOT7-000123"       # what the station's input accepts
    assert fwd.sent == 1 and fwd.refused == 1
    pull.close(0)
    fwd.close()
    nobody = TriggerForwarder(f"tcp://127.0.0.1:{_free_port()}", context=ctx, wait_s=0.2)
    with pytest.raises(TriggerUnavailable):
        asyncio.run(nobody.inspect("LOT7"))
    nobody.close()
    ctx.term()


# --- feed ---------------------------------------------------------------------------------------------------
IMG = {"roi": "center", "kind": "input", "format": "png", "width": 1, "height": 1, "channels": 1}


class FakeStation:
    """A PUB socket and a backfill server over a journal: what the feed talks to."""

    def __init__(self, tmp: Path, ctx: zmq.Context, curve_secret: Path | None = None) -> None:
        self.journal = Journal(tmp / "journal.db")
        self.pub = ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        if curve_secret is not None:
            apply_server_curve(self.pub, curve_secret)
        self.endpoint = f"tcp://127.0.0.1:{self.pub.bind_to_random_port('tcp://127.0.0.1')}"
        self.backfill = BackfillServer("tcp://127.0.0.1:*", tmp / "journal.db", context=ctx,
                                       curve_secret=curve_secret).start()
        self.last = 0

    def journal_only(self, n: int, verdict: str = "pass") -> list[dict[str, Any]]:
        headers = [{**header(self.last + i + 1, verdict), "images": [IMG]} for i in range(n)]
        self.journal.append_many([(h, {}, None) for h in headers])
        self.last += n
        return headers

    def publish(self, n: int, *, send: bool = True) -> None:
        for h in self.journal_only(n):
            if send:
                self.pub.send_multipart([b"result", json.dumps(h).encode(), b"img"])

    def status(self) -> None:
        self.pub.send_multipart([b"status", json.dumps({"schema_version": 1, "type": "status", "run_id": "r1",
                                                       "last_sequence": self.last, "camera": {"state": "open"},
                                                       "backfill": {"state": "serving"}}).encode()])

    def wait_subscribed(self) -> None:
        topics = set()
        deadline = time.monotonic() + 10
        while len(topics) < 3 and time.monotonic() < deadline:
            if self.pub.poll(100):
                topics.add(self.pub.recv())
        assert len(topics) == 3, topics

    def close(self) -> None:
        self.backfill.stop()
        self.pub.close(0)
        self.journal.close()


def test_feed_takes_every_result_once_in_order_filling_gaps_from_the_journal(tmp_path: Path) -> None:
    ctx = zmq.Context()
    station = FakeStation(tmp_path, ctx)
    station.journal_only(5)                       # before the gateway ever ran: from the backfill at start
    store = Store(tmp_path / "gw")
    hub = new_hub(store)
    feed = Feed(FeedOptions(station.endpoint, station.backfill.endpoint, silence_s=1.0), store, hub, ctx)

    async def run() -> list[Event]:
        queue = hub.listen()
        feed.start(asyncio.get_running_loop())
        await asyncio.to_thread(station.wait_subscribed)
        station.publish(3)                        # 6..8 live
        station.publish(4, send=False)            # 9..12 lost on the PUB ...
        station.publish(2)                        # ... a gap before 13: filled from the journal
        station.publish(3, send=False)            # 15..17 lost at the end of a burst ...
        station.status()                          # ... the status says so
        station.pub.send_multipart([b"result", b"not json"])
        station.pub.send_multipart([b"preview", b'{"schema_version": 1, "width": 4}', b"jpeg"])
        for _ in range(200):
            await asyncio.sleep(0.05)
            if hub.last_sequence == 17 and hub.preview is not None:
                break
        for s in (8, 13):                         # duplicates of what was taken in
            station.pub.send_multipart([b"result", json.dumps(header(s)).encode()])
        await asyncio.sleep(1.5)                  # and then silence
        await asyncio.to_thread(feed.stop)
        return [queue.get_nowait() for _ in range(queue.qsize())]

    events = asyncio.run(run())
    seqs = [e.result.sequence for e in events if e.kind == "result"]
    assert seqs == list(range(1, 18))             # exactly once, in order
    assert hub.counters.parts == 17 and hub.preview == ({"schema_version": 1, "width": 4}, b"jpeg")
    assert feed.stats.live + feed.stats.backfilled == 17 and feed.stats.lost == 0 and feed.stats.bad == 1
    assert feed.stats.live + feed.stats.duplicates == 3 + 2 + 2            # every live message: taken or dropped
    assert hub.state == "running" and not hub.connected                  # silent for > silence_s
    live = {e.result.sequence: e.result for e in events if e.kind == "result"}
    assert live[6].images and not live[9].images                         # backfilled ones carry no images
    assert [h["sequence"] for h in store.search(limit=100)] == list(range(17, 0, -1))
    assert store.last_sequence == 17
    fetch = image_fetcher(FeedOptions(station.endpoint, station.backfill.endpoint), ctx)
    assert fetch is not None and fetch(3) == []                          # no image store: none
    store.close()
    station.close()
    ctx.term()


def test_feed_and_trigger_over_curve_as_listen_does(tmp_path: Path) -> None:
    """A stonehouse station: the feed (live and backfill) and the trigger with the gateway's keys; without
    them nothing arrives."""
    _, station_secret = keygen(tmp_path / "keys", "station")
    _, gateway_secret = keygen(tmp_path / "keys", "gateway")
    ctx = zmq.Context()
    auth = start_authenticator(ctx, "stonehouse")
    station = FakeStation(tmp_path, ctx, curve_secret=station_secret)
    pull = ctx.socket(zmq.PULL)
    apply_server_curve(pull, station_secret)
    trigger_port = pull.bind_to_random_port("tcp://127.0.0.1")
    station.journal_only(2)
    curve = {"client_secret": gateway_secret, "server_public": tmp_path / "keys" / "station.key"}
    store = Store(tmp_path / "gw")
    hub = new_hub(store)
    feed = Feed(FeedOptions(station.endpoint, station.backfill.endpoint, **curve), store, hub, ctx)
    fwd = TriggerForwarder(f"tcp://127.0.0.1:{trigger_port}", context=ctx, wait_s=5, **curve)
    plain = TriggerForwarder(f"tcp://127.0.0.1:{trigger_port}", context=ctx, wait_s=0.5)

    async def run() -> None:
        feed.start(asyncio.get_running_loop())
        await asyncio.to_thread(station.wait_subscribed)
        station.publish(2)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if hub.last_sequence == 4:
                break
        await fwd.inspect("LOT-CURVE")
        with pytest.raises(TriggerUnavailable):     # no keys: the handshake never completes
            await plain.inspect("LOT-PLAIN")
        await asyncio.to_thread(feed.stop)

    asyncio.run(run())
    assert [h["sequence"] for h in store.search()] == [4, 3, 2, 1]
    assert pull.poll(5000) and parse_trigger(pull.recv_multipart()) == "LOT-CURVE" and not pull.poll(200)
    for closing in (fwd, plain):
        closing.close()
    pull.close(0)
    store.close()
    station.close()
    auth.stop()
    ctx.term()


def test_feed_without_backfill_accepts_gaps_as_lost(tmp_path: Path) -> None:
    ctx = zmq.Context()
    station = FakeStation(tmp_path, ctx)
    store = Store(tmp_path / "gw")
    hub = new_hub(store)
    feed = Feed(FeedOptions(station.endpoint, ""), store, hub, ctx)

    async def run() -> None:
        feed.start(asyncio.get_running_loop())
        await asyncio.to_thread(station.wait_subscribed)
        station.publish(2)
        station.publish(3, send=False)
        station.publish(1)
        poison = {**header(7), "rois": 5}          # a sequence, but not a result: skipped, never a stall
        station.pub.send_multipart([b"result", json.dumps(poison).encode()])
        station.last = 7
        station.publish(1)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if hub.last_sequence == 8:
                break
        await asyncio.to_thread(feed.stop)

    asyncio.run(run())
    assert [h["sequence"] for h in store.search()] == [8, 6, 2, 1] and feed.stats.lost == 3
    assert feed.stats.bad == 1 and store.counters.parts == 4
    store.close()
    station.close()
    ctx.term()


# --- configuration and CLI ----------------------------------------------------------------------------------
def test_the_gateway_section_in_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "inspector.toml"
    toml.write_text('station_id = "line-a"\n[gateway]\nconnect = "tcp://edge:5556"\n'
                    '[gateway.modbus]\nbind = "0.0.0.0:502"\n')
    monkeypatch.setenv("INSPECTOR_GATEWAY__HTTP__BIND", "0.0.0.0:8081")
    cfg = gateway_config(GatewayOptions(toml, opcua="", state=tmp_path / "st"))
    gw = cfg.gateway
    assert gw.connect == "tcp://edge:5556" and gw.modbus.bind == "0.0.0.0:502" and gw.http.bind == "0.0.0.0:8081"
    assert gw.opcua.endpoint == "" and gw.state_dir == tmp_path / "st" and gw.modbus.unit_id == 1
    text = effective_toml(cfg)
    assert "[gateway]\n" in text and "[gateway.opcua]\n" in text and '[gateway.mqtt]\nbroker = ""' in text
    again = tmp_path / "again.toml"
    again.write_text(text)
    assert load_config(again).gateway == gw                              # what check-config prints loads back
    toml.write_text('[gateway]\nclient_key = "/k/gw.key_secret"\n[gateway.http.users]\nop = "plain"\n')
    with pytest.raises(InspectorError, match="client_key"):
        load_config(toml)
    toml.write_text('[gateway.http.users]\nop = "plain"\n')
    assert check_gateway(load_config(toml)) == [
        "gateway.http.users.op: not a password hash (make one with `inspector gateway-passwd op`)"]
    r = subprocess.run(inspector_cmd("check-config", str(toml)), capture_output=True, text=True,
                       env=subprocess_env(), timeout=60)
    assert r.returncode == 2 and "gateway-passwd op" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_missing_server_module_or_library_names_the_fix() -> None:
    with pytest.raises(InspectorError, match=r"not part of this installation.*--opcua \"\""):
        import_server(Server("opcua", "OPC UA server", "inspector.gateway.no_such_module", "serve", "--opcua", True))
    with pytest.raises(InspectorError, match=r"needs the Python package 'no_such_lib_xyz'.*\[gateway\]"):
        import_server(Server("mqtt", "MQTT bridge", "no_such_lib_xyz.client", "serve", "--mqtt", False))
    assert {s.key for s in SERVERS} == {"opcua", "modbus", "http", "mqtt"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["endpoint", "port_in_use", "state_dir", "bad_flag_value"])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    off = ["--opcua", "", "--http", "", "--mqtt", ""]
    args = ["gateway", "--state", str(tmp_path / "state"), "--modbus", "", *off]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    if case == "endpoint":
        args += ["--connect", "tcp://nowhere"]
        expect = "gateway.connect"
    elif case == "port_in_use":
        args = ["gateway", "--state", str(tmp_path / "state"), *off, "--modbus",
                f"127.0.0.1:{busy.getsockname()[1]}"]
        expect = "port is in use"
    elif case == "state_dir":
        (tmp_path / "file").write_text("")
        args += ["--state", str(tmp_path / "file" / "sub")]
        expect = "gateway.state_dir"
    else:
        args += ["--http", "nonsense"]
        expect = "gateway.http.bind"
    r = subprocess.run(inspector_cmd(*args), capture_output=True, text=True, env=subprocess_env(), timeout=60)
    busy.close()
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert expect in r.stderr and r.stdout == ""
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) <= 3   # the error (pydantic: header + field)
