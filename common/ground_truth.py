"""The ground-truth CSV of a recorded video (what `trainer synth --video` writes):
`part_id,first_frame,last_frame,center_frame,label`, label `good` or a defect type."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common.errors import DataError


@dataclass(frozen=True)
class TruthPart:
    part_id: str
    first_frame: int
    last_frame: int
    center_frame: int
    label: str  # "good" or the defect type


COLUMNS = ("part_id", "first_frame", "last_frame", "center_frame", "label")


def write_ground_truth(path: Path, parts: Iterable[TruthPart]) -> None:
    """The CSV with its header, one row per part in the order given."""
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for p in parts:
            w.writerow([p.part_id, p.first_frame, p.last_frame, p.center_frame, p.label])


def read_ground_truth(path: Path) -> list[TruthPart]:
    need = list(COLUMNS)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in need if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"ground truth {path}: missing column(s) {missing}; expected header {','.join(need)}")
            return [TruthPart(r["part_id"], int(r["first_frame"]), int(r["last_frame"]), int(r["center_frame"]),
                              r["label"].strip()) for r in reader]
    except OSError as e:
        raise DataError(f"ground truth {path}: {e.strerror}") from None
    except ValueError as e:
        raise DataError(f"ground truth {path}: {e}") from None


def part_at(truth: list[TruthPart], frame: int) -> TruthPart | None:
    """The part whose [first_frame, last_frame] holds `frame`, or None."""
    return next((t for t in truth if t.first_frame <= frame <= t.last_frame), None)
