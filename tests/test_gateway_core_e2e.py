"""`inspector gateway` end to end, every part a real process: a station (`inspector replay` with a journal,
a backfill endpoint and a tiny real ONNX model) publishing a conveyor video, and the gateway (its servers
off: the core alone) taking every result in. What the gateway took in is read from its SQLite file
(results, counters, last sequence) and compared with the station's journal: each result exactly once, in
order, also when the gateway is SIGKILLed mid-replay and restarted, and across station restarts.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_inspector_support import (
    REPO,
    free_endpoint,
    inspector_cmd,
    make_mean_model,
    subprocess_env,
    write_conveyor_video,
)

pytestmark = pytest.mark.slow

SERVERS_OFF = ("--opcua", "", "--modbus", "", "--http", "", "--mqtt", "")


class Gateway:
    """`inspector gateway` in a subprocess; its stdout lines collected by a thread."""

    def __init__(self, connect: str, backfill: str, state: Path, *servers: str) -> None:
        self.proc = subprocess.Popen(
            inspector_cmd("gateway", "--connect", connect, "--backfill", backfill, "--state", str(state),
                          *SERVERS_OFF, *servers),
            cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.db = state / "gateway.db"
        flags = dict(zip(servers[::2], servers[1::2], strict=True))
        expected = 1 + sum(1 for f in ("--opcua", "--modbus", "--http", "--mqtt") if flags.get(f))   # + 1 per server
        if not wait(lambda: len(self.lines) >= expected, 60) or not self.lines[0].startswith("feed: "):
            self.proc.kill()                      # never left running behind a failed test
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"the gateway did not start: {self.lines} {err}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stderr_now(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read() if self.proc.stderr else ""

    def terminate(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=30)


def wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def taken_in(db: Path) -> tuple[list[int], dict[str, int]]:
    """(sequences in the gateway's store, in order; its meta: last sequence and counters)."""
    if not db.exists():
        return [], {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        seqs = [s for (s,) in conn.execute("SELECT seq FROM results ORDER BY seq")]
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    except sqlite3.OperationalError:      # not created yet
        return [], {}
    finally:
        conn.close()
    return seqs, meta


def journal(state: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(f"file:{state / 'journal.db'}?mode=ro", uri=True)
    try:
        return list(conn.execute("SELECT seq, verdict FROM verdicts ORDER BY seq"))
    finally:
        conn.close()


def stored(db: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.execute("SELECT seq, verdict FROM results ORDER BY seq"))
    finally:
        conn.close()


def replay(video: Any, model: Path, publish: str, backfill: str, state: Path, *, realtime: bool = False
           ) -> subprocess.Popen[str]:
    args = ["replay", str(video.video), "--model", str(model), "--config", str(video.video.with_suffix(".toml")),
            "--publish", publish, "--state", str(state), "--backfill", backfill]
    return subprocess.Popen(inspector_cmd(*args, *(["--realtime"] if realtime else [])), cwd=REPO,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen[str], timeout: float = 120) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (out, err)


def check_exactly_once(db: Path, state: Path, n: int) -> None:
    seqs, meta = taken_in(db)
    assert seqs == list(range(1, n + 1))
    assert stored(db) == journal(state)                                  # the same verdicts, nothing else
    verdicts = [v for _, v in journal(state)]
    assert meta == {"last_sequence": n, "parts": n, "passed": verdicts.count("pass"),
                    "failed": verdicts.count("fail"), "errors": verdicts.count("error")}


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    tmp = tmp_path_factory.mktemp("line")
    return write_conveyor_video(tmp / "line.avi", n_parts=20), make_mean_model(tmp / "model.onnx", size=32)


def test_every_result_once_in_order_and_a_sigkilled_gateway_catches_up(tmp_path: Path, line: tuple[Any, Path]
                                                                      ) -> None:
    video, model = line
    publish, backfill, state, gw_state = free_endpoint(), free_endpoint(), tmp_path / "station", tmp_path / "gw"
    gateway = Gateway(publish, backfill, gw_state)
    station = replay(video, model, publish, backfill, state, realtime=True)     # ~11 s at the video's rate
    assert wait(lambda: len(taken_in(gateway.db)[0]) >= 3, 60), gateway.stderr_now()
    gateway.kill()                                                       # SIGKILL mid-replay
    before = taken_in(gateway.db)[0]
    assert before == list(range(1, len(before) + 1)) and len(before) < len(video.rows)
    time.sleep(1.5)                                                      # results published meanwhile: missed
    gateway = Gateway(publish, backfill, gw_state)                      # restarted: backfill, then live
    assert gateway.lines[0].endswith(f"last sequence {len(before)})")
    finished(station)
    n = len(journal(state))
    assert n == len(video.rows)
    assert wait(lambda: taken_in(gateway.db)[0][-1:] == [n], 30), gateway.stderr_now()
    code, err = gateway.terminate()
    assert code == 0, err
    assert '"backfilled": 0,' not in err and '"lost": 0' in err           # the missed ones came from the journal
    check_exactly_once(gateway.db, state, n)


def test_station_restarts_and_a_gateway_that_started_while_it_was_down(tmp_path: Path, line: tuple[Any, Path]
                                                                      ) -> None:
    video, model = line
    publish, backfill, state, gw_state = free_endpoint(), free_endpoint(), tmp_path / "station", tmp_path / "gw"
    finished(replay(video, model, publish, backfill, state))            # run 1: nobody listening (1..20)
    gateway = Gateway(publish, backfill, gw_state)                      # the station is down now
    finished(replay(video, model, publish, backfill, state))            # run 2 continues at 21
    assert wait(lambda: taken_in(gateway.db)[0][-1:] == [2 * len(video.rows)], 30), gateway.stderr_now()
    finished(replay(video, model, publish, backfill, state))            # run 3: the gateway kept running
    n = 3 * len(video.rows)
    assert len(journal(state)) == n
    assert wait(lambda: taken_in(gateway.db)[0][-1:] == [n], 30), gateway.stderr_now()
    code, err = gateway.terminate()
    assert code == 0, err
    check_exactly_once(gateway.db, state, n)
    assert '"lost": 0' in err and '"bad": 0' in err                      # the feed's summary at exit


def test_sigterm_with_no_station_exits_0_and_keeps_the_state(tmp_path: Path) -> None:
    gateway = Gateway(free_endpoint(), free_endpoint(), tmp_path / "gw")
    time.sleep(1.0)
    code, err = gateway.terminate()
    assert code == 0, err
    assert taken_in(gateway.db) == ([], {}) or taken_in(gateway.db)[0] == []
    assert os.path.exists(gateway.db)


def test_the_plc_handshake_resumes_after_a_restart_from_the_store(tmp_path: Path, line: tuple[Any, Path]) -> None:
    """A PLC on Modbus acknowledges the first 5 of 20 parts; the gateway is SIGKILLed and restarted while the
    station is gone: the 6th is presented, 15 wait, and nothing was re-counted."""
    from pymodbus.client import ModbusTcpClient

    from inspector.gateway import modbus_map as m

    video, model = line
    publish, backfill, state, gw_state = free_endpoint(), free_endpoint(), tmp_path / "station", tmp_path / "gw"
    port = int(free_endpoint().rsplit(":", 1)[1])
    modbus = ("--modbus", f"127.0.0.1:{port}")
    gateway = Gateway(publish, backfill, gw_state, *modbus)
    finished(replay(video, model, publish, backfill, state))
    n = len(video.rows)
    assert wait(lambda: taken_in(gateway.db)[0][-1:] == [n], 30), gateway.stderr_now()

    def u32(c: ModbusTcpClient, address: int) -> int:
        rr = c.read_holding_registers(address, count=2, device_id=1)
        assert not rr.isError(), rr
        return rr.registers[0] | rr.registers[1] << 16

    c = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    assert c.connect()
    for seq in range(1, 6):
        assert wait(lambda seq=seq: u32(c, m.PRESENTED_SEQUENCE) == seq, 10)
        assert not c.write_registers(m.ACK, [seq, 0], device_id=1).isError()
    assert wait(lambda: u32(c, m.ACKED) == 5 and u32(c, m.PRESENTED_SEQUENCE) == 6, 10)
    c.close()
    time.sleep(0.5)                                  # acks are written within 0.1 s
    gateway.kill()

    gateway = Gateway(publish, backfill, gw_state, *modbus)
    c = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    assert wait(c.connect, 10)
    assert u32(c, m.ACKED) == 5 and u32(c, m.PRESENTED_SEQUENCE) == 6
    assert c.read_holding_registers(m.PENDING, count=1, device_id=1).registers == [n - 5]
    assert u32(c, m.PARTS) == n and u32(c, m.LAST_SEQUENCE) == n    # counters continued, not re-counted
    c.close()
    code, err = gateway.terminate()
    assert code == 0, err
    check_exactly_once(gateway.db, state, n)


def test_triggers_from_opcua_and_the_modbus_coil_reach_the_station_and_come_back(tmp_path: Path,
                                                                                line: tuple[Any, Path]) -> None:
    """A station in trigger.mode = "external" replaying at the video's rate: Inspect("LOT-OPCUA-1") over OPC UA
    and the Modbus trigger coil with "LOT-MODBUS-2" each give one result carrying that part id."""
    import asyncio

    from asyncua import Client, ua
    from pymodbus.client import ModbusTcpClient

    from inspector.gateway import modbus_map as m

    video, model = line
    publish, backfill, trigger = free_endpoint(), free_endpoint(), free_endpoint()
    state, gw_state = tmp_path / "station", tmp_path / "gw"
    config = tmp_path / "external.toml"
    config.write_text(video.video.with_suffix(".toml").read_text().replace(
        'mode = "presence"', f'mode = "external"\nendpoint = "{trigger}"'))
    opc_port, mb_port = (int(free_endpoint().rsplit(":", 1)[1]) for _ in range(2))
    opcua = f"opc.tcp://127.0.0.1:{opc_port}/inspector"
    gateway = Gateway(publish, backfill, gw_state, "--trigger", trigger, "--opcua", opcua,
                      "--modbus", f"127.0.0.1:{mb_port}")
    station = subprocess.Popen(
        inspector_cmd("replay", str(video.video), "--model", str(model), "--config", str(config), "--publish",
                      publish, "--state", str(state), "--backfill", backfill, "--realtime"),
        cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    async def inspect_over_opcua() -> None:
        async with Client(opcua) as client:
            idx = await client.get_namespace_index("urn:bigan-inspect:station")
            node = await client.nodes.objects.get_child([f"{idx}:Station"])
            deadline = time.monotonic() + 30
            while True:                              # until the station's trigger endpoint is connected
                try:
                    await node.call_method(f"{idx}:Inspect", ua.Variant("LOT-OPCUA-1", ua.VariantType.String))
                    return
                except ua.UaStatusCodeError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)

    asyncio.run(inspect_over_opcua())
    c = ModbusTcpClient("127.0.0.1", port=mb_port, timeout=5, retries=0)
    assert c.connect()
    regs = ModbusTcpClient.convert_to_registers("LOT-MODBUS-2", ModbusTcpClient.DATATYPE.STRING)
    assert not c.write_registers(m.TRIGGER_PART_ID, regs + [0] * (m.TEXT_REGS - len(regs)), device_id=1).isError()
    time.sleep(0.5)                                  # a second part, not the same frame
    assert not c.write_coil(m.COIL_TRIGGER, True, device_id=1).isError()
    assert c.read_holding_registers(m.TRIGGER_OUTCOME, count=1, device_id=1).registers == [m.OUTCOME_FORWARDED]
    c.close()
    finished(station)

    n = len(journal(state))
    assert n == 2
    assert wait(lambda: taken_in(gateway.db)[0][-1:] == [n], 30), gateway.stderr_now()
    code, err = gateway.terminate()
    assert code == 0, err
    check_exactly_once(gateway.db, state, n)
    conn = sqlite3.connect(f"file:{gateway.db}?mode=ro", uri=True)
    part_ids = [p for (p,) in conn.execute("SELECT part_id FROM results ORDER BY seq")]
    conn.close()
    assert part_ids == ["LOT-OPCUA-1", "LOT-MODBUS-2"]
