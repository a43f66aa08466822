"""The reference subscriber: one line per result, sequence gaps detected, images of failed parts saved.

What a PLC/MES gateway does, in the fewest lines that handle the protocol correctly (docs/protocol.md).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import zmq

from inspector.publish import RESULT_TOPIC, STATUS_TOPIC

_EXT = {"png": "png", "jpeg": "jpg"}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")  # part ids come from PLCs: never let one name a path


class GapDetector:
    """Tracks the result sequence per run: a jump forward is a gap of lost results; a new run_id restarts it."""

    def __init__(self) -> None:
        self.expected: int | None = None
        self.run_id: str | None = None
        self.gaps = 0
        self.lost = 0

    def see(self, header: dict[str, Any]) -> int:
        """The number of results lost just before this one (0 if none)."""
        seq, run = int(header["sequence"]), header.get("run_id")
        lost = 0
        if self.expected is not None and run == self.run_id and seq > self.expected:
            lost = seq - self.expected
            self.gaps += 1
            self.lost += lost
        self.expected, self.run_id = seq + 1, run
        return lost


def format_result(h: dict[str, Any]) -> str:
    rois = " ".join(
        f"{r['name']}={'-' if r['score'] is None else format(r['score'], '.4g')}/{r['threshold']:.4g}" for r in h["rois"])
    line = (f"#{h['sequence']} {h['verdict'].upper():5} part={h['part_id']} frame={h['frame']} {rois} "
            f"latency={h['latency_ms']:.1f}ms")
    return line + (f" error={h['error']}" if h.get("error") else "")


def format_status(h: dict[str, Any]) -> str:
    cam = h.get("camera", {})
    return (f"status camera={cam.get('state')} frames={h['frames_captured']} parts={h['parts_inspected']} "
            f"pass={h['passed']} fail={h['failed']} error={h['errors']} dropped={h['frames_dropped']} "
            f"fps={h['fps']} p50={h['latency_p50_ms']}ms p99={h['latency_p99_ms']}ms last_seq={h['last_sequence']}")


def save_images(directory: Path, header: dict[str, Any], images: list[bytes]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for desc, data in zip(header["images"], images, strict=False):
        name = f"{header['sequence']:08d}_{header['part_id']}_{desc['roi']}_{desc['kind']}"
        p = directory / f"{_SAFE.sub('_', name)}.{_EXT.get(desc['format'], 'bin')}"
        p.write_bytes(data)
        paths.append(p)
    return paths


def listen(endpoint: str, *, count: int | None = None, save: Path | None = None, show_status: bool = False,
           as_json: bool = False, timeout_s: float | None = None, out: TextIO = sys.stdout) -> int:
    """Print results until `count` results arrived (or forever); exit code 0, 1 if the timeout passed first."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.SUBSCRIBE, RESULT_TOPIC)
    if show_status:
        sock.setsockopt(zmq.SUBSCRIBE, STATUS_TOPIC)
    sock.connect(endpoint)
    gaps = GapDetector()
    received = 0
    last = time.monotonic()
    try:
        while count is None or received < count:
            if not sock.poll(200):
                if timeout_s is not None and time.monotonic() - last > timeout_s:
                    print(f"timeout: nothing for {timeout_s:g}s after {received} results", file=out, flush=True)
                    return 1
                continue
            last = time.monotonic()
            topic, raw, *images = sock.recv_multipart()
            header = json.loads(raw)
            if topic == STATUS_TOPIC:
                print(json.dumps(header) if as_json else format_status(header), file=out, flush=True)
                continue
            if topic != RESULT_TOPIC:
                continue
            received += 1
            lost = gaps.see(header)
            if lost:
                print(f"GAP: {lost} result(s) lost before #{header['sequence']}", file=out, flush=True)
            print(json.dumps(header) if as_json else format_result(header), file=out, flush=True)
            if save is not None and header["verdict"] != "pass" and images:
                save_images(save, header, images)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        summary = f"received {received} results, {gaps.gaps} gap(s), {gaps.lost} lost"
        print(json.dumps({"summary": summary, "received": received, "gaps": gaps.gaps, "lost": gaps.lost})
              if as_json else summary, file=out, flush=True)
    return 0
