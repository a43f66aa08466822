#!/usr/bin/env python3
"""End to end: a real station -> `inspector gateway` -> real OPC UA and Modbus clients, every part a process.

Part 1, latency. A station (`inspector replay VIDEO --model M.onnx --realtime --publish EP --backfill BF
--state DIR`, continuous trigger: every frame is a part, the video paced at --rate frames/s) publishes
about --rate results/s. `inspector gateway` (OPC UA + Modbus on, web page and MQTT off) subscribes to it. In
two more processes: an asyncua client subscribed to Objects/Station/LastResult/Sequence (publishing
interval --opcua-interval-ms, 0 = notify on change) and a pymodbus client reading holding registers 4-5
(newest sequence) every --modbus-poll-ms. For every result: its header's `published_at` (stamped by the
station, read back from its journal) -> the first moment the client saw that sequence or a newer one
(time.time() in every process: one machine, one clock). The Modbus figure includes the polling interval
(a result waits up to one interval for the next read); the OPC UA figure includes the subscription's
publishing interval (0 here). The first --warmup results are skipped.

Part 2, the gateway's cost to the station. `inspector replay` at full speed (no --realtime, --frames
frames of the same video), alternately without a gateway and with one attached (OPC UA + Modbus on, no
clients), --runs times each, fresh journal and gateway state every run; the station's own parts/s
(its summary), median of the runs.

Prints a table; writes JSON (--out) and a short markdown note (--md) with the command and the machine's
load average sampled during the run (this bench does not control what else runs on the machine).

    OMP_NUM_THREADS=1 python scripts/bench_gateway.py

By default the station runs a tiny real ONNX model (score = mean pixel, tests/test_inspector_support.py)
on a synthetic conveyor video (64x192 px, one 64 px ROI, every part with its 3 PNGs): the pipeline, the
journal, the images and the sockets are real, the inference is nearly free, so the gateway's share of the
CPU is as large as it gets. --model/--video (and --roi) run another model or video.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import platform
import resource
import shlex
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "urn:bigan-inspect:station"


# --- helpers ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats(values: list[float]) -> dict[str, float | int | None]:
    s = sorted(values)

    def q(p: float) -> float | None:
        return round(s[min(len(s) - 1, int(p * len(s)))], 3) if s else None

    return {"n": len(s), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": round(s[-1], 3) if s else None}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a running process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LoadSampler:
    """The 1-minute load average every second while the bench runs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((round(time.monotonic() - t0, 1), os.getloadavg()[0]))
            self._stop.wait(1.0)

    def summary(self, since: float = 0.0) -> dict[str, float]:
        values = [v for t, v in self.samples if t >= since] or [v for _, v in self.samples]
        return {"min": round(min(values), 2), "mean": round(statistics.fmean(values), 2),
                "max": round(max(values), 2)}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def busy_processes() -> list[str]:
    """What else used the CPU when the bench started: `ps`'s top five by %CPU (its lifetime average),
    command name and first arguments, this bench left out."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out:
        pid, pcpu, *argv = line.split()
        if int(pid) == os.getpid() or float(pcpu) < 1.0 or not argv:
            continue
        rows.append(f"{pcpu}% {' '.join(Path(w).name for w in argv[:4])}")
    return rows[:5]


# --- the line: model, video, configuration ------------------------------------------------------------
def make_line(work: Path, args: argparse.Namespace) -> tuple[Path, Path, Path, Path]:
    """(model, video, latency config, throughput config)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_inspector_support import make_mean_model, write_conveyor_video

    if args.video is None:
        truth = write_conveyor_video(work / "line.avi", n_parts=12, size=64, fps=args.rate)
        video, roi = truth.video, (64, 0, 64, 64)
    else:
        video, roi = args.video, tuple(int(v) for v in args.roi.split(","))
    model = args.model or make_mean_model(work / "model.onnx", size=64)
    base = (f'station_id = "bench-e2e"\n\n[camera]\nsource = "{video}"\nfps = {args.rate}\n\n'
            f'[[rois]]\nname = "center"\nx = {roi[0]}\ny = {roi[1]}\nwidth = {roi[2]}\nheight = {roi[3]}\n\n'
            '[trigger]\nmode = "continuous"\n\n[logging]\nlevel = "warning"\n')
    latency_cfg = work / "latency.toml"
    latency_cfg.write_text(base)       # replay waits (<= 5 s) for one subscriber: the gateway
    throughput_cfg = work / "throughput.toml"
    throughput_cfg.write_text(base + "\n[publish]\nwait_subscribers_s = 0.0\n")   # no wait, with or without
    return model, video, latency_cfg, throughput_cfg


