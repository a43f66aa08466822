"""Reading the result journal (journal.py writes it): the verdicts table's columns, the queries, and
`JournalReader`, the read-only connection of the threads that never write (backfill server, history).

A journal that cannot be opened or read raises JournalUnavailable, here and in the writer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

VERDICTS = ("pass", "fail", "error")
COLUMNS = ("seq, part_id, frame, station, verdict, scores, thresholds, capture_ts, publish_ts, "
           "model_id, header_json, images, journal_ts")
# Header fields (docs/protocol.md names) -> the names the journal's columns use.
_ALIASES = {"sequence": "seq", "station_id": "station", "captured_at": "capture_ts", "published_at": "publish_ts"}


class JournalUnavailable(Exception):
    """The journal cannot be opened or written (disk full, read-only, I/O error, path invalid)."""


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are explicit)."""
    if readonly:
        target, uri = f"file:{quote(str(path.resolve()))}?mode=ro", True
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        target, uri = str(path), False
    conn = sqlite3.connect(target, uri=uri, isolation_level=None, timeout=2.0)
    conn.row_factory = sqlite3.Row
    return conn


def is_fault(exc: BaseException) -> bool:
    """A fault of the disk or the file (full, read-only, I/O, corrupt), not a misuse of the API."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, sqlite3.Error) and not isinstance(
        exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.IntegrityError))


def fault(exc: BaseException, path: Path) -> JournalUnavailable:
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return JournalUnavailable(f"journal {path}: {name}: {exc}")


def header_field(header: Mapping[str, Any], name: str) -> Any:
    """A header field by its docs/protocol.md name, or by the journal column's name."""
    return header.get(name, header.get(_ALIASES.get(name, name)))


def header_seq(header: Mapping[str, Any]) -> Any:
    """The sequence number of a result header (`sequence`, or `seq`)."""
    return header_field(header, "sequence")


def _to_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("scores", "thresholds", "images"):
        out[key] = json.loads(out[key])
    return out


def read_last_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0])


def rows_since(conn: sqlite3.Connection, seq: int, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT {COLUMNS} FROM verdicts WHERE seq > ? ORDER BY seq LIMIT ?",
                        (seq, limit)).fetchall()
    return [_to_dict(r) for r in rows]


def query_rows(conn: sqlite3.Connection, since: int | None, verdict: str | None,
               limit: int) -> list[dict[str, Any]]:
    """Rows after `since` in order, or with since=None the newest `limit` rows (still in order)."""
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    where, args = ["1"], []
    if verdict is not None:
        where.append("verdict = ?")
        args.append(verdict)
    if since is not None:
        where.append("seq > ?")
        args.append(since)
    order = "ASC" if since is not None else "DESC"
    sql = f"SELECT {COLUMNS} FROM verdicts WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT ?"
    rows = [_to_dict(r) for r in conn.execute(sql, (*args, limit)).fetchall()]
    return rows if since is not None else rows[::-1]


class JournalReader:
    """A read-only connection for one thread (backfill server, history). Never writes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = connect(self.path, readonly=True)
                conn.execute("SELECT 1 FROM verdicts LIMIT 1").fetchall()
            except (sqlite3.Error, OSError) as exc:
                raise fault(exc, self.path) from exc
            self._conn = conn
        return self._conn

    def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(self._open(), *args)
        except sqlite3.Error as exc:
            self.close()
            raise fault(exc, self.path) from exc

    def last_seq(self) -> int:
        return int(self._run(read_last_seq))

    def since(self, seq: int, limit: int = 1000) -> Iterator[dict[str, Any]]:
        return iter(self._run(rows_since, seq, limit))

    def query(self, since: int | None = None, verdict: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        return list(self._run(query_rows, since, verdict, limit))

    def starts(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest daemon starts, newest first."""
        rows = self._run(lambda c: c.execute("SELECT * FROM starts ORDER BY start_id DESC LIMIT ?",
                                             (limit,)).fetchall())
        return [dict(r) for r in rows]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
