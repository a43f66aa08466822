"""`inspector dataset`: the labelled, journaled parts' input crops as an MVTec-layout data set.

Split (deterministic, by sequence number, so a part never moves when more are labelled):
- a part labelled with a defect name -> test/<label>/;
- a part labelled `good` -> test/good/ when its sequence is a multiple of 5 (20 %), else train/good/
  (80 %); when that leaves test/good empty and there are at least two good parts, the newest good
  part goes to test/good so `trainer evaluate` has normals to score.
Every ROI crop of a part goes with it (the label is the part's). Files: `<split>/<label>/<seq>_<roi>.<ext>`,
the stored bytes as they are (PNG or JPEG, the model's input size), and `labels.csv` with one row per
labelled ROI crop: sequence, part_id, roi, label, score, threshold, verdict, model_id, file (empty when the
crop could not be exported). A crop cannot be exported when its image was never stored (passed parts by
default; `[state] store_images`), was removed by the image quota, or its part left the journal (retention).
The folder is written under a temporary name beside DIR and renamed at the end: a crash leaves no half data set.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector.errors import InspectorError
from inspector.state.image_store import read_image, safe_name
from inspector.state.labels import GOOD, LABEL_RE, labelled_rows, open_journal

CSV_FIELDS = ("sequence", "part_id", "roi", "label", "score", "threshold", "verdict", "model_id", "file")
REASONS = {"never_stored": "its image was never stored", "removed": "its image was removed (quota) or is unreadable",
           "pruned": "the part is no longer in the journal (retention)"}


@dataclass(frozen=True)
class DatasetOptions:
    journal: Path
    images: Path
    out: Path
    since: int | None = None
    force: bool = False


@dataclass
class Crop:
    seq: int
    roi: str
    label: str
    row: dict[str, Any]
    data: bytes | None = None
    ext: str = ""
    problem: str | None = None  # a key of REASONS
    folder: str = ""




def split_of(seq: int, label: str) -> str:
    if label != GOOD:
        return f"test/{label}"
    return "test/good" if seq % 5 == 0 else "train/good"


def _crops(row: dict[str, Any], images_dir: Path) -> list[Crop]:
    seq, label = int(row["sequence"]), str(row["label"])
    if not LABEL_RE.match(label):  # `inspector label` writes no such label: the file was edited by hand
        raise InspectorError(f"dataset: sequence {seq} is labelled {label!r}, not a folder name; label it again "
                             "with `inspector label`")
    if row["journaled"] is None:
        return [Crop(seq, "", label, row, problem="pruned")]
    scores, stored = json.loads(row["scores"]), json.loads(row["images"])
    out = []
    for roi in scores or {"": None}:
        crop = Crop(seq, roi, label, row)
        name = stored.get(f"{roi}/input")
        data = read_image(images_dir, name) if name else None
        if name is None:
            crop.problem = "never_stored"
        elif data is None or cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None:
            crop.problem = "removed"
        else:
            crop.data, crop.ext = data, Path(name).suffix.lower()
        out.append(crop)
    return out


def plan(rows: list[dict[str, Any]], images_dir: Path) -> list[Crop]:
    """Every labelled ROI crop with its folder (the split above) or the reason it cannot be exported."""
    crops = [c for r in rows for c in _crops(r, images_dir)]
    for c in crops:
        c.folder = split_of(c.seq, c.label)
    good = sorted({c.seq for c in crops if c.label == GOOD and c.data is not None})
    if len(good) >= 2 and not any(s % 5 == 0 for s in good):
        for c in crops:
            if c.seq == good[-1]:
                c.folder = "test/good"
    return crops


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InspectorError(f"dataset: --out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InspectorError(f"dataset: --out {out} exists and is not empty; pass another folder or --force "
                             "to replace it")


def _write(tmp: Path, crops: list[Crop]) -> None:
    with open(tmp / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_FIELDS)
        for c in crops:
            rel = ""
            if c.data is not None:
                rel = f"{c.folder}/{c.seq}_{safe_name(c.roi, 'roi')}{c.ext}"
                (tmp / c.folder).mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(c.data)
            scores = json.loads(c.row["scores"]) if c.row["scores"] else {}
            thresholds = json.loads(c.row["thresholds"]) if c.row["thresholds"] else {}
            writer.writerow([c.seq, c.row["part_id"] or "", c.roi, c.label, scores.get(c.roi, ""),
                             thresholds.get(c.roi, ""), c.row["verdict"] or "", c.row["model_id"] or "", rel])


def _install(tmp: Path, out: Path) -> None:
    """Rename the finished folder to `out` (an existing one is moved aside first, then deleted)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_dataset(opts: DatasetOptions) -> tuple[list[Crop], Counter[str]]:
    """Write the data set; returns the crops and the count of exported crops per folder."""
    _check_out(opts.out, opts.force)
    conn = open_journal(opts.journal, readonly=True, command="dataset")
    try:
        rows = labelled_rows(conn, opts.since)
    finally:
        conn.close()
    if not rows:
        raise InspectorError(f"dataset: no labelled parts in {opts.journal}"
                             + (f" after sequence {opts.since}" if opts.since else "")
                             + "; label some with `inspector label SEQ --as good|DEFECT`")
    crops = plan(rows, opts.images)
    if not any(c.data is not None for c in crops):
        raise InspectorError(f"dataset: none of the {len(rows)} labelled parts has a stored input image "
                             "(never stored, or removed by the quota); nothing was written")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = opts.out.with_name(f".{opts.out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write(tmp, crops)
        _install(tmp, opts.out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise InspectorError(f"dataset: cannot write {opts.out}: {exc}") from None
    return crops, Counter(c.folder for c in crops if c.data is not None)


def run_dataset(opts: DatasetOptions) -> int:
    crops, folders = export_dataset(opts)
    missing = [c for c in crops if c.problem is not None]
    for c in missing:
        roi = f" roi {c.roi}" if c.roi else ""
        print(f"not exported: sequence {c.seq}{roi} ({c.label}): {REASONS[c.problem]}")
    parts = len({c.seq for c in crops})
    problems = Counter(c.problem for c in missing)
    by_folder = ", ".join(f"{k} {v}" for k, v in sorted(folders.items()))
    not_exported = ", ".join(f"{problems[k]} {k.replace('_', ' ')}" for k in REASONS if problems[k])
    print(f"dataset {opts.out}: {sum(folders.values())} crop(s) of {parts} labelled part(s) ({by_folder}); "
          f"{len(missing)} crop(s) not exported" + (f" ({not_exported})" if missing else ""))
    if not folders.get("train/good"):
        print("note: train/good is empty: `trainer fit` needs parts labelled good with stored images")
    return 0