# --- processes ----------------------------------------------------------------------------------------
class Gateway:
    def __init__(self, connect: str, backfill: str, state: Path, config: Path) -> None:
        self.opcua_port, self.modbus_port = free_port(), free_port()
        self.opcua = f"opc.tcp://127.0.0.1:{self.opcua_port}/inspector"
        self.cmd = [sys.executable, "-m", "inspector", "gateway", "--config", str(config), "--connect", connect,
                    "--backfill", backfill, "--trigger", "", "--opcua", self.opcua,
                    "--modbus", f"127.0.0.1:{self.modbus_port}", "--http", "", "--mqtt", "", "--state", str(state)]
        self.db = state / "gateway.db"
        self.err = open(state.parent / f"{state.name}.stderr", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=self.err,
                                     text=True)
        assert self.proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while len(lines) < 3 and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
        if len(lines) < 3:
            self.stop()
            raise SystemExit(f"the gateway did not start: {lines}; see {self.err.name}")
        self.lines = lines

    def parts(self) -> int:
        """Results the gateway has taken in (its store's counters)."""
        try:
            conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
            try:
                return int(dict(conn.execute("SELECT key, value FROM meta")).get("parts", 0))
            finally:
                conn.close()
        except sqlite3.Error:
            return 0

    def wait_for(self, parts: int, timeout_s: float) -> float | None:
        """Seconds until the gateway has taken in `parts` results (None: not within timeout_s)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.parts() >= parts:
                return round(time.monotonic() - t0, 3)
            time.sleep(0.05)
        return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.err.close()
        return self.proc.returncode


def start_client(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT, env=env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        proc.kill()
        raise SystemExit(f"client {args[0]} did not start")
    return proc


def finish_client(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate("stop\n", timeout=60)
    return json.loads(out.strip().splitlines()[-1])


def replay(model: Path, video: Path, config: Path, publish: str, backfill: str, state: Path, frames: int,
           realtime: bool, out_json: Path) -> tuple[dict[str, Any], list[str], float]:
    """Run the station to its end: (its summary, the command, its CPU seconds)."""
    cmd = [sys.executable, "-m", "inspector", "replay", str(video), "--model", str(model), "--config", str(config),
           "--publish", publish, "--backfill", backfill, "--state", str(state), "--frames", str(frames),
           "--json", str(out_json), *(["--realtime"] if realtime else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"replay failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return json.loads(out_json.read_text()), cmd, cpu


def journal_published(state: Path) -> dict[int, float]:
    conn = sqlite3.connect(f"file:{state / 'journal.db'}?mode=ro", uri=True)
    try:
        return {int(s): float(t) for s, t in conn.execute("SELECT seq, publish_ts FROM verdicts")}
    finally:
        conn.close()


def first_seen(published: dict[int, float], seen: list[tuple[float, int]], skip: int) -> tuple[list[float], int]:
    """Per sequence > skip: ms from its published_at to the first moment the client saw it or a newer one;
    and how many such sequences it never saw (none newer came before it stopped)."""
    times, highest = [], []
    for t, v in sorted(seen):
        if not highest or v > highest[-1]:
            times.append(t)
            highest.append(v)
    out, missing = [], 0
    for s in sorted(s for s in published if s > skip):
        i = bisect.bisect_left(highest, s)
        if i == len(highest):
            missing += 1
        else:
            out.append((times[i] - published[s]) * 1000)
    return out, missing


def after_reference(reference: list[tuple[float, int]], seen: list[tuple[float, int]], skip: int) -> list[float]:
    """Per sequence > skip that the reference subscriber received: ms from that moment (the station's send,
    plus the ZeroMQ hop every subscriber pays) to the first moment the client saw it or a newer one."""
    received = {v: t for t, v in reference}
    out, _ = first_seen(received, seen, skip)
    return out


# --- the client processes -----------------------------------------------------------------------------
def opcua_client(url: str, interval_ms: float) -> None:
    import logging

    from asyncua import Client

    logging.getLogger("asyncua").setLevel(logging.ERROR)    # not its notes on revised subscription values

    seen: list[tuple[float, int]] = []

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            seen.append((time.time(), int(val)))

    async def main() -> None:
        async with Client(url, timeout=10) as c:
            idx = await c.get_namespace_index(NAMESPACE)
            node = await c.nodes.objects.get_child([f"{idx}:Station", f"{idx}:LastResult", f"{idx}:Sequence"])
            sub = await c.create_subscription(interval_ms, Handler())
            await sub.subscribe_data_change(node, sampling_interval=0, queuesize=0)
            print("READY", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            await sub.delete()

    cpu0 = time.process_time()
    t0 = time.monotonic()
    asyncio.run(main())
    print(json.dumps({"seen": seen, "cpu_percent": round(100 * (time.process_time() - cpu0) /
                                                        (time.monotonic() - t0), 1)}), flush=True)


def zmq_client(endpoint: str) -> None:
    """The reference hop: a plain ZeroMQ subscriber to the station (what the gateway's feed receives)."""
    import zmq

    seen: list[tuple[float, int]] = []
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"result")
    sock.connect(endpoint)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print("READY", flush=True)
    cpu0, t0 = time.process_time(), time.monotonic()
    while not stop.is_set():
        if sock.poll(100):
            frames = sock.recv_multipart()
            t = time.time()
            seen.append((t, int(json.loads(frames[1])["sequence"])))
    cpu = 100 * (time.process_time() - cpu0) / (time.monotonic() - t0)
    sock.close(0)
    ctx.term()
    print(json.dumps({"seen": seen, "cpu_percent": round(cpu, 1)}), flush=True)


