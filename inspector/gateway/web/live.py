"""The web page's live side: one consumer of the hub's events, the images it keeps, and Server-Sent Events.

Why SSE rather than polling: one long-lived GET per page that the server writes to at most TICK_S apart,
so the page is current within ~0.1 s without 10 requests a second per browser, works through plain HTTP
proxies, and the browser's EventSource reconnects by itself (sending Last-Event-ID). Each tick is built
from the hub's *state*, never from a queue of events, so a stream cannot fall behind: at 100 results/s
every tick carries the exact counters (hub.counters) and at most MAX_ROWS of the newest results (older
rows of that tick are skipped and counted), images are never pushed (the page fetches a few thumbnails
by URL, and skips them while earlier ones are still loading), and a client that reads slowly just gets
fewer ticks (the write awaits its socket; the next tick is built from the state of then).

The consumer task (one hub.listen() queue for the whole web server) feeds the latency histogram and keeps
the images of the latest failed parts, which outlive the hub's short `recent` window at high rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from inspector.gateway.hub import Event, Hub, PartResult
from inspector.gateway.web.views import counters, preview_info, result_row, status_summary

TICK_S = 0.1          # at most 10 ticks a second per stream
MAX_ROWS = 20         # newest result rows per tick; older ones of the same tick are skipped
KEEPALIVE_S = 15.0    # a comment line when nothing changed, so proxies keep the stream open
MAX_STREAMS = 32      # concurrent event streams; more get 503
FAILED_KEPT = 64      # failed/error results whose images are kept past the hub's `recent` window
HISTORY_CACHE = 8     # results whose images were fetched through hub.history, kept for the next request
IMAGES_TIMEOUT_S = 5.0

log = structlog.get_logger("inspector.gateway.web")


class Live:
    """See the module's docstring. `start()`/`stop()` on the loop (the app's lifespan)."""

    def __init__(self, hub: Hub, on_result: Callable[[PartResult], None]) -> None:
        self.hub = hub
        self.on_result = on_result
        self.closing = asyncio.Event()
        self.streams = 0
        self.skipped_rows = 0
        self.queue: asyncio.Queue[Event] | None = None
        self._task: asyncio.Task[None] | None = None
        self._failed: OrderedDict[int, PartResult] = OrderedDict()
        self._fetched: OrderedDict[int, list[tuple[dict[str, Any], bytes]]] = OrderedDict()

    async def start(self) -> None:
        self.closing.clear()
        self.queue = self.hub.listen()
        self._task = asyncio.create_task(self._consume(self.queue), name="web-events")

    async def stop(self) -> None:
        self.closing.set()  # event streams end at once, so the server's shutdown does not wait for them
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def queue_depth(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    async def _consume(self, queue: asyncio.Queue[Event]) -> None:
        while True:
            event = await queue.get()
            if event.kind == "result" and event.result is not None:
                self.take(event.result)

    def take(self, result: PartResult) -> None:
        self.on_result(result)
        if result.verdict != "pass" and result.images:
            self._failed[result.sequence] = result
            while len(self._failed) > FAILED_KEPT:
                self._failed.popitem(last=False)

    # --- results and images ----------------------------------------------------------------------
    def find(self, sequence: int) -> PartResult | None:
        """A result still in memory (the hub's recent ones, then the failed ones kept here)."""
        for r in reversed(self.hub.recent):
            if r.sequence == sequence:
                return r
            if r.sequence < sequence:
                break
        return self._failed.get(sequence)

    async def images(self, sequence: int) -> list[tuple[dict[str, Any], bytes]]:
        """The images of one result: from memory, else through hub.history (the station's image store)."""
        r = self.find(sequence)
        if r is not None and r.images:
            return list(r.images)
        if sequence in self._fetched:
            self._fetched.move_to_end(sequence)
            return self._fetched[sequence]
        if self.hub.history is None:
            return []
        try:
            images = list(await asyncio.wait_for(self.hub.history.images(sequence), IMAGES_TIMEOUT_S))
        except Exception as e:  # the station gone, slow or refusing: no images is an answer (404), not an error
            log.warning("images of a result not available", sequence=sequence, error=repr(e))
            return []
        self._fetched[sequence] = images
        while len(self._fetched) > HISTORY_CACHE:
            self._fetched.popitem(last=False)
        return images

    def newest_rows(self, after: int, limit: int = MAX_ROWS, by_sequence: bool = False,
                    ) -> tuple[list[dict[str, Any]], int]:
        """Rows of results newer than `after`, newest first, at most `limit`; and how many newer than `after`
        were left out (`by_sequence`: counted by sequence number, those already gone from memory too)."""
        rows: list[dict[str, Any]] = []
        newer = 0
        for r in reversed(self.hub.recent):
            if r.sequence <= after:
                break
            newer += 1
            if len(rows) < limit:
                rows.append(result_row(r))
        if rows and by_sequence:
            newer = max(newer, rows[0]["sequence"] - after)
        return rows, newer - len(rows)

    # --- the page's state and its event stream ---------------------------------------------------
    def state(self) -> dict[str, Any]:
        hub = self.hub
        last = hub.last_result
        return {"counters": counters(hub.counters), "connected": hub.connected, "dropped": hub.dropped,
                "last_sequence": hub.last_sequence, "status": status_summary(hub),
                "last_result": result_row(last) if last is not None else None,
                "preview": preview_info(hub), "queue_depth": self.queue_depth()}

    async def stream(self, after: int) -> AsyncIterator[str]:
        """`tick` events (JSON) at most every TICK_S while something changed; see the module's docstring."""
        hub = self.hub
        self.streams += 1
        if after <= 0:  # a new page: the newest MAX_ROWS first; from then on every result is shown or counted
            after = max(0, hub.last_sequence - MAX_ROWS)
        try:
            yield "retry: 2000\n\n"
            sent_status: Any = object()
            sent_connected: bool | None = None
            sent_preview: Any = object()
            sent_counters: dict[str, Any] | None = None
            last_write = time.monotonic()
            while not self.closing.is_set():
                tick: dict[str, Any] = {"counters": counters(hub.counters), "connected": hub.connected,
                                        "dropped": hub.dropped, "last_sequence": hub.last_sequence}
                if hub.status is not sent_status or hub.connected != sent_connected:
                    sent_status, sent_connected = hub.status, hub.connected
                    tick["status"] = status_summary(hub)
                preview = hub.preview[0] if hub.preview is not None else None
                if preview is not sent_preview:
                    sent_preview = preview
                    tick["preview"] = preview_info(hub)
                rows, skipped = self.newest_rows(after, by_sequence=True)
                if rows:
                    after = rows[0]["sequence"]
                    tick["rows"], tick["skipped_rows"] = rows, skipped
                    self.skipped_rows += skipped
                if rows or "status" in tick or "preview" in tick or tick["counters"] != sent_counters:
                    sent_counters = tick["counters"]
                    last_write = time.monotonic()
                    yield f"id: {after}\nevent: tick\ndata: {json.dumps(tick, separators=(',', ':'))}\n\n"
                elif time.monotonic() - last_write >= KEEPALIVE_S:
                    last_write = time.monotonic()
                    yield ": keepalive\n\n"
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), TICK_S)
        finally:
            self.streams -= 1
