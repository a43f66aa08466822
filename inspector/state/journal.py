"""Result journal: every verdict in a SQLite file (WAL, synchronous=FULL) before it is published.
Sequence numbers continue across restarts; a full or read-only disk raises JournalUnavailable.

This is the writer, `Journal`, owned by the publishing thread; readers use journal_reader.JournalReader."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from inspector.state.events import EVENTS_SCHEMA
from inspector.state.journal_reader import (
    COLUMNS,
    VERDICTS,
    JournalUnavailable,
    connect,
    fault,
    header_field,
    header_seq,
    is_fault,
    query_rows,
    read_last_seq,
    rows_since,
)

SCHEMA_VERSION = 1

_SCHEMA = EVENTS_SCHEMA + """
CREATE TABLE IF NOT EXISTS verdicts (
    seq         INTEGER PRIMARY KEY,
    part_id     TEXT,
    frame       INTEGER,
    station     TEXT,
    verdict     TEXT NOT NULL CHECK (verdict IN ('pass', 'fail', 'error')),
    scores      TEXT NOT NULL,
    thresholds  TEXT NOT NULL,
    capture_ts  REAL,
    publish_ts  REAL,
    model_id    TEXT,
    header_json TEXT NOT NULL,
    images      TEXT NOT NULL,
    journal_ts  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_by_verdict ON verdicts (verdict, seq);
CREATE INDEX IF NOT EXISTS verdicts_by_time ON verdicts (journal_ts);
CREATE TABLE IF NOT EXISTS starts (
    start_id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts       REAL NOT NULL,
    pid      INTEGER NOT NULL,
    model_id TEXT,
    last_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0);
"""

# The shadow model's verdict of the same part ([shadow] model; NULL without one): added to an older journal
# file when it is opened (`add_shadow_columns`). Scores and thresholds are JSON objects per ROI, as `scores`.
SHADOW_COLUMNS = ("shadow_model_id", "shadow_verdict", "shadow_scores", "shadow_thresholds", "shadow_error")
_INSERT = (f"INSERT INTO verdicts ({COLUMNS}, {', '.join(SHADOW_COLUMNS)}) "
           f"VALUES ({', '.join('?' * (13 + len(SHADOW_COLUMNS)))})")
_PRUNE_CHUNK = 5000


def _roi_values(header: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scores and thresholds per ROI from `rois` (dict or list of dicts) or `scores`/`thresholds`."""
    rois = header.get("rois")
    if isinstance(rois, Mapping):
        items = [(str(k), v) for k, v in rois.items() if isinstance(v, Mapping)]
    elif isinstance(rois, list):
        items = [(str(v.get("name", i)), v) for i, v in enumerate(rois) if isinstance(v, Mapping)]
    else:
        return dict(header.get("scores") or {}), dict(header.get("thresholds") or {})
    return ({k: v.get("score") for k, v in items}, {k: v.get("threshold") for k, v in items})


def add_shadow_columns(conn: sqlite3.Connection) -> list[str]:
    """Add the SHADOW_COLUMNS an older journal file lacks (nullable: its rows have no shadow); the names added."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(verdicts)")}
    added = [c for c in SHADOW_COLUMNS if c not in have]
    for column in added:
        conn.execute(f"ALTER TABLE verdicts ADD COLUMN {column} TEXT")
    return added


def _shadow_values(shadow: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """The SHADOW_COLUMNS of a `shadow` topic header (stages/shadow.py), all None without one."""
    if shadow is None:
        return (None,) * len(SHADOW_COLUMNS)
    rois = [r for r in shadow.get("rois") or [] if isinstance(r, Mapping)]
    return (shadow.get("model_id"), shadow.get("verdict"),
            json.dumps({str(r.get("name")): r.get("score") for r in rois}),
            json.dumps({str(r.get("name")): r.get("threshold") for r in rois}), shadow.get("error"))


def _row_values(header: Mapping[str, Any], images: Mapping[str, str], raw: str,
                now: float, shadow: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
    seq, verdict = header_seq(header), header.get("verdict")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError(f"header sequence must be an integer >= 1, got {seq!r}")
    if verdict not in VERDICTS:
        raise ValueError(f"header verdict must be one of {VERDICTS}, got {verdict!r}")
    scores, thresholds = _roi_values(header)
    return (seq, header.get("part_id"), header.get("frame"), header_field(header, "station_id"), verdict,
            json.dumps(scores), json.dumps(thresholds), header_field(header, "captured_at"),
            header_field(header, "published_at"), header.get("model_id"), raw, json.dumps(dict(images)), now,
            *_shadow_values(shadow))


class Journal:
    """The only writer of a journal file.

    Ownership: a Journal belongs to one thread, the one that publishes; its connection is opened by
    the first call (construction never touches the disk) and sqlite3 refuses use from any other
    thread. Readers (backfill, history) open a `JournalReader` each, in the thread that uses it.

    Durability: WAL with synchronous=FULL fsyncs the WAL at every commit, so a verdict whose append
    returned survives a power cut, not only a crash. With NORMAL the last commits before a power cut
    can roll back: last_seq() would go backwards and the next start would publish sequence numbers
    that subscribers have already seen with other contents. The price is one fsync per commit
    (3.7 ms on this project's ext4 VM disk, against 0.13 ms with NORMAL); `append_many` journals a
    whole batch with one (35 us a row for 800). synchronous="NORMAL" is for replays and tests, where
    a power cut loses nothing that matters.
    """

    def __init__(self, path: str | Path, retention_days: float = 30.0, retention_rows: int = 1_000_000,
                 *, backlog: int = 10_000, retry_s: float = 1.0, prune_every: int = 1000,
                 synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        self.synchronous = synchronous
        self.path = Path(path)
        self.retention_days = retention_days
        self.retention_rows = retention_rows
        self.retry_s = retry_s
        self.prune_every = prune_every
        self._conn: sqlite3.Connection | None = None
        self._pending: deque[tuple[Any, ...]] = deque(maxlen=backlog)
        self._last_seq: int | None = None
        self._failed_at = float("-inf")
        self._since_prune = 0
        self.counters = {"appended": 0, "faults": 0, "dropped": 0, "conflicts": 0, "pruned": 0}
        self.last_error: str | None = None

    # -- connection and fault handling -------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if time.monotonic() - self._failed_at < self.retry_s:
            raise JournalUnavailable(f"journal {self.path}: still unavailable ({self.last_error})")
        try:
            conn = connect(self.path, readonly=False)
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # effective only on a new file
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA journal_size_limit = 8388608")
            conn.executescript(_SCHEMA)
            add_shadow_columns(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db_last = read_last_seq(conn)
        except (sqlite3.Error, OSError) as exc:
            raise self._failed(exc) from exc  # a new connection: any error here is the disk's
        self._conn = conn
        self._last_seq = max(db_last, self._last_seq or 0)
        return conn

    def _failed(self, exc: BaseException) -> JournalUnavailable:
        """Count the fault, drop the connection (reopened after retry_s) and build the exception.
        Misuse (wrong thread, constraint violations) is re-raised as it is, after a rollback."""
        if not is_fault(exc):
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.rollback()
            raise exc
        err = fault(exc, self.path)
        self.counters["faults"] += 1
        self.last_error = str(err)
        self._failed_at = time.monotonic()
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None
        return err

    def _write(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> int:
        """Run statements in one IMMEDIATE transaction (all or nothing); returns the last rowid."""
        conn = self._open()
        try:
            conn.execute("BEGIN IMMEDIATE")
            cursor = None
            for sql, args in statements:
                cursor = conn.execute(sql, args)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        return int(cursor.lastrowid or 0) if cursor is not None else 0

    # -- writing -------------------------------------------------------------------------------
    def append(self, header: Mapping[str, Any], images: Mapping[str, str] | None = None,
               *, raw: str | bytes | None = None) -> None:
        """Journal one verdict durably; call it before publishing. See `append_many`."""
        self.append_many([(header, images or {}, raw)])

    def append_many(self, items: Sequence[tuple[Mapping[str, Any], Mapping[str, str], str | bytes | None]
                                          | tuple[Mapping[str, Any], Mapping[str, str], str | bytes | None,
                                                  Mapping[str, Any] | None]]) -> None:
        """Journal verdicts in one commit. `raw` is the exact header JSON that is published
        (default: json.dumps(header)); an optional fourth item is the part's `shadow` header, kept in the
        shadow columns. Sequence numbers must increase (ValueError otherwise).

        On JournalUnavailable the rows are not durable: they wait in memory (up to `backlog`, the
        oldest dropped beyond) and are written, in order, with the next successful append or flush().
        """
        now = time.time()
        rows = [_row_values(item[0], item[1], _raw_text(item[0], item[2]), now, item[3] if len(item) > 3 else None)
                for item in items]
        self._check_order(rows)
        for row in rows:
            if len(self._pending) == self._pending.maxlen:
                self.counters["dropped"] += 1
            self._pending.append(row)
        self._last_seq = max(self._last_seq or 0, rows[-1][0]) if rows else self._last_seq
        self.flush()
        self._since_prune += len(rows)
        if self.prune_every and self._since_prune >= self.prune_every:
            with contextlib.suppress(JournalUnavailable):  # the rows are in; the fault is counted
                self.prune()

    def _check_order(self, rows: list[tuple[Any, ...]]) -> None:
        if self._last_seq is None:
            try:
                self._open()
            except JournalUnavailable:
                self._last_seq = 0
        previous = self._last_seq or 0
        for row in rows:
            if row[0] <= previous:
                raise ValueError(f"seq {row[0]} does not follow {previous}: sequence numbers must increase")
            previous = row[0]

    def flush(self) -> int:
        """Write rows held back by an earlier fault; returns how many were written."""
        if not self._pending:
            return 0
        try:
            db_last = read_last_seq(self._open())
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        while self._pending and self._pending[0][0] <= db_last:  # numbered before the journal was readable
            self._pending.popleft()
            self.counters["conflicts"] += 1
        rows = list(self._pending)
        if not rows:
            return 0
        statements = [(_INSERT, row) for row in rows]
        statements.append(("UPDATE meta SET value = max(value, ?) WHERE key = 'last_seq'", (rows[-1][0],)))
        self._write(statements)
        self._pending.clear()
        self.counters["appended"] += len(rows)
        return len(rows)

    def record_start(self, pid: int, model_id: str | None) -> int:
        """Record a daemon start (for the status topic's restart announcement); returns start_id."""
        return self._write([("INSERT INTO starts (ts, pid, model_id, last_seq) VALUES (?, ?, ?, ?)",
                             (time.time(), pid, model_id, self.last_seq()))])

    def prune(self, now: float | None = None) -> int:
        """Delete rows older than retention_days and beyond the newest retention_rows; returns the count."""
        self._since_prune = 0
        cutoff = (time.time() if now is None else now) - self.retention_days * 86400.0
        deleted = self._delete_chunks("journal_ts < ?", cutoff)
        try:
            newest_to_delete = self._open().execute(
                "SELECT seq FROM verdicts ORDER BY seq DESC LIMIT 1 OFFSET ?", (self.retention_rows,)).fetchone()
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        if newest_to_delete is not None:
            deleted += self._delete_chunks("seq <= ?", newest_to_delete[0])
        if deleted:
            self._maintain()
        self.counters["pruned"] += deleted
        return deleted

    def _delete_chunks(self, where: str, arg: float) -> int:
        """Delete in chunks so a large prune never holds the write lock for long."""
        total = 0
        while True:
            before = self._open().total_changes
            self._write([(f"DELETE FROM verdicts WHERE seq IN (SELECT seq FROM verdicts WHERE {where} "
                          f"ORDER BY seq LIMIT {_PRUNE_CHUNK})", (arg,))])
            changed = self._open().total_changes - before
            total += changed
            if changed < _PRUNE_CHUNK:
                return total

    def _maintain(self) -> None:
        try:
            conn = self._open()
            conn.execute("PRAGMA incremental_vacuum").fetchall()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    # -- reading (owner thread) ------------------------------------------------------------------
    def last_seq(self) -> int:
        """The newest sequence number journaled (or held back); 0 for a new journal."""
        self._open()
        return int(self._last_seq or 0)

    def start_seq(self) -> tuple[int, bool]:
        """The first sequence number of this run and whether it came from the journal.

        last_seq() + 1 normally. When the journal cannot be read, milliseconds since the epoch: a
        jump subscribers see as a gap, but never a number they have already seen (the status topic
        should say why).
        """
        try:
            return self.last_seq() + 1, True
        except JournalUnavailable:
            return int(time.time() * 1000), False

    def since(self, seq: int, limit: int = 1000) -> Iterator[dict[str, Any]]:
        """Rows with seq > `seq`, in order, at most `limit`."""
        return iter(rows_since(self._open(), seq, limit))

    def query(self, since: int | None = None, verdict: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        return query_rows(self._open(), since, verdict, limit)

    def stats(self) -> dict[str, Any]:
        """Counters for the status topic."""
        return {**self.counters, "available": self._conn is not None, "pending": len(self._pending),
                "last_seq": self._last_seq or 0, "last_error": self.last_error}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _raw_text(header: Mapping[str, Any], raw: str | bytes | None) -> str:
    if raw is None:
        return json.dumps(header)
    return raw.decode("utf-8") if isinstance(raw, bytes) else raw


class _Store(Protocol):
    def save_published(self, header: Mapping[str, Any], images: Sequence[bytes]) -> dict[str, str]: ...


def publish_hook(journal: Journal, store: _Store | None = None) -> Callable[[dict[str, Any], list[bytes]], None]:
    """A per-result `before_publish` hook: store a failed part's images, then journal the header.
    Raises JournalUnavailable, which the publisher logs and counts (one line per part).

    The daemon does not use it: `inspector.state.recorder.Recorder` journals a whole batch in one commit,
    stores images whatever is sent, and logs a fault once when it starts and once when it ends."""
    def journal_result(header: dict[str, Any], images: list[bytes]) -> None:
        names = store.save_published(header, images) if store is not None else {}
        journal.append(header, names)
    return journal_result
