"""CURVE over real sockets: key files and permissions, stonehouse and ironhouse on PUB and on the backfill
ROUTER; each refusal is checked against a client that gets through over the same socket at the same time."""

from __future__ import annotations

import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from inspector.network.backfill import BackfillError, BackfillServer, backfill
from inspector.network.security import (
    SecurityError,
    apply_client_curve,
    apply_server_curve,
    keygen,
    load_keypair,
    load_public,
    reload_allow_list,
    start_authenticator,
)
from inspector.state.journal import Journal


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()  # one ZAP handler per context: a fresh one per test
    yield context
    context.destroy(linger=0)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """Key pairs of the station and of clients a (allowed in ironhouse) and b (not)."""
    out = {name: keygen(tmp_path / "keys", name) for name in ("station", "a", "b")}
    allow = tmp_path / "allowed"
    allow.mkdir()
    shutil.copy(out["a"][0], allow / "a.key")
    return out


def test_keygen_writes_a_private_secret_and_refuses_to_replace_it(tmp_path: Path) -> None:
    public, secret = keygen(tmp_path / "k")
    assert (public.name, secret.name) == ("station.key", "station.key_secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "secret-key" not in public.read_text() and "secret-key" in secret.read_text()
    pub, sec = load_keypair(secret)
    assert pub == load_public(public) and len(sec) == 40
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [public.name, secret.name]  # no temp left
    with pytest.raises(SecurityError, match="exists"):
        keygen(tmp_path / "k")
    keygen(tmp_path / "k", force=True)
    assert load_public(public) != pub


def test_unsafe_or_wrong_key_files_are_refused(tmp_path: Path) -> None:
    public, secret = keygen(tmp_path)
    secret.chmod(0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        load_keypair(secret)
    with pytest.raises(SecurityError, match="no secret key"):
        load_keypair(public)
    with pytest.raises(SecurityError, match="cannot read"):
        load_keypair(tmp_path / "missing.key_secret")


def test_authenticator_modes_are_validated(tmp_path: Path, ctx: zmq.Context) -> None:
    assert start_authenticator(ctx, "off") is None
    with pytest.raises(SecurityError, match="not one of"):
        start_authenticator(ctx, "fortress")
    with pytest.raises(SecurityError, match="allow-list"):
        start_authenticator(ctx, "ironhouse")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SecurityError, match="no \\*.key"):
        start_authenticator(ctx, "ironhouse", tmp_path / "empty")


def _sub(ctx: zmq.Context, endpoint: str, client: tuple[Path, Path] | None, server_public: Path | None) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    if client is not None and server_public is not None:
        apply_client_curve(sock, client[1], server_public)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def _publish_until(pub: zmq.Socket, subs: dict[str, zmq.Socket], must: set[str], seconds: float) -> set[str]:
    """Publish every 10 ms until every client in `must` got a message (and at least `seconds`)."""
    got: set[str] = set()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5 and (not must <= got or time.monotonic() - t0 < seconds):
        pub.send_multipart([b"result", b"{}"])
        for name, sock in subs.items():
            while sock.poll(0):
                sock.recv_multipart()
                got.add(name)
        time.sleep(0.01)
    return got


def _curve_pub(ctx: zmq.Context, secret: Path) -> tuple[zmq.Socket, str]:
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    apply_server_curve(pub, secret)
    pub.bind("tcp://127.0.0.1:*")
    return pub, pub.last_endpoint.decode()


def test_stonehouse_any_curve_client_gets_through_plain_and_impostor_clients_get_nothing(
        ctx: zmq.Context, keys: dict[str, tuple[Path, Path]]) -> None:
    auth = start_authenticator(ctx, "stonehouse")
    pub, endpoint = _curve_pub(ctx, keys["station"][1])
    station_public = keys["station"][0]
    subs = {"a": _sub(ctx, endpoint, keys["a"], station_public),
            "b": _sub(ctx, endpoint, keys["b"], station_public),
            "plain": _sub(ctx, endpoint, None, None),
            "wrong_server_key": _sub(ctx, endpoint, keys["a"], keys["b"][0])}
    got = _publish_until(pub, subs, {"a", "b"}, seconds=0.5)
    assert got == {"a", "b"}
    assert auth is not None
    auth.stop()


def test_ironhouse_only_allow_listed_keys_get_through_and_the_list_reloads(
        tmp_path: Path, ctx: zmq.Context, keys: dict[str, tuple[Path, Path]]) -> None:
    auth = start_authenticator(ctx, "ironhouse", tmp_path / "allowed")
    assert auth is not None
    pub, endpoint = _curve_pub(ctx, keys["station"][1])
    station_public = keys["station"][0]
    subs = {"a": _sub(ctx, endpoint, keys["a"], station_public),
            "b": _sub(ctx, endpoint, keys["b"], station_public),
            "plain": _sub(ctx, endpoint, None, None)}
    assert _publish_until(pub, subs, {"a"}, seconds=0.5) == {"a"}
    shutil.copy(keys["b"][0], tmp_path / "allowed" / "b.key")
    assert reload_allow_list(auth, tmp_path / "allowed") == 2
    subs["b2"] = _sub(ctx, endpoint, keys["b"], station_public)
    assert "b2" in _publish_until(pub, subs, {"a", "b2"}, seconds=0.0)
    auth.stop()


def test_ironhouse_on_the_backfill_endpoint(tmp_path: Path, ctx: zmq.Context,
                                            keys: dict[str, tuple[Path, Path]]) -> None:
    j = Journal(tmp_path / "j.db")
    j.append({"sequence": 1, "verdict": "fail"})
    j.close()
    auth = start_authenticator(ctx, "ironhouse", tmp_path / "allowed")
    assert auth is not None
    srv = BackfillServer("tcp://127.0.0.1:*", tmp_path / "j.db", context=ctx,
                         curve_secret=keys["station"][1]).start()
    try:
        assert srv.endpoint is not None
        station_public = keys["station"][0]
        got = backfill(srv.endpoint, 0, context=ctx, client_secret=keys["a"][1], server_public=station_public)
        assert [h["sequence"] for h in got] == [1]
        with pytest.raises(BackfillError, match="no answer"):
            backfill(srv.endpoint, 0, timeout_ms=500, context=ctx, client_secret=keys["b"][1],
                     server_public=station_public)
        with pytest.raises(BackfillError, match="no answer"):
            backfill(srv.endpoint, 0, timeout_ms=300, context=ctx)
        assert srv.stats()["requests"] == 1
    finally:
        srv.stop()
        auth.stop()
