"""Helpers for the reliability tests (no tests here): an in-process station (journal, image store,
backfill) around the pipeline, subscribers, status and log collection."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import zmq
from test_inspector_support import FakeEngine

from inspector.config import InspectorConfig
from inspector.pipeline import Pipeline
from inspector.station import open_station


def station_config(video: Path, state_dir: Path, **sections: Any) -> InspectorConfig:
    """A fast continuous-trigger configuration journaling into `state`; no socket unless asked."""
    base: dict[str, Any] = {
        "station_id": "rel", "camera": {"source": str(video)},
        "trigger": {"mode": "continuous"},
        "engine": {"max_batch": 8, "max_wait_ms": 2},
        "publish": {"bind": "", "backfill_bind": "", "status_interval_s": 0.05},
        "state": {"dir": str(state_dir), "synchronous": "NORMAL"},
        "control": {"bind": ""},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return InspectorConfig(**base)


class Run:
    """One in-process run of the pipeline with its station; results and statuses as published."""

    def __init__(self, cfg: InspectorConfig, engine: Any = None, *, realtime: bool = False,
                 after: Callable[[dict[str, Any], list[bytes]], None] | None = None) -> None:
        self.engine = engine or FakeEngine()
        self.station = open_station(cfg, self.engine.manifest.model_id)
        self.headers: list[dict[str, Any]] = []
        self.images: list[list[bytes]] = []
        hooks = [self._collect] + ([after] if after else [])
        self.pipeline = Pipeline(cfg, self.engine, realtime=realtime, after_publish=hooks,
                                 **self.station.pipeline_kwargs())
        self.code: int | None = None
        self.seconds = 0.0
        self._thread: threading.Thread | None = None

    def _collect(self, header: dict[str, Any], images: list[bytes]) -> None:
        self.headers.append(header)
        self.images.append(images)

    def run(self) -> Run:
        t0 = time.monotonic()
        self.code = self.pipeline.run(handle_signals=False)
        self.seconds = time.monotonic() - t0
        return self

    def start(self) -> Run:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 20) -> None:
        self.pipeline.request_stop()
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the pipeline did not stop"

    def status(self) -> dict[str, Any]:
        return self.pipeline.publisher.status()


def journal_rows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM verdicts ORDER BY seq")]


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


class Subscriber:
    """A SUB socket in this process for results and status."""

    def __init__(self, endpoint: str, hwm: int = 100_000, curve: Callable[[zmq.Socket], None] | None = None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        if curve is not None:
            curve(self.sock)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.results: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []

    def receive(self, wait_ms: int = 50) -> None:
        while self.sock.poll(wait_ms):
            topic, header, *_ = self.sock.recv_multipart()
            if topic in (b"result", b"status"):  # not the `preview` topic
                (self.results if topic == b"result" else self.statuses).append(json.loads(header))
            wait_ms = 0

    def until(self, predicate: Callable[[], bool], timeout_s: float = 20) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline:
            self.receive()
        return predicate()

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def json_logs(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def fresh_logging() -> Any:
    """For tests calling inspector.cli.main in-process: its setup_logging binds structlog to the
    captured stdout of that test; restore the defaults so later tests do not log to a closed file."""
    yield
    structlog.reset_defaults()
