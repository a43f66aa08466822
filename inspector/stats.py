"""Counters shared by the stages and read by the status publisher: one lock, cheap increments.

Latencies are kept in a bounded window so p50/p99 describe the recent past, not the whole run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class VerdictCounts:
    """Parts counted by verdict: pass, fail, and everything else as an error (the station's published
    parts, the gateway's taken-in results)."""

    parts: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0

    def add(self, verdict: str) -> None:
        self.parts += 1
        if verdict == "pass":
            self.passed += 1
        elif verdict == "fail":
            self.failed += 1
        else:
            self.errors += 1


class Stats:
    def __init__(self, latency_window: int = 2000) -> None:
        self._lock = threading.Lock()
        self.frames_captured = 0
        self.frames_examined = 0  # frames the trigger stage has looked at: "frames being processed"
        self.parts_triggered = 0  # parts the trigger chose; each one is published, whatever happens
        self.verdicts = VerdictCounts()  # parts published
        self.dropped: Counter[str] = Counter()
        self.camera_state = "starting"
        self.camera_error: str | None = None
        self.reconnects = 0
        self.engine_calls = 0  # batches sent to the engine
        self.engine_errors = 0  # ... that failed (every part in them published with verdict "error")
        self.engine_failing = False  # the last call failed
        self.engine_last_error: str | None = None
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._frame_times: deque[float] = deque(maxlen=512)

    def frame_captured(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames_captured += 1
            self._frame_times.append(now)

    def frame_examined(self) -> None:
        with self._lock:
            self.frames_examined += 1

    def part_triggered(self) -> None:
        with self._lock:
            self.parts_triggered += 1

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += n

    def camera(self, state: str, error: str | None = None, reconnect: bool = False) -> None:
        with self._lock:
            self.camera_state = state
            self.camera_error = error
            self.reconnects += int(reconnect)

    def engine_call(self, error: str | None) -> None:
        """One engine call's outcome: None when it worked, else why it failed."""
        with self._lock:
            self.engine_calls += 1
            self.engine_failing = error is not None
            if error is not None:
                self.engine_errors += 1
                self.engine_last_error = error

    def published(self, verdict: str, latency_s: float) -> None:
        with self._lock:
            self.verdicts.add(verdict)
            self._latencies.append(latency_s)

    def snapshot(self) -> dict[str, Any]:
        """Counters, capture fps over the last few seconds and latency percentiles in ms."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._frame_times if now - t <= 5.0]
            lat = np.array(self._latencies, dtype=np.float64)
            snap = {
                "frames_captured": self.frames_captured,
                "frames_examined": self.frames_examined,
                "parts_triggered": self.parts_triggered,
                "parts_inspected": self.verdicts.parts,
                "passed": self.verdicts.passed,
                "failed": self.verdicts.failed,
                "errors": self.verdicts.errors,
                "frames_dropped": dict(self.dropped),
                "camera": {"state": self.camera_state, "error": self.camera_error, "reconnects": self.reconnects},
                "engine": {"state": "error" if self.engine_failing else "ok", "calls": self.engine_calls,
                           "errors": self.engine_errors, "last_error": self.engine_last_error},
            }
        span = (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
        snap["fps"] = round((len(recent) - 1) / span, 2) if span > 0 else 0.0
        snap["latency_p50_ms"] = round(float(np.percentile(lat, 50)) * 1000, 3) if lat.size else None
        snap["latency_p99_ms"] = round(float(np.percentile(lat, 99)) * 1000, 3) if lat.size else None
        return snap
