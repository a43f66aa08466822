"""The gateway's Modbus TCP server (inspector/gateway/modbus_server.py) served by another process
(tests/gateway_modbus_harness.py, a Hub fed with made-up result headers) and read by a real pymodbus
client here: the register map, the ResultReady/ResultAck handshake (every result exactly once), the
trigger coil, the reject pulse, and bad input that must get an exception or be dropped, never a crash."""

from __future__ import annotations

import json
import math
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from test_inspector_support import close_stdin_and_wait

pytest.importorskip("pymodbus")
from pymodbus.client import ModbusTcpClient  # noqa: E402

from inspector.gateway import modbus_map as m  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "gateway_modbus_harness.py"
F32 = ModbusTcpClient.DATATYPE.FLOAT32
U32 = ModbusTcpClient.DATATYPE.UINT32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """The harness process and its stdout, line by line."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(HARNESS), "--port", str(self.port), *args],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.out: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = self.wait("ready", 30)["ready"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.put(json.loads(line))

    def wait(self, key: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.out.get(timeout=max(0.01, deadline - time.monotonic()))
            self.seen.append(msg)
            if key in msg:
                return msg

    def drain(self) -> list[dict]:
        while True:
            try:
                self.seen.append(self.out.get_nowait())
            except queue.Empty:
                return self.seen

    def send(self, op: str, **kw: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        self.wait("done")

    def result(self, seq: int, verdict: str = "pass", **extra: object) -> None:
        header = {"sequence": seq, "part_id": f"P-{seq}", "verdict": verdict, "published_at": time.time(),
                  "latency_ms": 12.5, "rois": [{"name": "center", "score": 0.1, "threshold": 0.5, "verdict": verdict}]}
        self.send("result", header={**header, **extra})

    def client(self) -> ModbusTcpClient:
        c = ModbusTcpClient("127.0.0.1", port=self.port, timeout=5, retries=0)
        assert c.connect()
        return c

    def close(self) -> None:
        close_stdin_and_wait(self.proc)


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    s = Served(*getattr(request, "param", ()))
    try:
        yield s
    finally:
        s.close()


def hr(c: ModbusTcpClient, address: int, count: int = 1) -> list[int]:
    rr = c.read_holding_registers(address, count=count, device_id=1)
    assert not rr.isError(), rr
    return rr.registers


def u32(c: ModbusTcpClient, address: int) -> int:
    return c.convert_from_registers(hr(c, address, 2), U32, word_order="little")


def coils(c: ModbusTcpClient) -> list[bool]:
    rr = c.read_coils(0, count=16, device_id=1)
    assert not rr.isError(), rr
    return rr.bits[:16]


def text(c: ModbusTcpClient, address: int) -> str:
    return c.convert_from_registers(hr(c, address, m.TEXT_REGS), ModbusTcpClient.DATATYPE.STRING)


def part_id_regs(value: str) -> list[int]:
    """A part id as a PLC should write it: all 32 registers, NUL padded (docs/plant.md)."""
    regs = ModbusTcpClient.convert_to_registers(value, ModbusTcpClient.DATATYPE.STRING) if value else []
    return regs + [0] * (m.TEXT_REGS - len(regs))


def until(predicate, timeout: float = 5.0, step: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(step)
    raise AssertionError("timed out")


def test_register_map_follows_the_hub(served: Served) -> None:
    served.send("status", header={"camera": {"state": "open"}, "frames_dropped": {"queue_full": 3, "corrupt": 1},
                                  "model_id": "m1"})
    served.result(70000, "pass")
    served.result(70001, "error", part_id="LOT7-000123", latency_ms=33.25,
                  rois=[{"name": "left", "score": None, "threshold": 0.25, "verdict": "error"},
                        {"name": "right", "score": 0.75, "threshold": 0.5, "verdict": "fail"}])
    with served.client() as c:
        until(lambda: u32(c, m.LAST_SEQUENCE) == 70001)
        regs = hr(c, 0, 70)
        assert regs[m.STATE] == 1 and regs[m.LINK] == 1 and regs[m.LAST_VERDICT] == 3
        assert regs[m.LAST_SEQUENCE:m.LAST_SEQUENCE + 2] == [70001 & 0xFFFF, 70001 >> 16]   # low word first
        counts = c.convert_from_registers(regs[m.PARTS:m.FRAMES_DROPPED + 2], U32, word_order="little")
        assert counts == [2, 1, 0, 1, 4]
        assert c.convert_from_registers(regs[m.LAST_LATENCY:m.LAST_LATENCY + 2], F32, word_order="little") == 33.25
        assert regs[m.ROI_COUNT] == 2
        scores = c.convert_from_registers(regs[m.ROI_SCORES:m.ROI_SCORES + 16], F32, word_order="little")
        thresholds = c.convert_from_registers(regs[m.ROI_THRESHOLDS:m.ROI_THRESHOLDS + 16], F32, word_order="little")
        assert math.isnan(scores[0]) and scores[1] == 0.75 and scores[2:] == [0.0] * 6
        assert thresholds[:2] == [0.25, 0.5]
        assert regs[m.ROI_VERDICTS:m.ROI_VERDICTS + 8] == [3, 2, 0, 0, 0, 0, 0, 0]
        assert text(c, m.LAST_PART_ID) == "LOT7-000123"
        # the handshake presents the oldest unacknowledged result
        assert regs[m.READY] == 1 and regs[m.PRESENTED_VERDICT] == 1 and regs[m.PENDING] == 2
        assert c.convert_from_registers(regs[m.PRESENTED_SEQUENCE:m.PRESENTED_SEQUENCE + 2], U32,
                                        word_order="little") == 70000
        assert text(c, m.PRESENTED_PART_ID) == "P-70000"
        # input registers (FC4) read the same map; discrete inputs (FC2) the same bits as the coils
        ir = c.read_input_registers(1, count=69, device_id=1)
        assert not ir.isError() and ir.registers == hr(c, 1, 69)
        di = c.read_discrete_inputs(0, count=2, device_id=1)
        assert not di.isError() and di.bits[:2] == coils(c)[:2]
        # the heartbeat counts (every 0.1 s here) and coil 2 follows its lowest bit
        beat = hr(c, m.HEARTBEAT)[0]
        time.sleep(0.5)
        assert 2 <= (hr(c, m.HEARTBEAT)[0] - beat) % 65536 <= 20
        assert until(lambda: coils(c)[m.COIL_HEARTBEAT]) and until(lambda: not coils(c)[m.COIL_HEARTBEAT])
        assert coils(c)[m.COIL_READY] and coils(c)[m.COIL_LINK]
        assert c.read_device_information(device_id=1).information[0] == b"bigan-inspect"   # FC 43/14


@pytest.mark.parametrize("served", [("--acked", "65529")], indirect=True)
def test_handshake_presents_every_result_exactly_once(served: Served) -> None:
    # 65528..65580 published at 200/s while the PLC follows the handshake; 65529 was acknowledged before
    # (the store's), so 65530.. are presented, across the 16-bit boundary of the sequence's low word
    served.send("burst", first=65528, count=53, rate=200)
    got: list[int] = []
    with served.client() as c:
        deadline = time.monotonic() + 60
        while len(got) < 51 and time.monotonic() < deadline:
            block = hr(c, m.READY, 10)
            if not block[0]:
                time.sleep(0.001)
                continue
            seq = c.convert_from_registers(block[2:4], U32, word_order="little")
            assert text(c, m.PRESENTED_PART_ID) == f"P-{seq}"
            assert block[1] == seq % 3 + 1        # the harness' verdicts: pass, fail, error by seq % 3
            got.append(seq)
            lo, hi = seq & 0xFFFF, seq >> 16
            if len(got) % 2:
                assert not c.write_registers(m.ACK, [lo, hi], device_id=1).isError()    # FC16, both words
            else:
                assert not c.write_register(m.ACK + 1, hi, device_id=1).isError()       # FC6: high, then low
                assert not c.write_register(m.ACK, lo, device_id=1).isError()
        assert got == list(range(65530, 65581))
        assert hr(c, m.READY)[0] == 0 and hr(c, m.PENDING)[0] == 0 and u32(c, m.ACKED) == 65580
        assert u32(c, m.PRESENTED_SEQUENCE) == 0 and text(c, m.PRESENTED_PART_ID) == ""
        # a stale or wrong ack is refused and changes nothing; 0 and a repeat of the last are accepted
        wrong = c.write_registers(m.ACK, [12, 0], device_id=1)
        assert wrong.isError() and wrong.exception_code == 3
        assert hr(c, m.ACK, 2) == [65580 & 0xFFFF, 1]
        assert not c.write_registers(m.ACK, [0, 0], device_id=1).isError()
        assert not c.write_registers(m.ACK, [65580 & 0xFFFF, 1], device_id=1).isError()
        assert u32(c, m.ACKED) == 65580
    persisted = [msg["persist"] for msg in served.drain() if "persist" in msg]
    assert persisted == [["modbus", s] for s in range(65530, 65581)]


@pytest.fixture
def station_pull() -> Iterator[tuple[str, zmq.Socket]]:
    """The station's external-trigger PULL socket, stood in for by the test."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield f"tcp://127.0.0.1:{port}", pull
    finally:
        ctx.destroy(linger=0)


