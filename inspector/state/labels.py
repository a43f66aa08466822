"""Operator labels of journaled parts (`inspector label`), kept in the journal's own SQLite file.

`labels` holds each part's current label (one row per sequence number); `label_history` keeps every label
ever written, in order, the current one included (an audit trail: a later label replaces the row in
`labels`, never the history). Both tables are created by the first `inspector label`, inside the same
transaction as its labels. The daemon's Journal never touches them; they live beside `verdicts` so a
label cannot name a part the station did not inspect, and a copy of journal.db carries its labels.

All the sequences of one command are written in ONE `BEGIN IMMEDIATE` transaction: every one of them must
be in the journal, or nothing is written (not even the tables). The daemon may be writing at the same
time (WAL): the transaction waits up to `BUSY_TIMEOUT_MS` for the writer's lock.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from inspector.errors import InspectorError

GOOD = "good"
LABEL_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
BUSY_TIMEOUT_MS = 10_000
MAX_TEXT = 500  # --by and --note

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    sequence    INTEGER PRIMARY KEY,
    label       TEXT NOT NULL,
    labelled_by TEXT,
    note        TEXT,
    labelled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS label_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sequence    INTEGER NOT NULL,
    label       TEXT NOT NULL,
    labelled_by TEXT,
    note        TEXT,
    labelled_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS label_history_by_sequence ON label_history (sequence, id);
"""


@dataclass(frozen=True)
class LabelOptions:
    journal: Path
    sequences: tuple[str, ...]   # as typed: checked here
    label: str
    by: str | None = None
    note: str | None = None


def check_label(label: str) -> str:
    """`good` or a defect name usable as a folder name (letters, digits, _ and -, at most 32)."""
    if not LABEL_RE.match(label):
        raise InspectorError(f"label: --as {label!r} is neither `good` nor a defect name (letters, digits, "
                             "_ and -, at most 32 characters)")
    if label.lower() == GOOD and label != GOOD:
        raise InspectorError(f"label: --as {label!r}: write `good` in lower case (it is not a defect name)")
    return label


def parse_sequences(texts: Sequence[str]) -> list[int]:
    """Sequence numbers as typed -> distinct integers >= 1, in the order given."""
    out: list[int] = []
    for text in texts:
        try:
            seq = int(text)
        except ValueError:
            raise InspectorError(f"label: {text!r} is not a sequence number (an integer >= 1)") from None
        if seq < 1:
            raise InspectorError(f"label: {text!r} is not a sequence number (an integer >= 1)")
        if seq not in out:
            out.append(seq)
    return out


def _check_text(name: str, value: str | None) -> str | None:
    if value is not None and (len(value) > MAX_TEXT or not value.isprintable()):
        raise InspectorError(f"label: {name} must be printable text of at most {MAX_TEXT} characters")
    return value


def open_journal(path: Path, *, readonly: bool, command: str) -> sqlite3.Connection:
    """A connection to an existing journal (never creates one); InspectorError when it cannot be used."""
    if not path.is_file():
        raise InspectorError(f"{command}: no journal at {path}; pass --state DIR or --config FILE of the station")
    try:
        target = f"file:{quote(str(path.resolve()))}?mode={'ro' if readonly else 'rw'}"
        conn = sqlite3.connect(target, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("SELECT 1 FROM verdicts LIMIT 1").fetchall()
    except (sqlite3.Error, OSError) as exc:
        raise InspectorError(f"{command}: cannot open the journal {path}: {exc}") from None
    return conn


def write_labels(opts: LabelOptions) -> int:
    """Label every given sequence in one transaction; returns how many. InspectorError: nothing written."""
    label = check_label(opts.label)
    seqs = parse_sequences(opts.sequences)
    by, note = _check_text("--by", opts.by), _check_text("--note", opts.note)
    conn = open_journal(opts.journal, readonly=False, command="label")
    now = time.time()
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            marks = ",".join("?" * len(seqs))
            found = {r[0] for r in conn.execute(f"SELECT seq FROM verdicts WHERE seq IN ({marks})", seqs)}
            missing = [s for s in seqs if s not in found]
            if missing:
                raise InspectorError(f"label: sequence(s) {', '.join(map(str, missing))} not in the journal "
                                     f"{opts.journal} (never inspected, or pruned); nothing was labelled")
            for statement in filter(str.strip, SCHEMA.split(";")):
                conn.execute(statement)
            rows = [(s, label, by, note, now) for s in seqs]
            conn.executemany("INSERT INTO label_history (sequence, label, labelled_by, note, labelled_at) "
                             "VALUES (?, ?, ?, ?, ?)", rows)
            conn.executemany("INSERT OR REPLACE INTO labels (sequence, label, labelled_by, note, labelled_at) "
                             "VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise InspectorError(f"label: cannot write to the journal {opts.journal}: {exc}; nothing was labelled") \
            from None
    finally:
        conn.close()
    return len(seqs)


def run_label(opts: LabelOptions) -> int:
    n = write_labels(opts)
    print(f"labelled {n} part(s) {opts.label} in {opts.journal}")
    return 0


def labelled_rows(conn: sqlite3.Connection, since: int | None) -> list[dict[str, Any]]:
    """Every current label after `since` with its verdict row's columns (None where the row was pruned)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'labels'").fetchone() is None:
        return []
    rows = conn.execute(
        "SELECT l.sequence, l.label, v.seq AS journaled, v.part_id, v.verdict, v.scores, v.thresholds, "
        "v.model_id, v.images FROM labels l LEFT JOIN verdicts v ON v.seq = l.sequence "
        "WHERE l.sequence > ? ORDER BY l.sequence", (since or 0,)).fetchall()
    return [dict(r) for r in rows]
