"""How far a new model agrees with the running one, on the newest journaled parts whose crops are stored.

The journal row holds the running model's verdict; the image store holds the part's model input crop
(`<roi>/input`) for failed parts and, with `[state] store_passed_every`, a sample of passed ones. The
new model scores those crops (in the loader's thread: the running engine is never called) and decides
them with its own thresholds. Only rows decided by the running model count.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engines import Engine
from engines.base import infer_in_batches
from inspector.state.image_store import read_image
from inspector.state.journal_reader import connect

MAX_DISAGREE_LISTED = 20
SCAN_FACTOR = 50  # rows looked at per wanted part, at least MIN_SCAN: a bounded read on a big journal
MIN_SCAN = 2000


@dataclass(frozen=True)
class JournaledPart:
    seq: int
    verdict: str  # the running model's: "pass" | "fail"
    crops: list[np.ndarray]  # one per ROI, in ROI order, model input (H×W×C uint8)


def journaled_parts(journal_file: Path | None, images_dir: Path | None, model_id: str, roi_names: list[str],
                    input_shape: tuple[int, int, int], n: int) -> list[JournaledPart]:
    """The newest `n` parts decided by `model_id` whose every ROI's input crop is still stored, newest first.
    An unreadable journal or image is skipped, never raised: agreement is a report, not a gate."""
    if journal_file is None or images_dir is None or n <= 0 or not journal_file.exists():
        return []
    try:
        conn = connect(journal_file, readonly=True)
    except (sqlite3.Error, OSError):
        return []
    try:  # the rows first, the connection closed: no read snapshot held while crops are decoded
        rows = conn.execute(
            "SELECT seq, verdict, images FROM (SELECT seq, verdict, images, model_id FROM verdicts "
            "ORDER BY seq DESC LIMIT ?) WHERE model_id = ? AND verdict IN ('pass', 'fail') AND images != '{}' "
            "ORDER BY seq DESC",
            (max(MIN_SCAN, SCAN_FACTOR * n), model_id)).fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        conn.close()
    out: list[JournaledPart] = []
    for seq, verdict, images in rows:
        try:
            crops = _crops(images_dir, json.loads(images), roi_names, input_shape)
        except ValueError:
            continue
        if crops is not None:
            out.append(JournaledPart(int(seq), str(verdict), crops))
            if len(out) >= n:
                break
    return out


def _crops(images_dir: Path, names: dict[str, str], roi_names: list[str],
           input_shape: tuple[int, int, int]) -> list[np.ndarray] | None:
    crops = []
    for roi in roi_names:
        name = names.get(f"{roi}/input")
        data = read_image(images_dir, name) if name else None
        if data is None:
            return None
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            return None
        if img.ndim == 2:
            img = img[..., None]
        if tuple(img.shape) != tuple(input_shape) or img.dtype != np.uint8:
            return None
        crops.append(img)
    return crops


def agreement(engine: Engine, thresholds: dict[str, float], roi_names: list[str],
              parts: list[JournaledPart]) -> dict[str, Any]:
    """Score the parts with `engine`, decide them with `thresholds`; agreement with the journaled verdicts.

    {"n", "agree", "fraction", "old": {"pass", "fail"}, "new": {"pass", "fail", "error"}, "disagree": [seq…]}
    """
    old = {"pass": sum(p.verdict == "pass" for p in parts), "fail": sum(p.verdict == "fail" for p in parts)}
    new = {"pass": 0, "fail": 0, "error": 0}
    report: dict[str, Any] = {"n": len(parts), "agree": 0, "fraction": None, "old": old, "new": new,
                              "disagree": []}
    if not parts:
        report["note"] = ("no stored crops of parts the running model decided (the image store keeps failed "
                          "parts; [state] store_passed_every adds passed ones)")
        return report
    scores = infer_in_batches(engine, np.stack([c for p in parts for c in p.crops])).scores
    k = len(roi_names)
    for i, part in enumerate(parts):
        roi_scores = [float(s) for s in scores[i * k:(i + 1) * k]]
        if not all(math.isfinite(s) for s in roi_scores):
            verdict = "error"
        else:
            verdict = "fail" if any(s > thresholds[r] for s, r in zip(roi_scores, roi_names, strict=True)) else "pass"
        new[verdict] += 1
        if verdict == part.verdict:
            report["agree"] += 1
        elif len(report["disagree"]) < MAX_DISAGREE_LISTED:
            report["disagree"].append(part.seq)
    report["fraction"] = round(report["agree"] / len(parts), 4)
    return report
