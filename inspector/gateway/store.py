"""The gateway's own small SQLite file (`gateway.db` in GatewayConfig.state_dir): what it has taken in.

- `meta`: the last sequence taken in and the Counters (parts, passed, failed, errors);
- `acks`: per PLC handshake channel ("opcua", "modbus"), the last sequence the PLC acknowledged;
- `results`: every result header taken in (the newest `retention` rows), for the web page's history.

A batch of results (headers + counters + last sequence) is written in ONE transaction before the hub is
told (`add_many`, called by the feed), so a gateway killed at any moment restarts exactly where its hub
was: nothing taken in twice, nothing skipped. WAL with synchronous=FULL (the default): a committed batch
survives a power cut too. With NORMAL (gateway.synchronous) a power cut may roll the file back by its
last commits, all of a batch at once (counters, last sequence and acks with it): those results are taken
in again from the station's journal and shown to the servers once more, never lost or counted twice;
a commit then costs no fsync (about 6 ms median, 24 ms p99 on a VM disk here).

Acknowledgements arrive on the event loop (Handshake.ack -> `set_acked`): they are only noted there and
written by the feed's thread with its next batch or within its poll interval (`flush_acks`), so the loop
never waits for an fsync. An ack lost to a crash in that window re-presents that result to the PLC once
(at-least-once towards the PLC, never a missed part).

Two connections: the writer (the feed's thread) and a reader for the History protocol (the loop, or the
web page's worker threads); WAL lets them run side by side.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import structlog

from inspector.gateway.hub import Counters, Handshake, Hub, PartResult

log = structlog.get_logger("inspector.gateway.store")

DB_NAME = "gateway.db"
DEFAULT_RETENTION = 1_000_000
PRUNE_EVERY = 1000              # rows added between two retention passes
HANDSHAKE_BACKLOG = 10_000      # unacknowledged results loaded into a handshake at start, at most

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS acks (channel TEXT PRIMARY KEY, sequence INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY, captured_at REAL NOT NULL, verdict TEXT NOT NULL, part_id TEXT NOT NULL,
    header TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS results_captured ON results (captured_at);
CREATE INDEX IF NOT EXISTS results_verdict ON results (verdict, seq);
"""
_COUNTERS = ("parts", "passed", "failed", "errors")

# fetch(sequence) -> the stored images of that result from the station (blocking; the backfill client)
ImageFetcher = Callable[[int], list[tuple[dict[str, Any], bytes]]]


class StoreError(Exception):
    """The state directory or its database cannot be used (a configuration error: exit 2)."""


