"""`inspector collect`: training images as the station sees them.

A line engineer records good parts passing the camera (or points this at the live camera) and gets
their crops, cut by the same capture → trigger → crop stages the daemon runs, written as PNG files in
the data set folder layout `trainer fit` reads (DIR/train/good by default). A model trained on them has
seen the camera's optics, lighting, compression and the trigger's framing, not just still photographs.
Crops keep the ROI's full resolution; the trainer resizes them exactly as the daemon does (INTER_AREA).

With `--ground-truth CSV` (a labelled recording: known good and known bad parts), each crop goes to
DIR/test/<label> instead, an evaluation set for `trainer evaluate RUN --data DIR` seen through the
same camera; parts the CSV does not cover are skipped and counted.
"""

from __future__ import annotations

import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from common.ground_truth import TruthPart, part_at, read_ground_truth
from inspector.config import load_config
from inspector.errors import InspectorError
from inspector.logs import setup_logging
from inspector.stages.frontend import Cut, FrontEnd
from inspector.stats import Stats

LABEL_CHARS = set(string.ascii_letters + string.digits + "_-")   # a label becomes a folder name


def _labelled(truth: list[TruthPart], path: Path) -> list[TruthPart]:
    for t in truth:
        if not t.label or not set(t.label) <= LABEL_CHARS:
            raise InspectorError(f"ground truth {path}: part {t.part_id} has label {t.label!r}; labels become "
                                 "folder names: use letters, digits, _ and - (good, scratch, ...)")
    return truth


@dataclass(frozen=True)
class CollectOptions:
    source: str  # a recorded video, a camera index or a stream URL
    out: Path  # the data set folder
    config: Path | None = None  # the station's TOML file (ROIs, trigger)
    into: str = "train/good"  # sub-folder of `out`
    count: int | None = None  # stop after this many parts
    ground_truth: Path | None = None  # a labelled recording: crops go to out/test/<label>


def run_collect(opts: CollectOptions) -> int:
    """Write one PNG per triggered part and ROI to OUT/INTO (or OUT/test/<label> with ground truth);
    print how many. Returns the exit code."""
    source, out, into, count, ground_truth = opts.source, opts.out, opts.into, opts.count, opts.ground_truth
    if count is not None and count < 1:
        raise InspectorError(f"collect: --count must be >= 1, got {count}")
    parts_dir = out / into
    if Path(into).is_absolute() or ".." in Path(into).parts:
        raise InspectorError(f"collect: --into {into!r} must be a folder inside OUT, e.g. train/good")
    truth = _labelled(read_ground_truth(ground_truth), ground_truth) if ground_truth is not None else None
    if source.isdigit():
        camera: dict[str, Any] = {"source": int(source)}
    else:
        if "://" not in source and "!" not in source and not Path(source).is_file():   # not a URL or GStreamer pipeline
            raise InspectorError(f"collect: {source} is neither a video file, a device index nor a stream URL")
        camera = {"source": source}
    cfg = load_config(opts.config, {"camera": camera})
    if cfg.trigger.mode == "external":
        raise InspectorError("collect: trigger.mode is \"external\"; collect with mode \"presence\" (parts on a "
                             "belt) or \"continuous\" (every Nth frame) in the configuration")
    setup_logging("warning", cfg.logging.format, cfg.station_id, stream=sys.stderr)
    front = FrontEnd(cfg, Stats(), lossless=True)  # the daemon's capture -> trigger -> crop
    front.start()
    written = parts = unmatched = 0
    labels: dict[str, int] = {}
    try:
        for cut in front.cuts():
            folder = parts_dir
            if truth is not None:
                match = part_at(truth, cut.frame.number)
                if match is None:
                    unmatched += 1
                    continue
                folder = out / "test" / match.label
                labels[match.label] = labels.get(match.label, 0) + 1
            written += _write_crops(folder, cut)
            parts += 1
            if count is not None and parts >= count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        front.close(timeout_s=5.0)  # let it release the camera or file before the process exits
    where = parts_dir if truth is None else out / "test"
    print(f"collected {parts} parts, {written} images -> {where}")
    if truth is not None:
        print("  by label: " + ", ".join(f"{k} {n}" for k, n in sorted(labels.items()))
              + (f"; {unmatched} triggered part(s) outside every ground-truth span, skipped" if unmatched else ""))
    if parts == 0:
        print("no part was triggered: check [[rois]] and [trigger] against the video "
              "(`inspector check-config`)", file=sys.stderr)
        return 1
    return 0


def _write_crops(folder: Path, cut: Cut) -> int:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InspectorError(f"collect: cannot create {folder}: {e.strerror}") from None
    for roi, image in zip(cut.rois, cut.crops(), strict=True):
        path = folder / f"{cut.frame.number:07d}_{roi.name}.png"
        if not cv2.imwrite(str(path), image):
            raise InspectorError(f"collect: could not write {path}; check free disk space and permissions")
    return len(cut.rois)
