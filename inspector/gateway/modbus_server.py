"""The gateway's Modbus TCP server (pymodbus): the register map of modbus_map.py, kept up to date from the
hub's events, the ResultReady/ResultAck handshake, the reject pulse and the external-trigger coil.

pymodbus 3.16 serves a `SimDevice` (its datastore since 3.13; `ModbusServerContext` and the data-block
classes are deprecated wrappers around it). The device's `action` coroutine is called on every access,
before the simulator touches its own registers, with the live register list and, for a write, the values
to be written; it may rewrite the registers and may refuse the request with an `ExcCodes` (docstring of
`pymodbus.simulator.SimDevice.action` in the installed package). This server keeps its own image
(`Station.hr`, `Station.coils`): an action copies the image into the registers on a read, and checks and
applies a write to the image (answering exception 02 for a read-only address, 03 for a bad value), so
the image is the one truth and a refused write changes nothing. Everything runs on the gateway's one
asyncio loop, so a single read request always sees one consistent state.

Modbus has no authentication: bind to localhost or a closed cell network (docs/plant.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from pymodbus.constants import ExcCodes
from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from . import modbus_map as m
from .config import ModbusConfig, split_host_port
from .hub import Event, Handshake, Hub

log = logging.getLogger(__name__)

TRIGGER_TIMEOUT_S = 2.0   # a trigger not handed to the station by then is answered exception 04
STALE_S = 5.0             # a failed result published longer ago than this (a backlog after a restart) does not pulse
BIT_CODES = (1, 2, 5, 15)  # function codes on coils / discrete inputs


class Trigger(Protocol):
    async def inspect(self, part_id: str) -> None:
        """Forward an external trigger (gateway/trigger.py's TriggerForwarder): ValueError for a part id it
        refuses ("" included), another exception when the station cannot be reached."""
        ...


def _blocks() -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
    """(coils, discrete inputs, holding registers, input registers); addresses outside are invalid."""
    def registers() -> list[SimData]:
        return [SimData(a, count=e - a, datatype=DataType.REGISTERS) for a, e in m.RANGES]

    def bits() -> list[SimData]:
        return [SimData(0, count=m.COILS, values=False, datatype=DataType.BITS)]

    return bits(), bits(), registers(), registers()


class Station:
    """The register image one Modbus server serves, and what the PLC's writes do to it."""

    def __init__(self, hub: Hub, hs: Handshake, cfg: ModbusConfig, trigger: Trigger | None) -> None:
        self.hub, self.hs, self.cfg, self.trigger = hub, hs, cfg, trigger
        self.hr = [0] * m.SIZE
        self.coils = [0] * m.COILS
        self._pulse: asyncio.TimerHandle | None = None
        self.refresh()

    # -- state -> image

    def refresh(self) -> None:
        m.fill(self.hr, self.hub, self.hs)
        self.coils[m.COIL_READY] = self.hr[m.READY]
        self.coils[m.COIL_LINK] = self.hr[m.LINK]

    def beat(self) -> None:
        self.hr[m.HEARTBEAT] = (self.hr[m.HEARTBEAT] + 1) & 0xFFFF
        self.coils[m.COIL_HEARTBEAT] = self.hr[m.HEARTBEAT] & 1

    def on_event(self, event: Event) -> None:
        r = event.result
        if event.kind == "result" and r is not None and r.verdict != "pass" and (
                not r.published_at or time.time() - r.published_at <= STALE_S):
            self.reject()

    def reject(self) -> None:
        """Coil 0 on for reject_pulse_ms from now (a pulse already on is extended)."""
        self.coils[m.COIL_REJECT] = self.hr[m.REJECT] = 1
        if self._pulse is not None:
            self._pulse.cancel()
        self._pulse = asyncio.get_running_loop().call_later(self.cfg.reject_pulse_ms / 1000, self._reject_off)

    def _reject_off(self) -> None:
        self.coils[m.COIL_REJECT] = self.hr[m.REJECT] = 0
        self._pulse = None

    def close(self) -> None:
        if self._pulse is not None:
            self._pulse.cancel()

    # -- the pymodbus action (SimDevice.action)

    async def action(self, function_code: int, start_address: int, address: int, count: int,
                     registers: list[int], values: list[int] | list[bool] | None) -> ExcCodes | None:
        try:
            if function_code in BIT_CODES:
                if values is None:
                    registers[: m.COILS // 16] = m.pack_bits(self.coils)
                    return None
                return await self.write_coils(address, [int(bool(v)) for v in values])
            if values is None:
                registers[address - start_address: address - start_address + count] = self.hr[address:address + count]
                return None
            return self.write_registers(address, [int(v) for v in values])
        except Exception:     # a bug here must answer an exception, never take the server down
            log.exception("modbus: request fc=%d address=%d failed", function_code, address)
            return ExcCodes.DEVICE_FAILURE

    def write_registers(self, address: int, values: Sequence[int]) -> ExcCodes | None:
        new = dict(zip(range(address, address + len(values)), values, strict=True))
        if not new.keys() <= m.WRITABLE:
            return ExcCodes.ILLEGAL_ADDRESS
        if any(m.TRIGGER_PART_ID <= a < m.TRIGGER_PART_ID + m.TEXT_REGS and not m.printable_word(v)
               for a, v in new.items()):
            return ExcCodes.ILLEGAL_VALUE
        if m.ACK in new:
            value = new[m.ACK] | new.get(m.ACK + 1, self.hr[m.ACK + 1]) << 16
            if not self.ack(value):
                return ExcCodes.ILLEGAL_VALUE
        for a, v in new.items():
            self.hr[a] = v
        return None

    def ack(self, value: int) -> bool:
        """The PLC wrote `value` (low 32 bits of a sequence) to ResultAck: acknowledge the presented result
        when it matches; 0 and a repeat of the last acknowledged one are accepted and change nothing."""
        cur = self.hs.current
        if cur is not None and value == cur.sequence & m.U32:
            self.hub.ack(self.hs.channel, cur.sequence)
            m.fill_handshake(self.hr, self.hs)     # the next result is presented before the answer is sent
            self.coils[m.COIL_READY] = self.hr[m.READY]
            return True
        return value == 0 or value == self.hs.acked & m.U32

    async def write_coils(self, address: int, bits: Sequence[int]) -> ExcCodes | None:
        if not set(range(address, address + len(bits))) <= m.WRITABLE_COILS or self.trigger is None:
            return ExcCodes.ILLEGAL_ADDRESS
        if not bits[0]:
            return None
        regs = slice(m.TRIGGER_PART_ID, m.TRIGGER_PART_ID + m.TEXT_REGS)
        saved = self.hr[regs]
        part_id = m.read_text(saved)
        if part_id is None:
            self.hr[m.TRIGGER_OUTCOME] = m.OUTCOME_REFUSED
            return ExcCodes.ILLEGAL_VALUE
        self.hr[regs] = [0] * m.TEXT_REGS          # consumed: the next trigger starts from an empty id
        try:
            await asyncio.wait_for(self.trigger.inspect(part_id), TRIGGER_TIMEOUT_S)
        except ValueError as exc:
            log.warning("modbus: trigger with part id %r refused: %s", part_id, exc)
            outcome, code = m.OUTCOME_REFUSED, ExcCodes.ILLEGAL_VALUE
        except Exception as exc:
            log.warning("modbus: trigger with part id %r not forwarded: %r", part_id, exc)
            outcome, code = m.OUTCOME_FAILED, ExcCodes.DEVICE_FAILURE
        else:
            self.hr[m.TRIGGER_COUNT] = (self.hr[m.TRIGGER_COUNT] + 1) & 0xFFFF
            self.hr[m.TRIGGER_OUTCOME] = m.OUTCOME_FORWARDED
            # Coil 10 reads 1 for this request's echo (FC5 answers with the coil's value), then 0: the
            # reset is queued on the loop, which runs it after this request's answer has been built.
            self.coils[m.COIL_TRIGGER] = 1
            asyncio.get_running_loop().call_soon(self._trigger_done)
            return None
        self.hr[m.TRIGGER_OUTCOME] = outcome
        if not any(self.hr[regs]):
            self.hr[regs] = saved                  # not sent: the PLC may retry with the same id
        return code

    def _trigger_done(self) -> None:
        self.coils[m.COIL_TRIGGER] = 0


async def _refuse(function_code: int, start_address: int, address: int, count: int,
                  registers: list[int], values: list[int] | list[bool] | None) -> ExcCodes | None:
    return ExcCodes.GATEWAY_NO_RESPONSE


def devices(station: Station, unit_id: int) -> list[SimDevice]:
    """The station at `unit_id` (0 = answer every unit id), plus a catch-all that answers every other unit
    id with exception 0x0B (gateway target failed to respond)."""
    out = [SimDevice(unit_id, simdata=_blocks(), action=station.action)]
    if unit_id != 0:
        out.append(SimDevice(0, simdata=_blocks(), action=_refuse))
    return out


async def serve_modbus(hub: Hub, cfg: ModbusConfig, trigger: Trigger | None, ready: Callable[[str], None], *,
                       acked: int = 0, persist: Callable[[str, int], None] = lambda c, s: None) -> None:
    """Serve the hub over Modbus TCP at cfg.bind until cancelled; `ready(line)` once listening.

    `acked`/`persist`: the handshake's last acknowledged sequence and how to store a new one (the
    gateway's store); `trigger` None makes the trigger coil read-only."""
    host, port = split_host_port(cfg.bind, "gateway.modbus.bind")
    host = host.strip("[]")
    station = Station(hub, hub.handshake("modbus", acked, persist), cfg, trigger)
    events = hub.listen()
    identity = ModbusDeviceIdentification(info_name={"VendorName": "bigan-inspect",
                                                     "ProductCode": "inspector-gateway",
                                                     "ProductName": "inspector gateway"})
    server = ModbusTcpServer(devices(station, cfg.unit_id), address=(host, port), identity=identity)
    beat: asyncio.Task[None] | None = None
    try:
        await server.serve_forever(background=True)     # raises RuntimeError when it cannot bind
        sockets = getattr(server.transport, "sockets", None) or ()
        bound = sockets[0].getsockname()[1] if sockets else port
        beat = asyncio.create_task(_heartbeat(station, cfg.heartbeat_s))
        ready(f"modbus: {cfg.bind.rpartition(':')[0]}:{bound} (unit id {cfg.unit_id or 'any'})")
        while True:
            event = await events.get()
            station.on_event(event)
            while not events.empty():          # a burst: one refresh after all of it
                station.on_event(events.get_nowait())
            station.refresh()
    finally:
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        station.close()
        await server.shutdown()


async def _heartbeat(station: Station, period_s: float) -> None:
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        next_at = max(next_at + period_s, loop.time())   # after a stall: one beat, not a burst of them
        await asyncio.sleep(next_at - loop.time())
        station.beat()