class Store:
    """See the module's docstring. Implements hub.History (search / get / images)."""

    def __init__(self, state_dir: str | Path, *, retention: int = DEFAULT_RETENTION, synchronous: str = "FULL",
                 fetch_images: ImageFetcher | None = None, hub: Hub | None = None) -> None:
        self.path = Path(state_dir) / DB_NAME
        self.retention = max(1, int(retention))
        self.fetch_images = fetch_images     # set by the gateway when the station has a backfill endpoint
        self.hub = hub                       # its `recent` results answer images() without asking the station
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._w = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._w.execute("PRAGMA journal_mode=WAL")
            self._w.execute(f"PRAGMA synchronous={'NORMAL' if synchronous == 'NORMAL' else 'FULL'}")
            self._w.executescript(_SCHEMA)
            self._r = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"gateway.state_dir {self.path.parent}: cannot open {self.path.name} ({e}); "
                             "make the folder writable by the gateway's user or pass --state DIR") from None
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._acks_lock = threading.Lock()
        self._dirty_acks: dict[str, int] = {}
        meta = dict(self._w.execute("SELECT key, value FROM meta").fetchall())
        self.last_sequence: int = int(meta.get("last_sequence", 0))
        self.counters = Counters(*(int(meta.get(k, 0)) for k in _COUNTERS))
        self._acks: dict[str, int] = dict(self._w.execute("SELECT channel, sequence FROM acks").fetchall())
        self._since_prune = 0

    # --- writing (the feed's thread) ---------------------------------------------------------------
    def add_many(self, results: Sequence[PartResult]) -> list[PartResult]:
        """Take in results above the last sequence, in order, in one transaction (with any pending acks);
        returns those taken in (a result at or below the last sequence is a duplicate and skipped)."""
        taken: list[PartResult] = []
        last = self.last_sequence
        for r in results:
            if r.sequence > last:
                taken.append(r)
                last = r.sequence
        with self._wlock:
            acks = self._take_acks()
            if not taken and not acks:
                return []
            counters = Counters(**{k: getattr(self.counters, k) for k in _COUNTERS})
            for r in taken:
                counters.add(r.verdict)
            try:
                self._w.execute("BEGIN IMMEDIATE")
                self._w.executemany(
                    "INSERT OR REPLACE INTO results (seq, captured_at, verdict, part_id, header) VALUES (?,?,?,?,?)",
                    [(r.sequence, r.captured_at, r.verdict, r.part_id,
                      r.raw if r.raw is not None else json.dumps(r.header, separators=(",", ":"))) for r in taken])
                rows = [("last_sequence", last), *((k, getattr(counters, k)) for k in _COUNTERS)] if taken else []
                self._w.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)
                self._w.executemany("INSERT OR REPLACE INTO acks (channel, sequence) VALUES (?, ?)", acks.items())
                self._w.execute("COMMIT")
            except BaseException:
                self._rollback(acks)
                raise
            self.last_sequence, self.counters = last, counters
            self._since_prune += len(taken)
            if self._since_prune >= PRUNE_EVERY:
                self._prune()
        return taken

    def _rollback(self, acks: dict[str, int]) -> None:
        if self._w.in_transaction:
            self._w.execute("ROLLBACK")
        with self._acks_lock:       # written next time, unless a newer ack came meanwhile
            for channel, seq in acks.items():
                self._dirty_acks.setdefault(channel, seq)

    def _take_acks(self) -> dict[str, int]:
        with self._acks_lock:
            acks, self._dirty_acks = self._dirty_acks, {}
        return acks

    def flush_acks(self) -> None:
        """Write the acknowledgements noted since the last write (the feed calls it when idle)."""
        self.add_many(())

    def _prune(self) -> None:
        self._since_prune = 0
        self._w.execute("DELETE FROM results WHERE seq < (SELECT seq FROM results ORDER BY seq DESC LIMIT 1 "
                        "OFFSET ?)", (self.retention - 1,))

    # --- handshakes ----------------------------------------------------------------------------------
    def acked(self, channel: str) -> int:
        """The last sequence acknowledged through `channel` (0: none)."""
        with self._acks_lock:
            return self._dirty_acks.get(channel, self._acks.get(channel, 0))

    def set_acked(self, channel: str, sequence: int) -> None:
        """Handshake's persist callback: noted now, written by the feed's thread (see the module)."""
        with self._acks_lock:
            self._acks[channel] = self._dirty_acks[channel] = int(sequence)

    def open_handshake(self, hub: Hub, channel: str, *, backlog: int = HANDSHAKE_BACKLOG) -> Handshake:
        """The hub's handshake for `channel`, created with its persisted ack and offered the results taken
        in after it (from this file, not only the hub's memory), so a PLC that had not acknowledged them
        before a restart sees them again. At most the newest `backlog` of them: older ones are skipped
        (logged), so a PLC away for days does not hold a day of parts in memory."""
        if channel in hub.handshakes:
            return hub.handshakes[channel]
        acked = self.acked(channel)
        hs = hub.handshake(channel, acked, self.set_acked)   # offers what the hub holds in memory ...
        held = list(hs.pending)
        hs.pending.clear()
        upto = hub.last_sequence
        skipped = self.count_after(acked, upto) - backlog
        if skipped > 0:
            log.warning("handshake backlog too long: the oldest unacknowledged results are skipped",
                        channel=channel, acked=acked, skipped=skipped, presented=backlog)
        for header in self.after(acked, upto, backlog):      # ... after the stored ones, in order
            hs.offer(PartResult.from_message(header))
        for r in held:
            hs.offer(r)
        return hs

    def after(self, sequence: int, upto: int, limit: int) -> list[dict[str, Any]]:
        """Headers with `sequence` < seq <= `upto`, oldest first; the newest `limit` of them."""
        rows = self._read("SELECT header FROM (SELECT seq, header FROM results WHERE seq > ? AND seq <= ? "
                          "ORDER BY seq DESC LIMIT ?) ORDER BY seq", (sequence, upto, limit))
        return [json.loads(h) for (h,) in rows]

    def count_after(self, sequence: int, upto: int) -> int:
        return int(self._read("SELECT count(*) FROM results WHERE seq > ? AND seq <= ?", (sequence, upto))[0][0])

    # --- History (the web page) ----------------------------------------------------------------------
    def search(self, *, verdict: str | None = None, since: float | None = None, until: float | None = None,
               part_id: str | None = None, limit: int = 100, before_sequence: int | None = None,
               ) -> list[dict[str, Any]]:
        """Newest first: headers whose verdict, captured_at in [since, until] and part_id (substring) match."""
        where, args = [], []
        if verdict is not None:
            where.append("verdict = ?")
            args.append(verdict)
        if since is not None:
            where.append("captured_at >= ?")
            args.append(float(since))
        if until is not None:
            where.append("captured_at <= ?")
            args.append(float(until))
        if part_id:
            where.append("instr(part_id, ?) > 0")
            args.append(str(part_id))
        if before_sequence is not None:
            where.append("seq < ?")
            args.append(int(before_sequence))
        sql = "SELECT header FROM results" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._read(sql + " ORDER BY seq DESC LIMIT ?", (*args, max(0, min(int(limit), 10_000))))
        return [json.loads(h) for (h,) in rows]

    def get(self, sequence: int) -> dict[str, Any] | None:
        rows = self._read("SELECT header FROM results WHERE seq = ?", (int(sequence),))
        return json.loads(rows[0][0]) if rows else None

    def newest(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` headers, oldest first (the hub's picture after a restart)."""
        return list(reversed(self.search(limit=limit)))

    async def images(self, sequence: int) -> list[tuple[dict[str, Any], bytes]]:
        """From the hub's recent results when it still holds them, else from the station's backfill
        (images=true) in a worker thread; [] when neither has them."""
        if self.hub is not None:
            for r in reversed(self.hub.recent):
                if r.sequence == sequence and r.images:
                    return list(r.images)
        if self.fetch_images is None or self.get(sequence) is None:
            return []
        try:
            return await asyncio.to_thread(self.fetch_images, int(sequence))
        except Exception:   # the station is gone, busy, or refused: no images is an answer, not a crash
            return []

    def _read(self, sql: str, args: Iterable[Any]) -> list[tuple[Any, ...]]:
        with self._rlock:
            return self._r.execute(sql, tuple(args)).fetchall()

    def close(self) -> None:
        """Write the pending acknowledgements, then close both connections."""
        try:
            self.flush_acks()
        finally:
            with self._wlock:
                self._w.close()
            with self._rlock:
                self._r.close()