def received(pull: zmq.Socket, timeout_ms: int = 5000) -> dict | None:
    return json.loads(pull.recv()) if pull.poll(timeout_ms) else None


def test_trigger_coil_reaches_the_station(station_pull: tuple[str, zmq.Socket]) -> None:
    endpoint, pull = station_pull
    served = Served("--trigger", endpoint)
    try:
        with served.client() as c:
            assert not c.write_registers(m.TRIGGER_PART_ID, part_id_regs("LOT7-000123"), device_id=1).isError()
            rr = c.write_coil(m.COIL_TRIGGER, True, device_id=1)
            assert not rr.isError() and rr.bits[0]           # the write's echo, as Modbus specifies
            assert received(pull) == {"part_id": "LOT7-000123"}
            assert not coils(c)[m.COIL_TRIGGER]              # reset once forwarded
            assert hr(c, m.TRIGGER_PART_ID, m.TEXT_REGS) == [0] * m.TEXT_REGS   # the id is consumed
            assert hr(c, m.TRIGGER_COUNT, 2) == [1, m.OUTCOME_FORWARDED]
            # FC15 on the trigger coil alone works too; 64 characters, the most the registers hold
            long_id = "X" * 60 + "-064"
            c.write_registers(m.TRIGGER_PART_ID, part_id_regs(long_id), device_id=1)
            assert not c.write_coils(m.COIL_TRIGGER, [True], device_id=1).isError()
            assert received(pull) == {"part_id": long_id}
            assert not c.write_coil(m.COIL_TRIGGER, False, device_id=1).isError()   # 0: nothing happens
            # no part id: refused (exception 03), nothing sent
            rr = c.write_coil(m.COIL_TRIGGER, True, device_id=1)
            assert rr.isError() and rr.exception_code == 3
            assert hr(c, m.TRIGGER_COUNT, 2) == [2, m.OUTCOME_REFUSED]
            # a part id that is not printable ASCII is refused where it is written
            bad = c.write_registers(m.TRIGGER_PART_ID, [0x4180], device_id=1)
            assert bad.isError() and bad.exception_code == 3 and hr(c, m.TRIGGER_PART_ID)[0] == 0
            assert received(pull, 300) is None
    finally:
        served.close()


