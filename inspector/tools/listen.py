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

from inspector.network.backfill import BackfillError, iter_backfill
from inspector.network.clone import GapDetector, images_in_order
from inspector.network.publisher import RESULT_TOPIC, STATUS_TOPIC
from inspector.network.security import apply_client_curve

_EXT = {"png": "png", "jpeg": "jpg"}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")  # part ids come from PLCs: never let one name a path


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


class _Printer:
    def __init__(self, out: TextIO, as_json: bool, save: Path | None) -> None:
        self.out, self.as_json, self.save = out, as_json, save

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def result(self, header: dict[str, Any], images: list[bytes], via: str | None = None) -> None:
        if self.as_json:
            self.line(json.dumps({**header, "backfilled": True} if via else header))
        else:
            self.line(format_result(header) + (f" ({via})" if via else ""))
        if self.save is not None and header["verdict"] != "pass" and images:
            save_images(self.save, header, images)


def listen(endpoint: str, *, count: int | None = None, save: Path | None = None, show_status: bool = False,
           as_json: bool = False, timeout_s: float | None = None, out: TextIO = sys.stdout,
           backfill_endpoint: str | None = None, since: int | None = None,
           client_secret: Path | None = None, server_public: Path | None = None) -> int:
    """Print results until `count` results arrived (or forever); exit code 0, 1 if the timeout passed first.

    With `backfill_endpoint` (the Clone pattern): the SUB socket connects first and keeps what arrives;
    `since` N prints every journaled result after N, then the live ones above the last printed; a gap
    in the live stream is filled from the journal before the result after it is printed. Results the
    journal no longer has (retention) or could not give are reported as lost.
    """
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    if client_secret is not None and server_public is not None:
        apply_client_curve(sock, client_secret, server_public)
    sock.setsockopt(zmq.SUBSCRIBE, RESULT_TOPIC)
    if show_status:
        sock.setsockopt(zmq.SUBSCRIBE, STATUS_TOPIC)
    sock.connect(endpoint)
    curve = {"client_secret": client_secret, "server_public": server_public} if client_secret else {}
    printer = _Printer(out, as_json, save)
    gaps = GapDetector(last=since)
    received = recovered = 0
    last = time.monotonic()

    def fill(upto: int) -> int:
        """Backfill (gaps.last, upto) and print it; returns how many came."""
        assert backfill_endpoint is not None and gaps.last is not None
        n = 0
        try:
            for r in iter_backfill(backfill_endpoint, gaps.last, 5000, limit=upto - gaps.last - 1,
                                   images=save is not None, **curve):
                seq = int(r.header["sequence"])
                if seq >= upto:
                    break
                lost = gaps.see(r.header)
                if lost:
                    printer.line(f"GAP: {lost} result(s) lost before #{seq} (no longer in the journal)")
                printer.result(r.header, images_in_order(r.header, r.images), via="backfill")
                n += 1
        except BackfillError as e:
            printer.line(f"backfill failed: {e}")
        return n

    try:
        if since is not None and backfill_endpoint is not None:
            got = fill(2**62)
            received += got
            recovered += got
        while count is None or received < count:
            if not sock.poll(200):
                if timeout_s is not None and time.monotonic() - last > timeout_s:
                    printer.line(f"timeout: nothing for {timeout_s:g}s after {received} results")
                    return 1
                continue
            last = time.monotonic()
            topic, raw, *images = sock.recv_multipart()
            header = json.loads(raw)
            if topic == STATUS_TOPIC:
                printer.line(json.dumps(header) if as_json else format_status(header))
                continue
            if topic != RESULT_TOPIC or gaps.duplicate(header):
                continue
            seq = int(header["sequence"])
            if backfill_endpoint is not None and gaps.missing(seq):
                got = fill(seq)
                received += got
                recovered += got
            lost = gaps.see(header)
            if lost:
                printer.line(f"GAP: {lost} result(s) lost before #{seq}")
            received += 1
            printer.result(header, images)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        summary = f"received {received} results, {gaps.gaps} gap(s), {gaps.lost} lost"
        if backfill_endpoint is not None:
            summary += f", {recovered} recovered by backfill"
        printer.line(json.dumps({"summary": summary, "received": received, "gaps": gaps.gaps, "lost": gaps.lost,
                                 "recovered": recovered}) if as_json else summary)
    return 0
