"""A process serving a Hub over Modbus for tests/test_gateway_modbus.py: the test drives the hub with JSON
lines on stdin and reads what happened as JSON lines on stdout.

    python tests/gateway_modbus_harness.py --port P [--pulse-ms N] [--heartbeat S] [--acked N] [--unit U]
                                           [--trigger ENDPOINT]

stdin:  {"op": "result", "header": {...}}            hub.on_result(PartResult.from_message(header))
        {"op": "status", "header": {...}}            hub.on_status(header)
        {"op": "burst", "first": N, "count": K, "rate": R}   K results N.. at R per second (verdict by seq % 3)
stdout: {"ready": line} once serving; {"persist": [channel, seq]} per acknowledgement; {"done": op} after
        each op. EOF on stdin stops the server.

--trigger: the gateway's real TriggerForwarder PUSHes triggers to ENDPOINT (the test's stand-in for the
station's PULL socket); without it the server has no trigger (the coil is read-only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time

from inspector.gateway.config import ModbusConfig
from inspector.gateway.hub import Hub, PartResult
from inspector.gateway.modbus_server import serve_modbus
from inspector.gateway.trigger import TriggerForwarder


def emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def header(seq: int, verdict: str = "pass") -> dict:
    return {"sequence": seq, "part_id": f"P-{seq}", "verdict": verdict, "published_at": time.time(),
            "latency_ms": 10.0, "rois": [{"name": "center", "score": 0.1 if verdict == "pass" else 0.9,
                                          "threshold": 0.5, "verdict": verdict}]}


async def burst(hub: Hub, first: int, count: int, rate: float) -> None:
    start = time.monotonic()
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        seq = first + i
        hub.on_result(PartResult.from_message(header(seq, ("pass", "fail", "error")[seq % 3])))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pulse-ms", type=int, default=300)
    ap.add_argument("--heartbeat", type=float, default=0.1)
    ap.add_argument("--acked", type=int, default=0)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--trigger", default="")
    args = ap.parse_args()
    hub = Hub()
    cfg = ModbusConfig(bind=f"127.0.0.1:{args.port}", reject_pulse_ms=args.pulse_ms, heartbeat_s=args.heartbeat,
                       unit_id=args.unit)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    trigger = TriggerForwarder(args.trigger) if args.trigger else None
    server = asyncio.create_task(serve_modbus(hub, cfg, trigger, lambda line: emit({"ready": line}),
                                              acked=args.acked, persist=lambda c, s: emit({"persist": [c, s]})))
    threading.Thread(target=read_stdin, daemon=True).start()
    tasks = set()
    while (line := await lines.get()) is not None:
        cmd = json.loads(line)
        if cmd["op"] == "result":
            hub.on_result(PartResult.from_message(cmd["header"]))
        elif cmd["op"] == "status":
            hub.on_status(cmd["header"])
        elif cmd["op"] == "burst":
            task = asyncio.create_task(burst(hub, cmd["first"], cmd["count"], cmd["rate"]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        emit({"done": cmd["op"]})
        if server.done():
            break
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server
    if trigger is not None:
        trigger.close()


if __name__ == "__main__":
    asyncio.run(main())
