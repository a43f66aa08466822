"""What the web page and its JSON API show, built from the hub's state: result rows, the status summary,
the counters. Pure functions of plain data: no I/O, no web framework."""

from __future__ import annotations

import math
from typing import Any

from inspector.gateway.hub import Counters, Hub, PartResult

VERDICTS = ("pass", "fail", "error")
IMAGE_KINDS = ("input", "reconstruction", "heatmap")
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}


def _num(value: Any) -> float | None:
    """A finite number or None (JSON has no NaN)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def row(header: dict[str, Any], images: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One result as a table row: sequence, time, part id, verdict, per-ROI score vs threshold, and which
    images the gateway has in memory for it (`images`: [{roi, kind}], None = not known here)."""
    return {
        "sequence": int(header.get("sequence", 0)),
        "part_id": str(header.get("part_id", "")),
        "verdict": str(header.get("verdict", "")),
        "error": header.get("error"),
        "captured_at": _num(header.get("captured_at")),
        "latency_ms": _num(header.get("latency_ms")),
        "frame": header.get("frame"),
        "run_id": header.get("run_id"),
        "model_id": header.get("model_id"),
        "rois": [{"name": str(r.get("name", "")), "score": _num(r.get("score")), "threshold": _num(r.get("threshold")),
                  "verdict": str(r.get("verdict", ""))} for r in header.get("rois") or [] if isinstance(r, dict)],
        "images": images,
    }


def result_row(result: PartResult) -> dict[str, Any]:
    return row(result.header, [{"roi": str(d.get("roi", "")), "kind": str(d.get("kind", ""))}
                               for d, _ in result.images])


def counters(c: Counters) -> dict[str, Any]:
    rejected = c.failed + c.errors
    return {"parts": c.parts, "passed": c.passed, "failed": c.failed, "errors": c.errors,
            "reject_rate": round(rejected / c.parts, 6) if c.parts else None}


def engine_state(hub: Hub) -> str:
    """"ok", "error" or "unknown": the station's own `engine` status object when it sends one, else what the
    station state says."""
    engine = (hub.status or {}).get("engine")
    if isinstance(engine, dict) and engine.get("state"):
        return "error" if engine["state"] == "error" else "ok"
    if hub.state == "engine_error":
        return "error"
    return "ok" if hub.state in ("running", "camera_lost") else "unknown"


def camera_up(hub: Hub) -> bool:
    camera = (hub.status or {}).get("camera") or {}
    return hub.connected and camera.get("state") == "open"


def latency(hub: Hub) -> dict[str, Any]:
    """p50/p99 in ms: the station's own (over its last 2000 results) when its status has them, else over the
    results the gateway holds in memory."""
    status = hub.status or {}
    p50, p99 = _num(status.get("latency_p50_ms")), _num(status.get("latency_p99_ms"))
    if p50 is not None and p99 is not None:
        return {"p50_ms": p50, "p99_ms": p99, "source": "station"}
    lat = sorted(r.latency_ms for r in hub.recent)
    if not lat:
        return {"p50_ms": None, "p99_ms": None, "source": None}
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3)  # noqa: E731 - nearest rank
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "source": "gateway"}


def _part(obj: Any, keys: tuple[str, ...]) -> dict[str, Any] | None:
    return {k: obj.get(k) for k in keys if k in obj} if isinstance(obj, dict) else None


def status_summary(hub: Hub) -> dict[str, Any]:
    """The health panel: station state, camera, engine, disk (image store + journal), frames."""
    s = hub.status or {}
    dropped = s.get("frames_dropped") if isinstance(s.get("frames_dropped"), dict) else {}
    return {
        "state": hub.state,
        "connected": hub.connected,
        "model_id": hub.model_id,
        "backend": s.get("backend"),
        "run_id": s.get("run_id"),
        "station_id": s.get("station_id"),
        "published_at": _num(s.get("published_at")),
        "uptime_s": _num(s.get("uptime_s")),
        "last_sequence": s.get("last_sequence"),
        "fps": _num(s.get("fps")),
        "frames_captured": s.get("frames_captured"),
        "frames_dropped": {str(k): v for k, v in dropped.items()},
        "camera": _part(s.get("camera"), ("state", "error", "reconnects", "source")),
        "camera_up": camera_up(hub),
        "engine": {**(_part(s.get("engine"), ("state", "error")) or {}), "state": engine_state(hub)},
        "journal": _part(s.get("journal"), ("state", "error", "pending", "dropped", "faults", "last_seq")),
        "image_store": _part(s.get("image_store"), ("state", "error", "files", "bytes", "quota_bytes", "faults")),
        "latency": latency(hub),
        "drift": drift_summary(hub),
    }


def drift_summary(hub: Hub) -> dict[str, Any] | None:
    """The drift watch for the page's banner and health row: state ("ok", "warning", "unknown", "off"),
    the reason in words, and its numbers; None when the station sends no drift object."""
    d = hub.drift
    if d is None:
        return None
    nums = ("median_shift", "ks", "fail_rate_recent", "fail_rate_expected", "warn_shift")
    return {"state": str(d.get("state") or "unknown"), "reason": str(d.get("reason") or ""), "cause": d.get("cause"),
            "model_id": d.get("model_id"), "window_n": d.get("window_n"), **{k: _num(d.get(k)) for k in nums}}


def preview_info(hub: Hub) -> dict[str, Any] | None:
    if hub.preview is None:
        return None
    h = hub.preview[0]
    return {"frame": h.get("frame"), "captured_at": _num(h.get("captured_at")), "width": h.get("width"),
            "height": h.get("height"), "rois": h.get("rois") or []}
