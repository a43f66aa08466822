#!/usr/bin/env python3
"""Publish -> OPC UA value latency of the gateway's OPC UA server (inspector/gateway/opcua_server.py).

A server process runs serve_opcua() on a Hub it feeds itself at --rate results/s (a status every second,
as a station sends); each result's `published_at` is stamped just before hub.on_result(). Two latencies:

- server: published_at -> the Write that puts the result into Objects/Station/LastResult returned
  (the value any client reads from then on), measured in the server process;
- client: published_at -> a data-change notification of LastResult/Sequence arriving in a client
  subscription (publishing interval --interval-ms, 0 = as soon as it changes) in THIS process.

A result that arrives while the server is still busy is folded into the next write (LastResult shows the
newest; the handshake still presents every one): those sequences are counted as `coalesced`.

Prints a p50/p99 table and writes JSON (default docs/research/bench/gateway/opcua.json).
Run: OMP_NUM_THREADS=1 python scripts/bench_gateway_opcua.py [--rate 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WARMUP = 50


def header(seq: int) -> dict[str, Any]:
    now = time.time()
    verdict = "fail" if seq % 10 == 0 else "pass"
    return {"schema_version": 1, "type": "result", "sequence": seq, "station_id": "bench", "run_id": "00000000",
            "part_id": f"bench-{seq}", "frame": seq, "trigger": "continuous", "captured_at": now - 0.015,
            "published_at": now, "latency_ms": 15.0, "verdict": verdict, "error": None, "model_id": "bench",
            "rois": [{"name": f"r{i}", "x": 0, "y": 0, "width": 64, "height": 64, "score": 0.1 * i,
                      "threshold": 0.25, "verdict": "pass"} for i in range(4)], "images": []}


def serve(port: int, rate: float, count: int) -> None:
    """The server process: waits for a line on stdin, feeds `count` results at `rate`, prints JSON."""
    from inspector.gateway import opcua_nodes
    from inspector.gateway.config import OpcUaConfig
    from inspector.gateway.hub import Hub, PartResult
    from inspector.gateway.opcua_server import serve_opcua

    published: dict[int, float] = {}
    updated: dict[int, float] = {}
    write = opcua_nodes.NodeWriter.write

    async def timed_write(self: Any, groups: Any, force: bool = False) -> int:
        n = await write(self, groups, force)
        now = time.time()
        if hub.last_result is not None and hub.last_result.sequence not in updated:
            updated[hub.last_result.sequence] = now
        return n

    opcua_nodes.NodeWriter.write = timed_write  # type: ignore[method-assign]

    class NoTrigger:
        async def inspect(self, part_id: str) -> None: ...

    hub = Hub()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        task = asyncio.create_task(serve_opcua(hub, OpcUaConfig(endpoint=f"opc.tcp://127.0.0.1:{port}/inspector"),
                                               NoTrigger(), lambda line: ready.set(), "bench"))
        await ready.wait()
        print("READY", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        cpu0, t0 = time.process_time(), time.monotonic()
        for i in range(count):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            seq = i + 1
            if seq % max(1, int(rate)) == 1:
                hub.on_status({"type": "status", "model_id": "bench", "camera": {"state": "open"},
                               "frames_dropped": {"queue_full": 0}})
            h = header(seq)
            published[seq] = h["published_at"]
            hub.on_result(PartResult.from_message(h))
        await asyncio.sleep(0.5)
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        print("RESULT " + json.dumps({"published": published, "updated": updated, "cpu_s": cpu, "wall_s": wall}),
              flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 3) if s else float("nan")

    return {"n": len(s), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": round(s[-1], 3) if s else 0.0}


async def client(port: int, interval_ms: float, proc: subprocess.Popen[str]) -> tuple[dict[int, float], dict]:
    from asyncua import Client

    received: dict[int, float] = {}

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            received.setdefault(int(val), time.time())

    assert proc.stdin is not None and proc.stdout is not None
    async with Client(f"opc.tcp://127.0.0.1:{port}/inspector") as c:
        idx = await c.get_namespace_index("urn:bigan-inspect:station")
        node = await c.nodes.objects.get_child([f"{idx}:Station", f"{idx}:LastResult", f"{idx}:Sequence"])
        sub = await c.create_subscription(interval_ms, Handler())
        await sub.subscribe_data_change(node, sampling_interval=0, queuesize=0)
        await asyncio.sleep(0.5)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, proc.stdout.readline)
            if not line:
                raise SystemExit("the server process ended without a result")
            if line.startswith("RESULT "):
                server = json.loads(line[len("RESULT "):])
                break
        await asyncio.sleep(0.2)
        await sub.delete()
    return received, server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100.0, help="results per second (default 100)")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long to feed (default 30)")
    ap.add_argument("--interval-ms", type=float, default=0.0,
                    help="the client subscription's publishing interval (default 0: publish on change)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/research/bench/gateway/opcua.json")
    ap.add_argument("--serve", nargs=3, metavar=("PORT", "RATE", "COUNT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(int(args.serve[0]), float(args.serve[1]), int(args.serve[2]))
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    count = int(args.rate * args.seconds)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(args.rate), str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise SystemExit("the server process did not start")
        received, server = asyncio.run(client(port, args.interval_ms, proc))
    finally:
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.close()
        proc.wait(20)
    published = {int(k): v for k, v in server["published"].items()}
    updated = {int(k): v for k, v in server["updated"].items()}
    measured = [s for s in published if s > WARMUP]
    server_ms = [(updated[s] - published[s]) * 1000 for s in measured if s in updated]
    client_ms = [(received[s] - published[s]) * 1000 for s in measured if s in received]
    out = {
        "what": "publish (hub.on_result) -> OPC UA LastResult/Sequence: in the server's address space, and as a "
                "data change in a client subscription in another process",
        "rate_per_s": args.rate, "results": count, "warmup_skipped": WARMUP,
        "publishing_interval_ms": args.interval_ms,
        "server_update_ms": stats(server_ms), "client_notification_ms": stats(client_ms),
        "not_seen_by_client": len([s for s in measured if s not in received]),
        "coalesced": len([s for s in measured if s not in updated]),
        "server_cpu_percent_of_one_core": round(100 * server["cpu_s"] / server["wall_s"], 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "asyncua": __import__("asyncua").__version__ if hasattr(__import__("asyncua"), "__version__") else "",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    print(f"OPC UA at {args.rate:g} results/s, {count} results ({WARMUP} warm-up skipped), "
          f"publishing interval {args.interval_ms:g} ms")
    print(f"{'latency (ms)':<34}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for name, key in (("publish -> value in address space", "server_update_ms"),
                      ("publish -> client notification", "client_notification_ms")):
        s = out[key]
        print(f"{name:<34}{s['n']:>6}{s['p50']:>9.3f}{s['p90']:>9.3f}{s['p99']:>9.3f}{s['max']:>9.3f}")
    print(f"server process CPU: {out['server_cpu_percent_of_one_core']} % of one core; "
          f"sequences the client did not see: {out['not_seen_by_client']} (of which never shown: "
          f"{out['coalesced']}, a newer result arrived before the write)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