def modbus_client(port: int, poll_ms: float) -> None:
    from pymodbus.client import ModbusTcpClient

    seen: list[tuple[float, int]] = []
    trips: list[float] = []
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    with ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0) as c:
        if not c.connect():
            raise SystemExit("modbus client: cannot connect")
        print("READY", flush=True)
        cpu0, t0 = time.process_time(), time.monotonic()
        last, tick = 0, time.monotonic()
        while not stop.is_set():
            a = time.monotonic()
            rr = c.read_holding_registers(4, count=2, device_id=1)
            t = time.time()
            trips.append((time.monotonic() - a) * 1000)
            if not rr.isError():
                seq = rr.registers[0] | rr.registers[1] << 16
                if seq != last:
                    seen.append((t, seq))
                    last = seq
            tick += poll_ms / 1000
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                tick = time.monotonic()     # behind (a stall): poll again now, do not burst to catch up
        cpu = 100 * (time.process_time() - cpu0) / (time.monotonic() - t0)
    print(json.dumps({"seen": seen, "round_trip_ms": stats(trips), "polls": len(trips),
                      "cpu_percent": round(cpu, 1)}), flush=True)


# --- the two parts ------------------------------------------------------------------------------------
def latency_part(args: argparse.Namespace, work: Path, model: Path, video: Path, config: Path,
                 load: LoadSampler) -> dict[str, Any]:
    publish, backfill = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    run = work / "latency"
    run.mkdir()
    gw = Gateway(publish, backfill, run / "gateway", config)
    opc = mb = zq = None
    try:
        opc = start_client("--opcua-client", gw.opcua, str(args.opcua_interval_ms))
        mb = start_client("--modbus-client", str(gw.modbus_port), str(args.modbus_poll_ms))
        zq = start_client("--zmq-client", publish)
        frames = int(args.rate * args.seconds)
        gw_cpu0, t0 = cpu_seconds(gw.proc.pid), time.monotonic()
        load_from = load.samples[-1][0] if load.samples else 0.0
        summary, cmd, station_cpu = replay(model, video, config, publish, backfill, run / "station", frames,
                                           True, run / "replay.json")
        caught_up = gw.wait_for(summary["parts"], 60)
        time.sleep(0.5)
        gw_cpu1, t1 = cpu_seconds(gw.proc.pid), time.monotonic()
        opc_out, mb_out, zq_out = finish_client(opc), finish_client(mb), finish_client(zq)
        opc = mb = zq = None
        load_during = load.summary(load_from)
    finally:
        for p in (opc, mb, zq):
            if p is not None:
                p.kill()
        code = gw.stop()
    published = journal_published(run / "station")
    opc_ms, opc_missing = first_seen(published, [(t, v) for t, v in opc_out["seen"]], args.warmup)
    mb_ms, mb_missing = first_seen(published, [(t, v) for t, v in mb_out["seen"]], args.warmup)
    zq_ms, zq_missing = first_seen(published, [(t, v) for t, v in zq_out["seen"]], args.warmup)
    opc_wire = after_reference(zq_out["seen"], [(t, v) for t, v in opc_out["seen"]], args.warmup)
    mb_wire = after_reference(zq_out["seen"], [(t, v) for t, v in mb_out["seen"]], args.warmup)
    opc_exact = len({v for _, v in opc_out["seen"] if v > args.warmup})
    mb_exact = len({v for _, v in mb_out["seen"] if v > args.warmup})
    measured = len([s for s in published if s > args.warmup])
    return {
        "station_command": shlex.join(cmd), "gateway_command": shlex.join(gw.cmd),
        "gateway_lines": gw.lines, "gateway_exit_code": code,
        "results": summary["parts"], "warmup_skipped": args.warmup, "measured": measured,
        "station_parts_per_s": summary["parts_per_s"], "station_latency_p50_ms": summary["latency_p50_ms"],
        "station_latency_p99_ms": summary["latency_p99_ms"],
        "gateway_took_in_all_after_s": caught_up, "gateway_parts": gw.parts(),
        "opcua": {"what": f"published_at -> data change of LastResult/Sequence (>= that sequence) in an asyncua "
                          f"subscription, publishing interval {args.opcua_interval_ms:g} ms, another process",
                  "latency_ms": stats(opc_ms), "from_send_ms": stats(opc_wire), "never_seen": opc_missing,
                  "sequences_notified_exactly": opc_exact, "client_cpu_percent": opc_out["cpu_percent"]},
        "modbus": {"what": f"published_at -> first answer with registers 4-5 >= that sequence, a pymodbus client "
                           f"polling every {args.modbus_poll_ms:g} ms in another process (includes the polling "
                           "interval)",
                   "poll_interval_ms": args.modbus_poll_ms, "latency_ms": stats(mb_ms), "from_send_ms": stats(mb_wire),
                   "never_seen": mb_missing,
                   "sequences_read_exactly": mb_exact, "polls": mb_out["polls"],
                   "round_trip_ms": mb_out["round_trip_ms"], "client_cpu_percent": mb_out["cpu_percent"]},
        "zeromq_reference": {"what": "published_at -> a plain ZeroMQ SUB in another process receives the header "
                                     "(the station's journal commit and send + the ZeroMQ hop: what the gateway's "
                                     "feed starts from)",
                             "latency_ms": stats(zq_ms), "never_seen": zq_missing,
                             "client_cpu_percent": zq_out["cpu_percent"]},
        "cpu_percent_of_one_core": {
            "station": round(100 * station_cpu / summary["seconds"], 1) if summary["seconds"] else None,
            "gateway": round(100 * (gw_cpu1 - gw_cpu0) / (t1 - t0), 1) if gw_cpu0 is not None and gw_cpu1 else None},
        "load_average_1m_during": load_during,
    }


