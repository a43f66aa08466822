"""The backfill endpoint over real sockets: a client in another process recovers every verdict after N,
in order; malformed, oversized, unknown and random requests are counted and never stop the server."""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.network.backfill import (
    MAX_LIMIT,
    MAX_LIMIT_IMAGES,
    REJECT_CODES,
    BackfillError,
    BackfillServer,
    Request,
    RequestError,
    backfill,
    iter_backfill,
    parse_request,
)
from inspector.state.image_store import ImageStore
from inspector.state.journal import Journal


def header(seq: int, verdict: str = "pass", pad: int = 0) -> dict[str, Any]:
    return {"schema_version": 1, "type": "result", "sequence": seq, "station_id": "st1", "part_id": f"p{seq}",
            "verdict": verdict, "rois": [{"name": "top", "score": 0.5, "threshold": 0.4}], "pad": "x" * pad}


def make_journal(path: Path, n: int, pad: int = 0) -> None:
    j = Journal(path)
    j.append_many([(header(seq, "fail" if seq % 4 == 0 else "pass", pad), {}, None) for seq in range(1, n + 1)])
    j.close()


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def server(tmp_path: Path, ctx: zmq.Context) -> Iterator[BackfillServer]:
    make_journal(tmp_path / "j.db", 250)
    srv = BackfillServer("tcp://127.0.0.1:*", tmp_path / "j.db", context=ctx).start()
    yield srv
    srv.stop()


