"""The last stage before the socket: a decided Result becomes its message, the header (docs/protocol.md) and
the PNG/JPEG images of its crops, reconstructions and heat maps, plus the images the image store keeps.

The publishing thread calls it, so numbering, journaling and sending stay in one order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from inspector.config import PublishConfig
from inspector.records import Outgoing, Result, RoiResult

SCHEMA_VERSION = 1  # of the result and status messages


def encode_image(image: np.ndarray, fmt: str, jpeg_quality: int = 90) -> bytes:
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as {fmt}")
    return buf.tobytes()


def heatmap_overlay(crop: np.ndarray, amap: np.ndarray, threshold: float) -> np.ndarray:
    """The anomaly map in JET colours over the crop; red where the map reaches twice the threshold."""
    scale = 2 * threshold if threshold > 0 else max(float(amap.max()), 1e-6)
    heat = cv2.applyColorMap(np.clip(amap / scale * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    if heat.shape[:2] != crop.shape[:2]:
        heat = cv2.resize(heat, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    base = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR) if crop.shape[-1] == 1 or crop.ndim == 2 else crop
    return cv2.addWeighted(base, 0.5, heat, 0.5, 0)


def _roi_images(r: RoiResult, kinds: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    out: list[tuple[str, np.ndarray]] = []
    for kind in kinds:
        if kind == "input" and r.crop is not None:
            out.append((kind, r.crop))
        elif kind == "reconstruction" and r.reconstruction is not None:
            out.append((kind, r.reconstruction))
        elif kind == "heatmap" and r.anomaly_map is not None and r.crop is not None:
            out.append((kind, heatmap_overlay(r.crop, r.anomaly_map, r.threshold)))
    return out


def passed_part_kept(sequence: int, every: int) -> bool:
    """Whether a passed part's input crop is stored (`[state] store_passed_every`; 0 = never): one sequence
    number in each block of `every`, at an offset that moves on by one each block (block b keeps
    b*every + b % every). Deterministic, about one part in `every`, and the kept sequences do not all share
    one remainder: `inspector dataset` splits train/test by `sequence % 5`, a fixed offset would send them all
    to the same side."""
    if every <= 0:
        return False
    block, offset = divmod(sequence, every)
    return offset == block % every


def build_outgoing(result: Result, sequence: int, station_id: str, run_id: str, cfg: PublishConfig,
                   now_wall: float, now_mono: float, store_kinds: Sequence[str] = (),
                   store_passed_every: int = 0) -> Outgoing:
    """The result message, plus the images the store keeps (`store_kinds` of a failed/error part; the input
    crop of a passed part that `passed_part_kept` picks).

    What is stored does not depend on what is sent: an image both sent and stored is encoded once. A part the
    shadow model judged otherwise than production is stored whatever its verdict (the evidence for compare).
    """
    part = result.part
    send = cfg.send_images == "all" or (cfg.send_images == "failed" and result.verdict != "pass")
    # a passed part's images are kept too when the shadow model disagrees: `inspector compare` shows them
    disputed = result.shadow is not None and result.shadow.verdict != result.verdict
    store = bool(store_kinds) and (result.verdict != "pass" or disputed)
    # a sample of the passed parts keeps its input crop: confirmed-good parts for `inspector dataset`
    sampled = bool(store_kinds) and not store and result.verdict == "pass" and \
        passed_part_kept(sequence, store_passed_every)
    descriptors: list[dict[str, Any]] = []
    images: list[bytes] = []
    stored: dict[tuple[str, str], tuple[str, bytes]] = {}
    for r in result.rois:
        sent_kinds = list(cfg.images) if send else []
        kept_kinds = list(store_kinds) if store else ["input"] if sampled else []
        wanted = sent_kinds + [k for k in kept_kinds if k not in sent_kinds]  # sent ones in configured order
        for kind, img in _roi_images(r, wanted):
            data = encode_image(img, cfg.image_format, cfg.jpeg_quality)
            if kind in kept_kinds:
                stored[(r.name, kind)] = (cfg.image_format, data)
            if kind in sent_kinds:
                images.append(data)
                descriptors.append({"roi": r.name, "kind": kind, "format": cfg.image_format,
                                    "width": int(img.shape[1]), "height": int(img.shape[0]),
                                    "channels": int(img.shape[2]) if img.ndim == 3 else 1})
    header = {
        "schema_version": SCHEMA_VERSION,
        "type": "result",
        "sequence": sequence,
        "station_id": station_id,
        "run_id": run_id,
        "part_id": part.part_id,
        "frame": part.frame.number,
        "trigger": part.trigger,
        "captured_at": round(part.frame.t_wall, 6),
        "published_at": round(now_wall, 6),
        "latency_ms": round((now_mono - part.frame.t_mono) * 1000, 3),
        "verdict": result.verdict,
        "error": result.error,
        "model_id": result.model_id,
        "rois": [
            {"name": r.name, "x": roi.x, "y": roi.y, "width": roi.width, "height": roi.height,
             "score": None if r.score is None else round(r.score, 6), "threshold": r.threshold, "verdict": r.verdict}
            for r, roi in zip(result.rois, part.rois, strict=True)
        ],
        "images": descriptors,
    }
    return Outgoing(header, json.dumps(header).encode(), images, stored)
