"""The JSON API behind the page (every route is listed in docs/plant.md, "web").

Every parameter is checked here: a bad one is a 400 with {"error": "..."}, never a 500; a result or image
the gateway no longer has is a 404.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from inspector.gateway.config import HttpConfig
from inspector.gateway.hub import Hub
from inspector.gateway.web.live import MAX_STREAMS, Live
from inspector.gateway.web.metrics import CONTENT_TYPE, Metrics
from inspector.gateway.web.views import CONTENT_TYPES, IMAGE_KINDS, VERDICTS, result_row, row

ROI_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")   # as RoiConfig.name
MAX_PART_ID = 128
MAX_SEQUENCE = 2**63 - 1
NO_STORE = {"cache-control": "no-store"}


class BadRequest(Exception):
    """A parameter the client got wrong: answered 400 with the message."""


def int_param(value: str | None, name: str, *, default: int | None, lo: int, hi: int) -> int | None:
    if value is None or value == "":
        return default
    if not re.fullmatch(r"[+]?\d{1,19}", value.strip()):
        raise BadRequest(f"{name} must be a whole number, not {value[:40]!r}")
    n = int(value)
    if not lo <= n <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}, not {n}")
    return n


def time_param(value: str | None, name: str) -> float | None:
    """Unix seconds, or an ISO 8601 date/time (UTC unless it carries an offset)."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    try:
        t = float(value)
    except ValueError:
        try:
            dt = datetime.fromisoformat(value[:64])
        except ValueError:
            raise BadRequest(f"{name} must be Unix seconds or an ISO 8601 time, not {value[:40]!r}") from None
        t = (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(t) or not 0 <= t < 1e11:
        raise BadRequest(f"{name} is out of range: {value[:40]!r}")
    return t


def _seq(value: str) -> int:
    n = int_param(value, "sequence", default=None, lo=1, hi=MAX_SEQUENCE)
    assert n is not None
    return n


def not_found(what: str) -> JSONResponse:
    return JSONResponse({"error": f"{what} not found"}, status_code=404, headers=NO_STORE)


class Api:
    def __init__(self, hub: Hub, cfg: HttpConfig, station_id: str, live: Live, metrics: Metrics,
                 login_enabled: bool) -> None:
        self.hub = hub
        self.cfg = cfg
        self.station_id = station_id
        self.live = live
        self.metrics = metrics
        self.login_enabled = login_enabled

    async def state(self, request: Request) -> Response:
        return JSONResponse({"station_id": self.station_id, "preview_fps": self.cfg.preview_fps,
                             "login_enabled": self.login_enabled, **self.live.state()}, headers=NO_STORE)

    async def results(self, request: Request) -> Response:
        limit = int_param(request.query_params.get("limit"), "limit", default=50, lo=1, hi=1000)
        rows, _ = self.live.newest_rows(0, limit or 50)
        return JSONResponse({"results": rows}, headers=NO_STORE)

    async def history(self, request: Request) -> Response:
        q = request.query_params
        verdict = q.get("verdict") or None
        if verdict is not None and verdict not in VERDICTS:
            raise BadRequest(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict[:40]!r}")
        since, until = time_param(q.get("since"), "since"), time_param(q.get("until"), "until")
        if since is not None and until is not None and since > until:
            raise BadRequest("since is after until")
        part_id = q.get("part_id") or None
        if part_id is not None and (len(part_id) > MAX_PART_ID or not part_id.isprintable()):
            raise BadRequest(f"part_id must be at most {MAX_PART_ID} printable characters")
        limit = int_param(q.get("limit"), "limit", default=100, lo=1, hi=500) or 100
        before = int_param(q.get("before"), "before", default=None, lo=1, hi=MAX_SEQUENCE)
        history = self.hub.history
        if history is not None:
            headers = await asyncio.to_thread(history.search, verdict=verdict, since=since, until=until,
                                              part_id=part_id, limit=limit, before_sequence=before)
            source = "history"
        else:  # no store (tests, a gateway without a state dir): what the hub holds in memory
            headers = [r.header for r in reversed(self.hub.recent)
                       if (verdict is None or r.verdict == verdict) and (since is None or r.captured_at >= since)
                       and (until is None or r.captured_at <= until) and (part_id is None or part_id in r.part_id)
                       and (before is None or r.sequence < before)][:limit]
            source = "memory"
        rows = []
        for h in headers:
            r = self.live.find(int(h.get("sequence", 0)))
            rows.append(result_row(r) if r is not None else row(h))
        more = len(rows) == limit
        return JSONResponse({"results": rows, "source": source,
                             "next_before": rows[-1]["sequence"] if more and rows else None}, headers=NO_STORE)

    async def result(self, request: Request) -> Response:
        seq = _seq(request.path_params["seq"])
        r = self.live.find(seq)
        header = r.header if r is not None else None
        if header is None and self.hub.history is not None:
            header = await asyncio.to_thread(self.hub.history.get, seq)
        if header is None:
            return not_found(f"result {seq}")
        out = row(header)
        images = await self.live.images(seq) if (r is not None and r.images) or out["verdict"] != "pass" else []
        out["images"] = [{"roi": str(d.get("roi", "")), "kind": str(d.get("kind", "")),
                          "format": d.get("format"), "width": d.get("width"), "height": d.get("height")}
                         for d, _ in images]
        out["header"] = header
        return JSONResponse(out, headers=NO_STORE)

    async def image(self, request: Request) -> Response:
        seq = _seq(request.path_params["seq"])
        roi, kind = request.path_params["roi"], request.path_params["kind"]
        if not ROI_NAME.fullmatch(roi):
            raise BadRequest("roi must be 1-64 of A-Z a-z 0-9 _ . -")
        if kind not in IMAGE_KINDS:
            raise BadRequest(f"kind must be one of {', '.join(IMAGE_KINDS)}")
        for desc, data in await self.live.images(seq):
            if desc.get("roi") == roi and desc.get("kind") == kind:
                ctype = CONTENT_TYPES.get(str(desc.get("format", "")).lower(), "application/octet-stream")
                return Response(data, media_type=ctype, headers={"cache-control": "private, max-age=3600"})
        return not_found(f"image {roi}/{kind} of result {seq}")

    async def preview(self, request: Request) -> Response:
        if self.hub.preview is None:
            return not_found("preview")
        header, jpeg = self.hub.preview
        return Response(jpeg, media_type="image/jpeg", headers={
            **NO_STORE, "x-preview-frame": str(header.get("frame", "")),
            "x-preview-rois": json.dumps(header.get("rois") or [], separators=(",", ":"))})

    async def events(self, request: Request) -> Response:
        # a reconnecting EventSource sends the last id it got: resume there rather than at the URL's `after`
        after = int_param(request.headers.get("last-event-id") or request.query_params.get("after"), "after",
                          default=0, lo=0, hi=MAX_SEQUENCE) or 0
        if self.live.streams >= MAX_STREAMS:
            return JSONResponse({"error": "too many event streams"}, status_code=503, headers=NO_STORE)
        return StreamingResponse(self.live.stream(after), media_type="text/event-stream",
                                 headers={**NO_STORE, "x-accel-buffering": "no"})

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)
