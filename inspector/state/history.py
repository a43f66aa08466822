"""`inspector history`: journaled verdicts, filtered, as a table or JSON lines.
cli.py parses the arguments into HistoryOptions and calls run_history(options)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.state.journal_reader import JournalReader, JournalUnavailable

DEFAULT_JOURNAL = Path("/var/lib/inspector/journal.db")  # systemd StateDirectory=inspector
_COLUMNS = ("seq", "captured (UTC)", "part", "verdict", "worst ROI score/threshold", "model", "images")


@dataclass(frozen=True)
class HistoryOptions:
    journal: Path = DEFAULT_JOURNAL
    since: int | None = None  # verdicts after this sequence number; None: the newest `limit`
    verdict: str | None = None  # only this verdict (pass, fail, error)
    limit: int = 100
    as_json: bool = False  # JSON lines instead of a table


def history(journal_path: str | Path, since: int | None = None, verdict: str | None = None,
            limit: int = 100) -> list[dict[str, Any]]:
    """Rows after `since` (or the newest `limit` rows), oldest first; raises JournalUnavailable."""
    reader = JournalReader(journal_path)
    try:
        return reader.query(since=since, verdict=verdict, limit=limit)
    finally:
        reader.close()


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def _worst_roi(row: dict[str, Any]) -> str:
    """The ROI with the highest score relative to its threshold, as `name score/threshold`."""
    best: tuple[float, str] | None = None
    for name, score in row["scores"].items():
        threshold = row["thresholds"].get(name)
        if score is None:
            continue
        ratio = score / threshold if threshold else float(score)
        text = f"{name} {score:.4g}/{threshold:.4g}" if threshold is not None else f"{name} {score:.4g}"
        if best is None or ratio > best[0]:
            best = (ratio, text)
    return best[1] if best else "-"


def format_row(row: dict[str, Any]) -> list[str]:
    return [str(row["seq"]), _when(row["capture_ts"]), str(row["part_id"] if row["part_id"] is not None else "-"),
            row["verdict"], _worst_roi(row), str(row["model_id"] or "-"), str(len(row["images"]))]


def format_table(rows: list[dict[str, Any]]) -> str:
    """An aligned text table, one line per verdict, with a header line."""
    cells = [list(_COLUMNS)] + [format_row(r) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells)


def format_json_lines(rows: list[dict[str, Any]]) -> str:
    """One JSON object per verdict: the journal's columns, with the published header parsed."""
    out = []
    for row in rows:
        item = {k: v for k, v in row.items() if k != "header_json"}
        item["header"] = json.loads(row["header_json"])
        out.append(json.dumps(item))
    return "\n".join(out)


def run_history(options: HistoryOptions) -> int:
    """Print the rows; exit code 0, or 1 (one line on stderr) when the journal cannot be read."""
    try:
        rows = history(options.journal, since=options.since, verdict=options.verdict, limit=options.limit)
    except JournalUnavailable as exc:
        print(f"inspector history: cannot read the journal: {exc}", file=sys.stderr)
        return 1
    text = format_json_lines(rows) if options.as_json else format_table(rows)
    if text:
        print(text)
    return 0