def test_trigger_coil_without_a_station_answers_04() -> None:
    served = Served("--trigger", f"tcp://127.0.0.1:{free_port()}")      # nothing listens there
    try:
        with served.client() as c:
            c.write_registers(m.TRIGGER_PART_ID, part_id_regs("LOT7-9"), device_id=1)
            t0 = time.monotonic()
            rr = c.write_coil(m.COIL_TRIGGER, True, device_id=1)
            assert rr.isError() and rr.exception_code == 4 and time.monotonic() - t0 < 4.0
            assert hr(c, m.TRIGGER_COUNT, 2) == [0, m.OUTCOME_FAILED] and not coils(c)[m.COIL_TRIGGER]
            assert text(c, m.TRIGGER_PART_ID) == "LOT7-9"        # kept: the PLC may retry
    finally:
        served.close()


def pulse(c: ModbusTcpClient, timeout: float) -> tuple[float, float] | None:
    """(seconds until coil 0 came on, how long it stayed on), None when it never came on."""
    start = time.monotonic()
    on = None
    while time.monotonic() - start < timeout:
        bit = coils(c)[m.COIL_REJECT]
        now = time.monotonic()
        if bit and on is None:
            on = now
        if not bit and on is not None:
            return on - start, now - on
        time.sleep(0.002)
    return None if on is None else (on - start, math.inf)


@pytest.mark.parametrize("served", [("--pulse-ms", "300")], indirect=True)
def test_reject_pulse(served: Served) -> None:
    with served.client() as c:
        for seq, verdict in ((1, "fail"), (2, "error")):
            served.result(seq, verdict)
            seen = pulse(c, 3.0)
            assert seen is not None, verdict
            came_on, lasted = seen
            assert came_on < 1.0 and 0.2 <= lasted <= 0.3 + 0.5, (verdict, seen)   # 300 ms + margin
            assert hr(c, m.REJECT)[0] == 0
        served.result(3, "pass")
        assert pulse(c, 0.6) is None
        served.result(4, "fail", published_at=time.time() - 60)    # a backlog after a restart: no pulse
        assert pulse(c, 0.6) is None


def mbap(tid: int, pdu: bytes, unit: int = 1, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1 if length is None else length, unit) + pdu