MODES = ("none", "subscriber", "gateway")   # nothing attached / a plain ZeroMQ subscriber / the gateway


def throughput_part(args: argparse.Namespace, work: Path, model: Path, video: Path, config: Path,
                    load: LoadSampler) -> dict[str, Any]:
    """Full-speed replays, interleaved per round: nothing attached, a plain ZeroMQ subscriber (what any
    client costs the station: its PUB socket sends every message with its images), the gateway."""
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        for mode in MODES:
            name = f"run{i + 1}-{mode}"
            run = work / name
            run.mkdir()
            publish, backfill = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
            gw = Gateway(publish, backfill, run / "gateway", config) if mode == "gateway" else None
            sub = start_client("--zmq-client", publish) if mode == "subscriber" else None
            load_from = load.samples[-1][0] if load.samples else 0.0
            gw_cpu0 = cpu_seconds(gw.proc.pid) if gw is not None else None
            try:
                summary, cmd, cpu = replay(model, video, config, publish, backfill, run / "station",
                                           args.frames, False, run / "replay.json")
                caught_up = gw.wait_for(summary["parts"], 120) if gw is not None else None
                took_in = gw.parts() if gw is not None else None
                gw_cpu = cpu_seconds(gw.proc.pid) if gw is not None else None
                received = len(finish_client(sub)["seen"]) if sub is not None else None
                sub = None
            finally:
                code = gw.stop() if gw is not None else None
                if sub is not None:
                    sub.kill()
            row = {"run": i + 1, "mode": mode, "parts": summary["parts"], "seconds": summary["seconds"],
                   "parts_per_s": summary["parts_per_s"], "station_cpu_s": round(cpu, 2),
                   "station_cpu_ms_per_part": round(1000 * cpu / summary["parts"], 3),
                   "load_average_1m": load.summary(load_from)}
            if gw is not None:
                row.update({"gateway_parts": took_in, "gateway_caught_up_after_s": caught_up,
                            "gateway_exit_code": code,
                            "gateway_cpu_ms_per_part": round(1000 * (gw_cpu - gw_cpu0) / max(1, took_in or 0), 3)
                            if gw_cpu is not None and gw_cpu0 is not None else None})
            if received is not None:
                row["subscriber_received"] = received
            runs.append(row)
            print(f"  {name}: {summary['parts_per_s']} parts/s ({summary['parts']} parts in {summary['seconds']} s)"
                  + (f"; gateway took in {took_in}" if gw is not None else "")
                  + (f"; subscriber received {received}" if received is not None else ""), flush=True)
    return {"frames_per_run": args.frames, "station_command": shlex.join(cmd), "runs": runs, **cost(runs)}


