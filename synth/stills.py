"""The still-image data set in MVTec layout: train/good, test/<kind>, ground_truth/<kind> masks, test_index.csv."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.errors import DataError
from synth.defects import DEFECTS
from synth.lines import Line, MetalLine
from synth.spec import sample_lighting

MARKER = "synth.json"  # written last; marks a folder that synth may overwrite
_NAME_RE = re.compile(r"^\d+(_mask)?\.png$")


@dataclass(frozen=True)
class SplitItem:
    kind: str
    index: int
    severity: float | None


def plan_test_split(n_test: int, defects: tuple[str, ...] = DEFECTS) -> dict[str, int]:
    """About half good, the rest shared round-robin among the defect types (kinds with 0 are left out)."""
    n_bad = n_test // 2
    plan = {"good": n_test - n_bad}
    for i, kind in enumerate(defects):
        n = n_bad // len(defects) + (1 if i < n_bad % len(defects) else 0)
        if n:
            plan[kind] = n
    return plan


def _severities(seed: int, kind_id: int, n: int) -> np.ndarray:
    """Stratified over [0, 1) so every class spans subtle to obvious, in shuffled order."""
    rng = np.random.default_rng([seed, 2, kind_id])
    return (rng.permutation(n) + rng.uniform(size=n)) / n


def prepare_dir(out: Path) -> None:
    """Create OUT; refuse a folder holding a data set synth did not write; clear our own stale images."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".synth-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(f"cannot write to {out} ({e.strerror or e}); choose a writable output folder") from None
    has_data = any((out / d).exists() for d in ("train", "test", "ground_truth"))
    if has_data and not (out / MARKER).is_file():
        raise DataError(f"{out} already holds a data set that trainer synth did not write; choose a new folder")
    for sub in ("train", "test", "ground_truth"):
        for folder in (out / sub).glob("*/"):
            for f in folder.glob("*.png"):
                if _NAME_RE.match(f.name):
                    f.unlink()
            if not any(folder.iterdir()):  # an empty class folder would fail to load
                folder.rmdir()


def write_stills(out: Path, *, seed: int, size: int, n_train: int, n_test: int, rotation: float,
                 line: Line | None = None) -> None:
    """Write the training images, the test images with their masks, and the test index into OUT."""
    line = line or MetalLine()
    _write_train(out, seed, size, n_train, rotation, line)
    items = _write_test(out, seed, size, n_test, rotation, line)
    _write_index(out, items)


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise DataError(f"could not write {path}; check free disk space and permissions")


def _write_train(out: Path, seed: int, size: int, n: int, rotation: float, line: Line) -> None:
    for i in range(n):
        rng = np.random.default_rng([seed, 0, i])
        light = sample_lighting(rng)
        image, _ = line.image(line.sample(rng, size, None, None, rotation), light, size)
        _write_png(out / "train" / "good" / f"{i:03d}.png", image)


def _write_test(out: Path, seed: int, size: int, n_test: int, rotation: float, line: Line) -> list[SplitItem]:
    items: list[SplitItem] = []
    for kind, n in plan_test_split(n_test, line.defects).items():
        kind_id = ("good", *line.defects).index(kind)  # fixed, so a class's images do not depend on n_test
        severities = _severities(seed, kind_id, n)
        for i in range(n):
            rng = np.random.default_rng([seed, 1, kind_id, i])
            light = sample_lighting(rng)
            defect = None if kind == "good" else kind
            sev = None if defect in (None, "flip") else float(severities[i])
            image, mask = line.image(line.sample(rng, size, defect, sev or 0.0, rotation), light, size)
            _write_png(out / "test" / kind / f"{i:03d}.png", image)
            if defect:
                _write_png(out / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
            items.append(SplitItem(kind, i, sev))
    return items


def _write_index(out: Path, items: list[SplitItem]) -> None:
    """OUT/test_index.csv: every test image with its kind and severity (empty for good and flip)."""
    with (out / "test_index.csv").open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "kind", "severity"])
        for it in items:
            sev = "" if it.severity is None else f"{it.severity:.3f}"
            w.writerow([f"test/{it.kind}/{it.index:03d}.png", it.kind, sev])
