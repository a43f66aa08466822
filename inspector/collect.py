"""`inspector collect`: training images as the station sees them.

A line engineer records good parts passing the camera (or points this at the live camera) and gets
their crops, cut by the same capture → trigger → crop stages the daemon runs, written as PNG files in
the data set folder layout `trainer fit` reads (DIR/train/good by default). A model trained on them has
seen the camera's optics, lighting, compression and the trigger's framing, not just still photographs.
Crops keep the ROI's full resolution; the trainer resizes them exactly as the daemon does (INTER_AREA).
"""

from __future__ import annotations

import queue
import sys
from pathlib import Path
from typing import Any

import cv2
import structlog

from inspector.capture import END, Capture
from inspector.config import load_config
from inspector.crop import check_rois, crop, resolve_rois
from inspector.errors import InspectorError
from inspector.logs import setup_logging
from inspector.records import Roi
from inspector.stats import Stats
from inspector.trigger import ContinuousTrigger, Fired, PresenceTrigger, Trigger

log = structlog.get_logger("inspector.collect")


def make_local_trigger(cfg: Any, rois: list[Roi]) -> Trigger:
    """The configured presence or continuous trigger (an external trigger needs the PLC: not for collecting)."""
    t = cfg.trigger
    if t.mode == "continuous":
        return ContinuousTrigger(t.every_n)
    if t.mode == "presence":
        return PresenceTrigger(next((r for r in rois if r.name == t.roi), rois[0]), t)
    raise InspectorError("collect: trigger.mode is \"external\"; collect with mode \"presence\" (parts on a "
                         "belt) or \"continuous\" (every Nth frame) in the configuration")


def run_collect(source: str, out: Path, config: Path | None = None, into: str = "train/good",
                count: int | None = None) -> int:
    """Write one PNG per triggered part and ROI to OUT/INTO; print how many. Returns the exit code."""
    if count is not None and count < 1:
        raise InspectorError(f"collect: --count must be >= 1, got {count}")
    parts_dir = out / into
    if Path(into).is_absolute() or ".." in Path(into).parts:
        raise InspectorError(f"collect: --into {into!r} must be a folder inside OUT, e.g. train/good")
    if source.isdigit():
        camera: dict[str, Any] = {"source": int(source)}
    else:
        if "://" not in source and "!" not in source and not Path(source).is_file():   # not a URL or GStreamer pipeline
            raise InspectorError(f"collect: {source} is neither a video file, a device index nor a stream URL")
        camera = {"source": source}
    cfg = load_config(config, {"camera": camera})
    setup_logging("warning", cfg.logging.format, cfg.station_id, stream=sys.stderr)
    try:
        parts_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InspectorError(f"collect: cannot create {parts_dir}: {e.strerror}") from None
    frames: queue.Queue = queue.Queue(cfg.camera.queue_frames)
    capture = Capture(cfg.camera, frames, Stats(), lossless=True)
    capture.start()
    written = parts = 0
    trigger: Trigger | None = None
    rois: list[Roi] = []
    try:
        while count is None or parts < count:
            frame = frames.get()
            if frame is END:
                fired: list[Fired] = trigger.flush() if trigger is not None else []
            else:
                if trigger is None:
                    rois = resolve_rois(cfg.rois, frame.image.shape)
                    problem = check_rois(rois, frame.image.shape)
                    if problem:
                        raise InspectorError(f"rois: {problem}; fix [[rois]] in the configuration")
                    trigger = make_local_trigger(cfg, rois)
                fired = trigger.update(frame)
            for f in fired[: None if count is None else count - parts]:
                for roi in rois:
                    path = parts_dir / f"{f.frame.number:07d}_{roi.name}.png"
                    if not cv2.imwrite(str(path), crop(f.frame.image, roi)):
                        raise InspectorError(f"collect: could not write {path}; check free disk space and permissions")
                    written += 1
                parts += 1
            if frame is END:
                break
    except KeyboardInterrupt:
        pass
    finally:
        capture.stop()
        capture.consumer_gone()
        capture.join(timeout=5.0)   # let it release the camera or file before the process exits
    print(f"collected {parts} parts, {written} images -> {parts_dir}")
    if parts == 0:
        print("no part was triggered: check [[rois]] and [trigger] against the video "
              "(`inspector check-config`)", file=sys.stderr)
        return 1
    return 0