def cost(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: the median parts/s and its spread (max - min, % of the median); the gateway's cost in % of
    the station's throughput against nothing attached and against a plain subscriber. A cost within the
    spread is not a measured cost."""
    out: dict[str, Any] = {}
    for mode in MODES:
        v = [r["parts_per_s"] for r in runs if r["mode"] == mode]
        m = statistics.median(v)
        out[f"median_parts_per_s_{mode}"] = m
        out[f"spread_percent_{mode}"] = round(100 * (max(v) - min(v)) / m, 1)
        out[f"median_station_cpu_ms_per_part_{mode}"] = statistics.median(
            r["station_cpu_ms_per_part"] for r in runs if r["mode"] == mode)
    base, sub, gw = (out[f"median_parts_per_s_{m}"] for m in MODES)
    out["cost_percent"] = round(100 * (base - gw) / base, 2)
    out["cost_percent_any_subscriber"] = round(100 * (base - sub) / base, 2)
    out["cost_percent_vs_subscriber"] = round(100 * (sub - gw) / sub, 2)
    gw_cpu = [r["gateway_cpu_ms_per_part"] for r in runs if r.get("gateway_cpu_ms_per_part") is not None]
    out["median_gateway_cpu_ms_per_part"] = statistics.median(gw_cpu) if gw_cpu else None
    return out


# --- report -------------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_table(out: dict[str, Any]) -> None:
    lat, thr = out["latency"], out["throughput"]
    print(f"\nEnd to end at {out['rate_per_s']:g} results/s: station {lat['station_parts_per_s']} parts/s, "
          f"{lat['results']} results ({lat['warmup_skipped']} warm-up skipped); load average (1 min) "
          f"{lat['load_average_1m_during']['min']}-{lat['load_average_1m_during']['max']} on {out['machine']['cpus']} cores")
    print(f"{'latency (ms)':<60}{'n':>6}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    rows = ((f"published_at -> OPC UA subscription (interval {out['opcua_interval_ms']:g} ms)", "opcua", "latency_ms"),
            (f"published_at -> Modbus poll every {out['modbus_poll_ms']:g} ms (incl. the interval)", "modbus",
             "latency_ms"),
            ("published_at -> plain ZeroMQ subscriber (reference)", "zeromq_reference", "latency_ms"),
            ("send (reference receives) -> OPC UA subscription", "opcua", "from_send_ms"),
            ("send (reference receives) -> Modbus poll (incl. the interval)", "modbus", "from_send_ms"))
    for name, key, field in rows:
        s = lat[key][field]
        print(f"{name:<60}{s['n']:>6}{s['p50']:>8.2f}{s['p90']:>8.2f}{s['p99']:>8.2f}{s['max']:>8.2f}")
    print(f"CPU, % of one core: station {lat['cpu_percent_of_one_core']['station']}, gateway "
          f"{lat['cpu_percent_of_one_core']['gateway']}; gateway took in {lat['gateway_parts']} of {lat['results']}")
    print(f"\nStation throughput at full speed ({thr['frames_per_run']} frames a run), parts/s")
    print(f"{'run':<8}" + "".join(f"{m:>14}" for m in MODES))
    for i in range(out["runs"]):
        print(f"{i + 1:<8}" + "".join(f"{_run(thr, i, m)['parts_per_s']:>14.1f}" for m in MODES))
    print(f"{'median':<8}" + "".join(f"{thr[f'median_parts_per_s_{m}']:>14.1f}" for m in MODES))
    print(f"{'spread %':<8}" + "".join(f"{thr[f'spread_percent_{m}']:>14.1f}" for m in MODES))
    print(f"gateway cost: {thr['cost_percent']} % against nothing attached (target <= 5 %: "
          f"{verdict(thr['cost_percent'] <= 5)}); any plain subscriber costs {thr['cost_percent_any_subscriber']} %, "
          f"the gateway {thr['cost_percent_vs_subscriber']} % more than one; gateway CPU "
          f"{thr['median_gateway_cpu_ms_per_part']} ms per result")
    t = out["targets"]
    print(f"p99 <= 10 ms at {out['rate_per_s']:g}/s from published_at: OPC UA {verdict(t['opcua_p99_le_10ms'])}, "
          f"Modbus {verdict(t['modbus_p99_le_10ms'])}; from the send: OPC UA "
          f"{verdict(t['opcua_p99_from_send_le_10ms'])}, Modbus {verdict(t['modbus_p99_from_send_le_10ms'])}")


def _run(thr: dict[str, Any], i: int, mode: str) -> dict[str, Any]:
    return next(r for r in thr["runs"] if r["run"] == i + 1 and r["mode"] == mode)


def write_md(out: dict[str, Any], path: Path) -> None:
    lat, thr, m = out["latency"], out["throughput"], out["machine"]
    ld, lt = lat["load_average_1m_during"], out["load_average_1m"]
    cpu = lat["cpu_percent_of_one_core"]

    def row(name: str, s: dict[str, Any], bold: bool) -> str:
        p99 = f"**{s['p99']:.2f}**" if bold else f"{s['p99']:.2f}"
        return f"| {name} | {s['n']} | {s['p50']:.2f} | {s['p90']:.2f} | {p99} | {s['max']:.2f} |"

    runs = []
    for i in range(out["runs"]):
        a, z, w = (_run(thr, i, m) for m in MODES)
        runs.append(f"| {i + 1} | {a['parts_per_s']:.1f} (load {a['load_average_1m']['mean']}) | "
                    f"{z['parts_per_s']:.1f} (load {z['load_average_1m']['mean']}) | "
                    f"{w['parts_per_s']:.1f} (load {w['load_average_1m']['mean']}) | {w['gateway_parts']} of "
                    f"{w['parts']}, {w['gateway_caught_up_after_s']} s after the station's process exited |")
    busy = "; ".join(out["other_processes_at_start"]) or "none"
    t = out["targets"]
    text = f"""# End to end: station → gateway → OPC UA and Modbus clients (scripts/bench_gateway.py)

[e2e.json](e2e.json) holds one run of

```
{out['command']}
```

on a {m['cpus']}-core machine ({m['platform']}, Python {m['python']}, asyncua {out['versions']['asyncua']},
pymodbus {out['versions']['pymodbus']}), {out['date']}.

This is a shared VM, not an edge box: other work may run beside the bench (at its start, processes above
1 % CPU by `ps`: {busy}). The 1-minute load average, sampled every second, was {lt['min']}–{lt['max']} (mean
{lt['mean']}) over the bench (its own processes included) and {ld['min']}–{ld['max']} during the latency part,
on 2 cores.

Each piece is its own process: the station (`inspector replay --realtime` with `--publish`, `--backfill`
and `--state`, continuous trigger so that every frame is a part, the video paced at {out['rate_per_s']:g}
frames/s, every part with its 3 PNGs; {out['model_note']}), `inspector gateway` (OPC UA + Modbus on, web
page and MQTT off), an asyncua client subscribed to `Objects/Station/LastResult/Sequence` (publishing
interval {out['opcua_interval_ms']:g} ms), a pymodbus client reading holding registers 4–5 every
{out['modbus_poll_ms']:g} ms, and a plain ZeroMQ subscriber to the station as a reference for the
station's own share. Latency per result: the header's `published_at` (read back from the station's
journal) → the first moment the client saw that sequence or a newer one (`time.time()`: one machine, one
clock). The first {lat['warmup_skipped']} results are skipped.

## Latency at {out['rate_per_s']:g} results/s (station {lat['station_parts_per_s']} parts/s)

| published_at → the client sees it (ms) | n | p50 | p90 | p99 | max |
|---|---|---|---|---|---|
{row("OPC UA subscription", lat["opcua"]["latency_ms"], True)}
{row(f"Modbus, polled every {out['modbus_poll_ms']:g} ms (**includes the polling interval**)", lat["modbus"]["latency_ms"], True)}
{row("reference: plain ZeroMQ subscriber, no gateway in the path", lat["zeromq_reference"]["latency_ms"], False)}

| the station's send (the reference subscriber receives it) → the client sees it (ms) | n | p50 | p90 | p99 | max |
|---|---|---|---|---|---|
{row("OPC UA subscription", lat["opcua"]["from_send_ms"], True)}
{row(f"Modbus, polled every {out['modbus_poll_ms']:g} ms (**includes the polling interval**)", lat["modbus"]["from_send_ms"], True)}

- Target p99 ≤ 10 ms at 100 results/s on 2 cores. From the header's `published_at`: OPC UA
  **{verdict(t['opcua_p99_le_10ms'])}**, Modbus **{verdict(t['modbus_p99_le_10ms'])}**. From the moment the station
  sends (its journal commit done; measured per sequence as the reference subscriber's receive time, so the
  ZeroMQ hop is counted): OPC UA **{verdict(t['opcua_p99_from_send_le_10ms'])}**, Modbus
  **{verdict(t['modbus_p99_from_send_le_10ms'])}**. In this run under this load.
- The path: the station's journal commit and send, ZeroMQ (up to here: the reference row), then the
  gateway's feed, its store commit (`gateway.db`, synchronous NORMAL), the hub, the server's update and
  the client's transport. The difference between the rows is the gateway and the client.
- The OPC UA client was notified of {lat['opcua']['sequences_notified_exactly']} of {lat['measured']}
  sequences exactly; the Modbus client read {lat['modbus']['sequences_read_exactly']} exactly
  ({lat['modbus']['polls']} polls, round trip p50 {lat['modbus']['round_trip_ms']['p50']} ms, p99
  {lat['modbus']['round_trip_ms']['p99']} ms). The others were replaced by a newer result first and count
  from the moment the newer one was seen. A PLC must use the handshake to see every part (docs/plant.md);
  one polling every T ms sees a result up to T ms later than the server could show it.
- CPU, % of one core: station {cpu['station']}, gateway {cpu['gateway']} (with the Modbus client's
  {round(1000 / out['modbus_poll_ms'])} reads/s), OPC UA client {lat['opcua']['client_cpu_percent']},
  Modbus client {lat['modbus']['client_cpu_percent']}. The gateway took in {lat['gateway_parts']} of
  {lat['results']} results.

## The gateway's cost to the station at full speed

`inspector replay` without `--realtime`, {thr['frames_per_run']} frames a run, in {out['runs']} rounds of three
runs: nothing attached, a plain ZeroMQ subscriber (another process receiving every result with its images:
what any client costs the station, whose PUB socket then sends each message), the gateway (OPC UA + Modbus
on, no clients); fresh journal and gateway state each run; the station's own parts/s from its summary. The
station's configuration is the same in all (it does not wait for a subscriber).

| round | nothing attached, parts/s | plain subscriber, parts/s | gateway, parts/s | the gateway took in |
|---|---|---|---|---|
{chr(10).join(runs)}
| median | **{thr['median_parts_per_s_none']:.1f}** | **{thr['median_parts_per_s_subscriber']:.1f}** | **{thr['median_parts_per_s_gateway']:.1f}** | |
| spread (max − min, % of median) | {thr['spread_percent_none']} | {thr['spread_percent_subscriber']} | {thr['spread_percent_gateway']} | |
| station CPU per part, ms (median) | {thr['median_station_cpu_ms_per_part_none']} | {thr['median_station_cpu_ms_per_part_subscriber']} | {thr['median_station_cpu_ms_per_part_gateway']} | |

Cost of the gateway: **{thr['cost_percent']:.1f} %** of the station's throughput against nothing attached
(target ≤ 5 %: **{verdict(thr['cost_percent'] <= 5)}**); a plain subscriber alone costs
{thr['cost_percent_any_subscriber']:.1f} %, and the gateway {thr['cost_percent_vs_subscriber']:.1f} % more than one. The
gateway's own CPU: {thr['median_gateway_cpu_ms_per_part']} ms per result (median over the runs), on the
other core. A difference within the spread of the runs is not a measured difference.
"""
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100.0, help="results/s in the latency part (default 100)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the latency part (default 30)")
    ap.add_argument("--warmup", type=int, default=100, help="results skipped at the start (default 100)")
    ap.add_argument("--opcua-interval-ms", type=float, default=0.0, help="subscription publishing interval")
    ap.add_argument("--modbus-poll-ms", type=float, default=1.0, help="Modbus polling interval (default 1)")
    ap.add_argument("--frames", type=int, default=6000, help="frames per full-speed run (default 6000)")
    ap.add_argument("--runs", type=int, default=5, help="full-speed rounds (each: none, subscriber, gateway; default 5)")
    ap.add_argument("--model", type=Path, default=None, help="MODEL.onnx (default: a tiny mean-pixel model)")
    ap.add_argument("--video", type=Path, default=None, help="a video (default: a synthetic conveyor)")
    ap.add_argument("--roi", default="64,0,64,64", help="with --video: the ROI x,y,width,height")
    ap.add_argument("--work", type=Path, default=None, help="keep the runs' files here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/research/bench/gateway/e2e.json")
    ap.add_argument("--md", type=Path, default=ROOT / "docs/research/bench/gateway/e2e.md")
    ap.add_argument("--opcua-client", nargs=2, metavar=("URL", "INTERVAL_MS"), help=argparse.SUPPRESS)
    ap.add_argument("--modbus-client", nargs=2, metavar=("PORT", "POLL_MS"), help=argparse.SUPPRESS)
    ap.add_argument("--zmq-client", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.opcua_client:
        return opcua_client(args.opcua_client[0], float(args.opcua_client[1]))
    if args.modbus_client:
        return modbus_client(int(args.modbus_client[0]), float(args.modbus_client[1]))
    if args.zmq_client:
        return zmq_client(args.zmq_client)

    command = shlex.join([f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}", "python",
                          str(Path(sys.argv[0]).resolve().relative_to(ROOT)) if Path(sys.argv[0]).resolve()
                          .is_relative_to(ROOT) else sys.argv[0], *sys.argv[1:]])
    others = busy_processes()
    load = LoadSampler()
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gw-")))
        work.mkdir(parents=True, exist_ok=True)
        model, video, latency_cfg, throughput_cfg = make_line(work, args)
        print(f"latency: {args.rate:g} results/s for {args.seconds:g} s ...", flush=True)
        latency = latency_part(args, work, model, video, latency_cfg, load)
        print(f"throughput: {args.runs} x 3 full-speed runs of {args.frames} frames ...", flush=True)
        throughput = throughput_part(args, work, model, video, throughput_cfg, load)
    load.stop()
    out = {
        "what": "end to end: inspector replay (station) -> inspector gateway -> asyncua subscription and pymodbus "
                "polling client, each a process; and the station's full-speed parts/s with and without the gateway",
        "command": command, "rate_per_s": args.rate, "seconds": args.seconds,
        "opcua_interval_ms": args.opcua_interval_ms, "modbus_poll_ms": args.modbus_poll_ms, "runs": args.runs,
        "model_note": (f"model {args.model}" if args.model else "a tiny real ONNX model, score = mean pixel, 64 px")
        + (f", video {args.video}" if args.video else ", a synthetic 64x192 conveyor video, one 64 px ROI"),
        "latency": latency, "throughput": throughput,
        "targets": {"opcua_p99_le_10ms": (latency["opcua"]["latency_ms"]["p99"] or 1e9) <= 10,
                    "modbus_p99_le_10ms": (latency["modbus"]["latency_ms"]["p99"] or 1e9) <= 10,
                    "opcua_p99_from_send_le_10ms": (latency["opcua"]["from_send_ms"]["p99"] or 1e9) <= 10,
                    "modbus_p99_from_send_le_10ms": (latency["modbus"]["from_send_ms"]["p99"] or 1e9) <= 10,
                    "gateway_cost_le_5_percent": throughput["cost_percent"] <= 5},   # unrounded beyond 0.01 %
        "load_average_1m": load.summary(), "load_average_1m_samples": [v for _, v in load.samples],
        "other_processes_at_start": others,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "ENGINES_ORT_THREADS": os.environ.get("ENGINES_ORT_THREADS")},
        "versions": {name: _version(name) for name in ("asyncua", "pymodbus", "pyzmq", "onnxruntime")},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    print_table(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    write_md(out, args.md)
    print(f"wrote {args.out} and {args.md}")


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return ""


if __name__ == "__main__":
    main()