def raw(port: int, data: bytes, wait: float = 1.0) -> bytes | None:
    """Send bytes over a bare socket; the answer, b"" when the server closed, None when it said nothing."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        try:
            return s.recv(1024)
        except TimeoutError:
            return None


def test_bad_input_gets_an_exception_and_changes_nothing(served: Served) -> None:
    served.result(5, "pass")
    with served.client() as c:
        until(lambda: u32(c, m.LAST_SEQUENCE) == 5)
        before = hr(c, 1, 69)
        for rr in (c.write_register(m.STATE, 9, device_id=1),
                   c.write_registers(m.HEARTBEAT, [1, 2, 3, 4], device_id=1),
                   c.write_registers(m.PRESENTED_SEQUENCE, [5, 0, 5, 0], device_id=1),   # read-only + ResultAck
                   c.write_registers(m.TRIGGER_COUNT, [7], device_id=1),
                   c.write_coil(m.COIL_REJECT, True, device_id=1),
                   c.write_coils(m.COIL_REJECT, [True] * 11, device_id=1),
                   c.read_holding_registers(70, count=1, device_id=1),
                   c.read_holding_registers(60, count=20, device_id=1),                  # runs into a hole
                   c.read_holding_registers(65000, count=1, device_id=1),
                   c.read_coils(16, count=1, device_id=1)):
            assert rr.isError() and rr.exception_code == 2, rr
        assert hr(c, 1, 69) == before and hr(c, m.ACK, 2) == [0, 0] and not coils(c)[m.COIL_REJECT]
        rr = c.write_coil(m.COIL_TRIGGER, True, device_id=1)     # no trigger endpoint: coil 10 is read-only
        assert rr.isError() and rr.exception_code == 2
        rr = c.read_holding_registers(0, count=1, device_id=7)     # another unit id
        assert rr.isError() and rr.exception_code == 0x0B
    port = served.port
    assert raw(port, b"\xde\xad\xbe\xef" * 64) in (None, b"")       # garbage: ignored or dropped
    assert raw(port, mbap(1, bytes([3, 0, 0, 0, 2]))[:5]) in (None, b"")   # truncated MBAP header
    assert raw(port, mbap(2, b"", length=0)) in (None, b"")          # length 0
    assert raw(port, mbap(3, bytes([3, 0, 0, 0, 2]), length=65535)) in (None, b"")
    answer = raw(port, mbap(4, bytes([0x41, 0, 0])))                 # unknown function code
    assert answer is not None and answer[7] & 0x80 and answer[8] == 1  # exception 01 (pymodbus sends fc 0x80)
    answer = raw(port, mbap(5, bytes([3, 0, 0, 0, 200])))            # count over 125
    assert answer is not None and answer[7] & 0x80                    # an exception (pymodbus: 01, fc 0x80)
    answer = raw(port, mbap(6, bytes([16, 0, 24, 0, 2, 9, 0, 1, 0, 0])))   # byte count not 2 x count
    assert answer is not None and answer[7] == 0x90 and answer[8] == 3
    with socket.create_connection(("127.0.0.1", port)) as half:       # a client that stops mid-frame
        half.sendall(mbap(7, bytes([16, 0, 100, 0, 4, 8, 0x41]))[:10])
        with served.client() as c:                                    # ... does not stall the others
            assert u32(c, m.LAST_SEQUENCE) == 5 and hr(c, m.TRIGGER_PART_ID)[0] == 0
    assert served.proc.poll() is None
    served.result(6, "pass")
    with served.client() as c:
        until(lambda: u32(c, m.LAST_SEQUENCE) == 6)


@pytest.mark.parametrize("served", [("--unit", "0")], indirect=True)
def test_unit_id_0_answers_every_unit_id(served: Served) -> None:
    with served.client() as c:
        for unit in (0, 1, 17, 255):
            rr = c.read_holding_registers(m.STATE, count=1, device_id=unit)
            assert not rr.isError() and rr.registers == [0]
    assert "unit id any" in served.ready


def test_cancel_closes_the_port_and_a_taken_port_raises() -> None:
    import asyncio

    from inspector.gateway.config import ModbusConfig
    from inspector.gateway.hub import Hub
    from inspector.gateway.modbus_server import serve_modbus

    async def scenario() -> None:
        port = free_port()
        cfg = ModbusConfig(bind=f"127.0.0.1:{port}")
        lines: list[str] = []
        task = asyncio.create_task(serve_modbus(Hub(), cfg, None, lines.append))
        while not lines:
            await asyncio.sleep(0.01)
        assert lines == [f"modbus: 127.0.0.1:{port} (unit id 1)"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(RuntimeError):         # the same port again: an error, not a silent hang
            await asyncio.wait_for(serve_modbus(Hub(), cfg, None, lines.append), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(reader.read(), 5) == b""       # the client's connection is closed
        writer.close()
        lines.clear()                             # and a restarted server binds the port again
        again = asyncio.create_task(serve_modbus(Hub(), cfg, None, lines.append))
        while not lines:
            await asyncio.sleep(0.01)
        again.cancel()
        with pytest.raises(asyncio.CancelledError):
            await again

    asyncio.run(scenario())