def ask(ctx: zmq.Context, endpoint: str, frames: list[bytes], timeout_ms: int = 2000) -> list[bytes]:
    """Send one raw request from a fresh DEALER and return the first reply."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        assert sock.poll(timeout_ms), "no reply"
        return sock.recv_multipart()
    finally:
        sock.close()


def _child(endpoint: str, since: int, out: Any) -> None:
    results = list(iter_backfill(endpoint, since, timeout_ms=5000, page=100))
    out.put([(r.header["sequence"], r.raw) for r in results])


def test_a_client_in_another_process_gets_every_verdict_after_n_in_order(tmp_path: Path,
                                                                        server: BackfillServer) -> None:
    spawn = mp.get_context("spawn")
    out = spawn.Queue()
    child = spawn.Process(target=_child, args=(server.endpoint, 37, out))
    child.start()
    received = out.get(timeout=30)
    child.join(10)
    assert child.exitcode == 0
    assert [seq for seq, _ in received] == list(range(38, 251))
    journal = Journal(tmp_path / "j.db")
    assert [raw.decode() for _, raw in received] == [r["header_json"] for r in journal.since(37, 1000)]
    assert server.stats()["requests"] == 3 and server.stats()["results_sent"] == 213  # pages of 100


def test_pages_limits_and_an_empty_answer(ctx: zmq.Context, server: BackfillServer) -> None:
    assert [h["sequence"] for h in backfill(server.endpoint, 200, context=ctx, page=7)] == list(range(201, 251))
    assert [h["sequence"] for h in backfill(server.endpoint, 0, context=ctx, limit=25, page=10)] == list(range(1, 26))
    assert backfill(server.endpoint, 250, context=ctx) == []
    kind, body = ask(ctx, server.endpoint, [b"BACKFILL", b'{"since": 240, "limit": 4}'])[:2]
    assert kind == b"result" and json.loads(body)["sequence"] == 241


def test_end_message_fields(ctx: zmq.Context, server: BackfillServer) -> None:
    sock = ctx.socket(zmq.DEALER)
    sock.connect(server.endpoint)
    sock.send_multipart([b"BACKFILL", b'{"since": 245, "limit": 3}'])
    replies = [sock.recv_multipart() for _ in range(4)]
    sock.close(0)
    assert [r[0] for r in replies] == [b"result"] * 3 + [b"END"]
    assert json.loads(replies[-1][1]) == {"last_seq": 250, "last_sent": 248, "count": 3, "more": True}


def test_images_on_request_only_those_still_on_disk(tmp_path: Path, ctx: zmq.Context) -> None:
    store = ImageStore(tmp_path / "images", quota_bytes=2500)
    j = Journal(tmp_path / "j.db")
    for seq in range(1, 4):
        names = store.save_part(seq, {("top", "input"): ("png", bytes([seq]) * 1000)})
        j.append(header(seq, "fail"), names)
    j.close()
    assert store.stats()["deleted"] == 1  # the quota removed seq 1's image
    srv = BackfillServer("tcp://127.0.0.1:*", tmp_path / "j.db", image_root=tmp_path / "images",
                         context=ctx).start()
    try:
        results = list(iter_backfill(srv.endpoint, 0, images=True, context=ctx))
        plain = list(iter_backfill(srv.endpoint, 0, context=ctx))
    finally:
        srv.stop()
    assert [r.images for r in results] == [{}, {"top/input": b"\x02" * 1000}, {"top/input": b"\x03" * 1000}]
    assert all(r.images == {} for r in plain)


REJECTED = [
    ([b"BACKFILL", b"x" * 5000], "oversized"),
    ([b"BACKFILL", b'{"since": 1}', b"x" * 4090], "oversized"),
    ([b"HELLO", b'{"since": 1}'], "unknown_command"),
    ([b""], "unknown_command"),
    ([b"", b"BACKFILL", b'{"since": 1}'], "unknown_command"),
    ([b"BACKFILL"], "malformed"),
    ([b"BACKFILL", b'{"since": 1}', b""], "malformed"),
    ([b"BACKFILL", b"\xff\xfe"], "malformed"),
    ([b"BACKFILL", b"[1, 2]"], "malformed"),
    ([b"BACKFILL", b"[" * 3000], "malformed"),
    ([b"BACKFILL", b"{}"], "bad_request"),
    ([b"BACKFILL", b'{"since": -1}'], "bad_request"),
    ([b"BACKFILL", b'{"since": true}'], "bad_request"),
    ([b"BACKFILL", b'{"since": 1.5}'], "bad_request"),
    ([b"BACKFILL", b'{"since": 1e999}'], "bad_request"),
    ([b"BACKFILL", b'{"since": 99999999999999999999999}'], "bad_request"),
    ([b"BACKFILL", b'{"since": 1, "limit": 0}'], "bad_request"),
    ([b"BACKFILL", b'{"since": 1, "limit": 10001}'], "bad_request"),
    ([b"BACKFILL", b'{"since": 1, "images": "yes"}'], "bad_request"),
    ([b"BACKFILL", b'{"since": 1, "drop": "table"}'], "bad_request"),
]


@pytest.mark.parametrize(("frames", "code"), REJECTED)
def test_parse_request_rejects(frames: list[bytes], code: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(frames)
    assert info.value.code == code


def test_parse_request_accepts_and_caps_image_pages() -> None:
    assert parse_request([b"BACKFILL", b'{"since": 0}']) == Request(0, 1000, False)
    assert parse_request([b"BACKFILL", b'{"since": 5, "limit": 10000}']) == Request(5, MAX_LIMIT, False)
    assert parse_request([b"BACKFILL", b'{"since": 5, "limit": 500, "images": true}']) == Request(
        5, MAX_LIMIT_IMAGES, True)


def test_every_rejection_is_answered_and_counted(ctx: zmq.Context, server: BackfillServer) -> None:
    for frames, code in REJECTED:
        kind, body = ask(ctx, server.endpoint, frames)
        assert kind == b"ERROR" and json.loads(body)["error"] == code, frames
    stats = server.stats()
    for code in REJECT_CODES:
        assert stats[f"rejected_{code}"] == sum(1 for _, c in REJECTED if c == code)
    assert stats["requests"] == 0
    assert len(backfill(server.endpoint, 240, context=ctx)) == 10


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=4)
       | st.builds(lambda body: [b"BACKFILL", json.dumps(body).encode()],
                   st.dictionaries(st.sampled_from(["since", "limit", "images", "x"]),
                                   st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5))))
def test_parse_request_only_ever_returns_a_valid_request_or_raises_request_error(frames: list[bytes]) -> None:
    try:
        req = parse_request(frames)
    except RequestError as exc:
        assert exc.code in REJECT_CODES
        return
    assert req.since >= 0 and 1 <= req.limit <= MAX_LIMIT and isinstance(req.images, bool)


def _garbage(rng: random.Random) -> list[bytes]:
    pick = rng.random()
    if pick < 0.3:
        return [rng.randbytes(rng.randint(0, 200)) for _ in range(rng.randint(1, 5))]
    if pick < 0.5:
        return [b"BACKFILL", rng.randbytes(rng.randint(0, 300))]
    if pick < 0.65:
        return [b"BACKFILL", b"x" * rng.randint(4097, 60_000)]
    if pick < 0.85:
        value = rng.choice([-1, "1", None, [], {}, 2**70, 0.5, True])
        return [b"BACKFILL", json.dumps({rng.choice(["since", "limit", "images"]): value}).encode()]
    return [rng.choice([b"BACKFIL", b"backfill", b"END", b"result", b"BACKFILL\x00"]), b'{"since": 1}']


def test_fuzzed_requests_never_crash_or_stall_the_server(ctx: zmq.Context, server: BackfillServer) -> None:
    rng = random.Random(20261129)
    fuzzer = ctx.socket(zmq.DEALER)
    fuzzer.linger = 0
    fuzzer.connect(server.endpoint)
    sent = 400
    for _ in range(sent):
        fuzzer.send_multipart(_garbage(rng))
    answers = 0
    while answers < sent and fuzzer.poll(2000):
        assert fuzzer.recv_multipart()[0] == b"ERROR"
        answers += 1
    fuzzer.close()
    assert answers == sent
    assert server.is_alive()
    stats = server.stats()
    assert sum(stats[f"rejected_{c}"] for c in REJECT_CODES) == sent and stats["requests"] == 0
    assert [h["sequence"] for h in backfill(server.endpoint, 245, context=ctx)] == [246, 247, 248, 249, 250]


def test_a_client_that_never_reads_does_not_stall_the_server(tmp_path: Path, ctx: zmq.Context) -> None:
    make_journal(tmp_path / "j.db", 1000, pad=8000)
    srv = BackfillServer("tcp://127.0.0.1:*", tmp_path / "j.db", context=ctx, sndhwm=5).start()
    try:
        sleeper = ctx.socket(zmq.DEALER)
        sleeper.linger = 0
        sleeper.rcvhwm = 1
        sleeper.rcvbuf = 4096
        sleeper.connect(srv.endpoint)
        sleeper.send_multipart([b"BACKFILL", b'{"since": 0, "limit": 1000}'])
        deadline = time.monotonic() + 5
        while srv.stats()["aborted"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.stats()["aborted"] == 1
        t0 = time.monotonic()
        assert len(backfill(srv.endpoint, 995, context=ctx)) == 5
        assert time.monotonic() - t0 < 1.0
        sleeper.close()
    finally:
        srv.stop()


def test_missing_journal_is_answered_with_an_error_then_recovers(tmp_path: Path, ctx: zmq.Context) -> None:
    srv = BackfillServer("tcp://127.0.0.1:*", tmp_path / "j.db", context=ctx).start()
    try:
        with pytest.raises(BackfillError, match="unavailable"):
            backfill(srv.endpoint, 0, context=ctx)
        make_journal(tmp_path / "j.db", 3)
        assert [h["sequence"] for h in backfill(srv.endpoint, 0, context=ctx)] == [1, 2, 3]
        assert srv.stats()["unavailable"] == 1
    finally:
        srv.stop()


def test_no_server_times_out(ctx: zmq.Context) -> None:
    with pytest.raises(BackfillError, match="no answer"):
        backfill("tcp://127.0.0.1:1", 0, timeout_ms=200, context=ctx)


def test_bind_error_is_raised_by_start_and_stop_is_prompt(tmp_path: Path, ctx: zmq.Context,
                                                         server: BackfillServer) -> None:
    assert server.endpoint is not None
    with pytest.raises(zmq.ZMQError):
        BackfillServer(server.endpoint, tmp_path / "j.db", context=ctx).start()
    t0 = time.monotonic()
    server.stop()
    assert not server.is_alive() and time.monotonic() - t0 < 1.0
