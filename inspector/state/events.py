"""The journal's `events` table: model lifecycle events (inspector/models/loader.py), one row each.

kind 'model_swap': the production model changed between two batches; verdicts with seq <= last_seq were
decided by old_model_id (or earlier ones), those after it by new_model_id. kind 'model_refused': a reload
failed and the running model (old_model_id) kept deciding; new_model_id is the refused one when its
manifest could be read. `detail` is JSON (path, reason, agreement, what triggered it).

The table is created with every journal (journal.py's schema). Events are written by the loader's
thread in their own short transaction on a short-lived connection: the publisher's `Journal` belongs
to the publishing thread.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inspector.state.journal_reader import connect, fault

EVENT_KINDS = ("model_swap", "model_refused")
EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    ts           REAL NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('model_swap', 'model_refused')),
    old_model_id TEXT,
    new_model_id TEXT,
    detail       TEXT NOT NULL,
    last_seq     INTEGER
);
"""


def record_event(path: str | Path, kind: str, old_model_id: str | None, new_model_id: str | None,
                 detail: Mapping[str, Any], last_seq: int | None, *, synchronous: str = "FULL") -> int:
    """Journal one event in its own transaction; its id. JournalUnavailable when the file cannot be written."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"event kind must be one of {EVENT_KINDS}, got {kind!r}")
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
    path = Path(path)
    try:
        conn = connect(path, readonly=False)
    except (sqlite3.Error, OSError) as exc:
        raise fault(exc, path) from exc
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.executescript(EVENTS_SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        cursor = conn.execute(
            "INSERT INTO events (ts, kind, old_model_id, new_model_id, detail, last_seq) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), kind, old_model_id, new_model_id, json.dumps(dict(detail), default=str), last_seq))
        conn.execute("COMMIT")
        return int(cursor.lastrowid or 0)
    except (sqlite3.Error, OSError) as exc:
        raise fault(exc, path) from exc
    finally:
        conn.close()


def read_events(path: str | Path, limit: int = 100) -> list[dict[str, Any]]:
    """The oldest `limit` events in order (detail parsed); [] when the journal has none or no table."""
    conn = connect(Path(path), readonly=True)
    try:
        rows = conn.execute("SELECT * FROM events ORDER BY id LIMIT ?", (limit,)).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]
