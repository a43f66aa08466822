"""CURVE wired into the daemon: `inspector keygen`, stonehouse/ironhouse on the publish, backfill and
external-trigger sockets, and security configuration errors that stop the daemon with exit code 2."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
import zmq
from test_inspector_support import write_conveyor_video
from test_reliability_support import (
    Run,
    Subscriber,
    fresh_logging,  # noqa: F401 - a fixture, used by pytestmark
    station_config,
)

from inspector.cli import main
from inspector.errors import InspectorError
from inspector.network.backfill import BackfillError, backfill
from inspector.network.security import apply_client_curve

pytestmark = pytest.mark.usefixtures("fresh_logging")


def _keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    assert main(["keygen", str(tmp_path / "keys")]) == 0
    assert main(["keygen", str(tmp_path / "clients"), "--name", "mes"]) == 0
    out = capsys.readouterr().out
    assert "station.key" in out and "mes.key_secret" in out
    assert stat.S_IMODE((tmp_path / "keys" / "station.key_secret").stat().st_mode) == 0o600
    assert main(["keygen", str(tmp_path / "keys")]) == 2  # never replaces a station key silently
    return tmp_path / "keys", tmp_path / "clients"


def test_ironhouse_daemon_serves_only_allow_listed_clients_on_every_socket(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys, clients = _keys(tmp_path, capsys)
    main(["keygen", str(tmp_path / "intruder"), "--name", "intruder"])
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=2, fps=300.0)
    pub, bf, trig = (f"ipc://{tmp_path}/{n}.ipc" for n in ("pub", "bf", "trig"))
    cfg = station_config(v.video, tmp_path / "state", camera={"loop": True, "fps": 300.0},
                         trigger={"mode": "external", "endpoint": trig},
                         publish={"bind": pub, "backfill_bind": bf, "linger_ms": 0},
                         security={"mode": "ironhouse", "key_dir": str(keys), "allow_dir": str(clients)})
    station_public = keys / "station.key"
    run = Run(cfg, realtime=True).start()
    assert run.pipeline.publisher.bound.wait(10)
    allowed = Subscriber(pub, curve=lambda s: apply_client_curve(s, clients / "mes.key_secret", station_public))
    intruder = Subscriber(pub, curve=lambda s: apply_client_curve(
        s, tmp_path / "intruder" / "intruder.key_secret", station_public))
    plain = Subscriber(pub)
    ctx = zmq.Context()
    try:
        for who, key in (("plain", None), ("intruder", tmp_path / "intruder" / "intruder.key_secret")):
            push = ctx.socket(zmq.PUSH)  # triggers from unauthorised senders never arrive
            push.setsockopt(zmq.LINGER, 0)
            if key is not None:
                apply_client_curve(push, key, station_public)
            push.connect(trig)
            push.send_json({"part_id": f"from-{who}"})
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        apply_client_curve(push, clients / "mes.key_secret", station_public)
        push.connect(trig)
        push.send_json({"part_id": "from-mes"})
        assert allowed.until(lambda: len(allowed.results) >= 1 and len(allowed.statuses) >= 3, 20)
        time.sleep(0.3)
        intruder.receive(100)
        plain.receive(100)
        assert backfill(bf, 0, 3000, client_secret=clients / "mes.key_secret", server_public=station_public)
        with pytest.raises(BackfillError):
            backfill(bf, 0, 500)  # a plain client gets no answer at all
        status = run.status()
    finally:
        run.stop()
        for s in (allowed, intruder, plain):
            s.close()
        ctx.destroy(linger=0)
    assert [h["part_id"] for h in allowed.results] == ["from-mes"]
    assert intruder.results == intruder.statuses == plain.results == plain.statuses == []
    assert status["security"] == "ironhouse" and status["backfill"]["requests"] == 1


def test_security_configuration_errors_exit_2_before_anything_is_bound(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys, _ = _keys(tmp_path, capsys)
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=1)
    empty = tmp_path / "no-clients"
    empty.mkdir()
    for security, needle in (({"mode": "stonehouse", "key_dir": str(tmp_path / "nowhere")}, "keygen"),
                             ({"mode": "ironhouse", "key_dir": str(keys), "allow_dir": str(empty)}, "no *.key"),
                             ):
        cfg = station_config(v.video, tmp_path / "state", security=security)
        with pytest.raises(InspectorError, match="security") as err:
            Run(cfg)
        assert needle in str(err.value)
    (keys / "station.key_secret").chmod(0o644)
    with pytest.raises(InspectorError, match="chmod 600"):
        Run(station_config(v.video, tmp_path / "state", security={"mode": "stonehouse", "key_dir": str(keys)}))
