"""The gateway's subscriber (the ZeroMQ guide's Clone pattern): every result exactly once, in order.

One thread (`gateway-feed`) owns the SUB socket (topics `result`, `status`, `preview`), the backfill
client and the store's writer; it hands what it took in to the event loop with `call_soon_threadsafe`,
where the hub is told (`on_result`, `on_status`, `on_preview`, `on_disconnect`) in the order received.

Why a thread and not zmq.asyncio on the loop: everything the feed does that can block (the store's
fsync per batch with synchronous=FULL, a backfill request that waits seconds for a busy or restarting
station, walking a journal of a million results after a long outage) stays off the loop that answers
PLCs within milliseconds; and the backfill client (`network/backfill.iter_backfill`, blocking) is reused
as it is. At most MAX_IN_FLIGHT batches wait for the loop: a stalled loop pushes back on the SUB socket,
whose overflow the station's PUB drops and this feed then recovers from the journal.

The sequence rules (docs/protocol.md): the SUB socket connects first, then everything after the store's
last sequence comes from the backfill endpoint, then live results above the last one taken in (lower
ones are duplicates). The backfill is asked once the station is heard (its status comes every second),
so a station that is down costs no request timeouts. A jump a -> b in the live stream, or a status whose `last_sequence` is above the
last taken in, is filled from the journal before anything after it is taken in. While the backfill
endpoint does not answer, live results are not taken in (the journal will give them) and the request is
retried with a backoff; only without a backfill endpoint (ours or the station's, per its status) is a gap
accepted as lost. Results the journal no longer has (its retention) are lost too, and logged.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import zmq

from inspector.gateway.hub import Hub, PartResult
from inspector.gateway.store import Store
from inspector.network.backfill import BackfillError, iter_backfill
from inspector.network.clone import GapDetector, image_pairs
from inspector.network.security import SecurityError, apply_client_curve

log = structlog.get_logger("inspector.gateway.feed")

# docs/protocol.md, "Topics and frames" (the preview topic: network/preview.py)
RESULT, STATUS, PREVIEW = b"result", b"status", b"preview"
SCHEMA_VERSION = 1
MAX_DRAIN = 1000          # messages taken from the socket per batch (one store transaction)
MAX_IN_FLIGHT = 8         # batches handed to the loop and not yet delivered there
CHUNK = 1000              # backfilled results per store transaction
NO_LIMIT = 2**62


class FeedError(Exception):
    """The feed cannot start: an invalid endpoint or unusable CURVE keys (a configuration error)."""


@dataclass(frozen=True)
class FeedOptions:
    connect: str                              # the station's PUB endpoint
    backfill: str = ""                        # its backfill endpoint ("" = none: gaps are lost)
    client_secret: Path | None = None         # CURVE: this gateway's .key_secret
    server_public: Path | None = None         # CURVE: the station's .key
    backfill_timeout_ms: int = 5000           # per message of a backfill answer
    silence_s: float = 5.0                    # nothing heard this long: the hub is told (on_disconnect)
    rcvhwm: int = 10_000                      # live messages the SUB socket queues before the PUB drops

    @property
    def curve(self) -> dict[str, Path]:
        if self.client_secret is None or self.server_public is None:
            return {}
        return {"client_secret": self.client_secret, "server_public": self.server_public}


@dataclass
class FeedStats:
    live: int = 0             # results taken in from the live stream
    backfilled: int = 0       # ... from the journal
    duplicates: int = 0
    lost: int = 0             # sequence numbers never taken in (no backfill, or not in the journal)
    bad: int = 0              # messages that are not a valid result/status/preview
    backfill_failures: int = 0


class Feed:
    """See the module's docstring: `start(loop)`, then `stop()` (flushes, closes the socket)."""

    def __init__(self, opts: FeedOptions, store: Store, hub: Hub, context: zmq.Context | None = None) -> None:
        self.opts = opts
        self.store = store
        self.hub = hub
        self.ctx = context or zmq.Context.instance()
        self.stats = FeedStats()
        self.gaps = GapDetector(last=store.last_sequence)
        self.station_backfill = True          # the station's status says it serves backfill
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="gateway-feed", daemon=True)
        self._halt = threading.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._in_flight = threading.Semaphore(MAX_IN_FLIGHT)
        self._fill_upto = 0                   # a sequence the station has that we have not taken in (+1)
        self._retry_at = 0.0
        self._backoff = 0.5
        self._heard = time.monotonic()
        self._heard_any = False               # no backfill request before the station is heard at all
        self._silent = False
        self._warned_behind: set[str] = set()

    # --- life cycle (the loop's thread) --------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the thread; returns once its socket is connected, FeedError if it cannot be."""
        self._loop = loop
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise FeedError(str(self._error))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (blocking: call it in a worker thread from the loop) and write pending acks."""
        self._halt.set()
        self._in_flight.release()    # a thread waiting for the loop wakes up
        if self._thread.ident is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            sock = self._socket()
        except (zmq.ZMQError, SecurityError) as e:
            self._error = FeedError(f"gateway.connect {self.opts.connect}: {e}")
            self._started.set()
            return
        self._started.set()
        try:
            if self.opts.backfill:
                self._fill_upto = NO_LIMIT        # everything after the store's last sequence, then live
            while not self._halt.is_set():
                if self._fill_upto and self._heard_any and not self._silent \
                        and time.monotonic() >= self._retry_at:
                    self._fill(self._fill_upto)
                if sock.poll(100):
                    if self._silent:              # the station is back: ask the journal at once
                        self._retry_at, self._backoff = 0.0, 0.5
                    self._heard, self._silent, self._heard_any = time.monotonic(), False, True
                    self._handle(_drain(sock))
                else:
                    self.store.flush_acks()
                    if not self._silent and time.monotonic() - self._heard > self.opts.silence_s:
                        self._silent = True
                        self._to_loop([("disconnect",)])
        except Exception:   # a bug: logged, and the gateway ends (run.py watches `alive`)
            log.exception("feed failed")
        finally:
            sock.close(0)
            try:
                self.store.flush_acks()
            finally:
                log.info("feed stopped", last_sequence=self.gaps.last, **self._stats())

    def _socket(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, self.opts.rcvhwm)
            if self.opts.curve:
                apply_client_curve(sock, **self.opts.curve)
            for topic in (RESULT, STATUS, PREVIEW):
                sock.setsockopt(zmq.SUBSCRIBE, topic)
            sock.connect(self.opts.connect)
        except BaseException:
            sock.close(0)
            raise
        return sock

    def _handle(self, messages: list[list[bytes]]) -> None:
        """One batch from the socket: results checked against the sequence, stored, then handed over."""
        items: list[tuple[Any, ...]] = []
        results: list[PartResult] = []
        for frames in messages:
            topic = frames[0]
            header = _header(frames)
            if header is None:
                self.stats.bad += 1
                continue
            if topic == RESULT:
                result = self._live_result(header, frames, items, results)
                if result is not None:
                    results.append(result)
                    items.append(("result", result))
            elif topic == STATUS:
                self._status(header)
                items.append(("status", header))
            elif topic == PREVIEW and len(frames) == 3:
                items.append(("preview", header, frames[2]))
        self._commit(results, items)

    def _live_result(self, header: dict[str, Any], frames: list[bytes], items: list[tuple[Any, ...]],
                     results: list[PartResult]) -> PartResult | None:
        """The result to take in now (from the message's frames: topic, header, images), or None (a
        duplicate, or held back until its gap is filled)."""
        if self.gaps.duplicate(header):
            self.stats.duplicates += 1
            return None
        seq = int(header["sequence"])
        if self.gaps.missing(seq) and self.opts.backfill and self.station_backfill:
            self._commit(results, items)      # what came before the gap goes first
            results.clear()
            items.clear()
            if time.monotonic() < self._retry_at or not self._fill(seq):
                self._fill_upto = max(self._fill_upto, seq + 1)
                return None                   # not taken in now: it comes from the journal
        lost = self.gaps.see(header)
        if lost:
            self.stats.lost += lost
            log.error("results lost: not in the station's journal or no backfill", before=seq, lost=lost)
        result = self._parse(header, frames[2:], frames[1])
        if result is not None:
            self.stats.live += 1
        return result

    def _parse(self, header: dict[str, Any], images: list[bytes], raw: bytes | None = None) -> PartResult | None:
        """The result, or None for a header with a sequence but malformed otherwise: counted, logged and
        skipped (asking the journal again would give the same header and stall the feed)."""
        try:
            return PartResult.from_message(header, images, raw)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self.stats.bad += 1
            log.error("malformed result skipped", sequence=header.get("sequence"), error=repr(e))
            return None

    def _status(self, header: dict[str, Any]) -> None:
        backfill = header.get("backfill")
        if isinstance(backfill, dict):
            self.station_backfill = backfill.get("state") == "serving"
        last = header.get("last_sequence")
        if not isinstance(last, int) or self.gaps.last is None:
            return
        if last > self.gaps.last:                     # results published that we did not get
            self._fill_upto = max(self._fill_upto, last + 1)   # asked after this batch is stored
        elif last < self.gaps.last and header.get("run_id") not in self._warned_behind:
            self._warned_behind.add(str(header.get("run_id")))
            log.error("the station's sequence is behind the gateway's: its journal was reset, or another "
                      "station is on this endpoint; its results up to the gateway's last are ignored as "
                      "duplicates (stop the gateway and delete its gateway.db to start over)",
                      station_last=last, gateway_last=self.gaps.last, run_id=header.get("run_id"))

    def _fill(self, upto: int) -> bool:
        """Take in every journaled result with last < seq < upto; True when nothing below `upto` is
        missing any more (taken in, or lost for good), False when the backfill must be asked again."""
        last = self.gaps.last or 0
        if upto <= last + 1 or not (self.opts.backfill and self.station_backfill):
            self._fill_upto = 0               # nothing missing, or nothing to ask: gaps are lost
            return True
        chunk: list[PartResult] = []
        try:
            limit = None if upto >= NO_LIMIT else upto - last - 1
            for r in iter_backfill(self.opts.backfill, last, self.opts.backfill_timeout_ms, limit=limit,
                                   context=self.ctx, **self.opts.curve):
                seq = int(r.header["sequence"])
                if seq >= upto or self._halt.is_set():
                    break
                lost = self.gaps.see(r.header)
                if lost:
                    self.stats.lost += lost
                    log.error("results lost: no longer in the station's journal", before=seq, lost=lost)
                result = self._parse(r.header, [])
                if result is not None:
                    chunk.append(result)
                    self.stats.backfilled += 1
                if len(chunk) >= CHUNK:
                    self._commit(chunk, [("result", c) for c in chunk])
                    chunk = []
        except (BackfillError, zmq.ZMQError, ValueError) as e:     # ValueError: a reply that is not JSON
            self._commit(chunk, [("result", c) for c in chunk])
            self.stats.backfill_failures += 1
            self._retry_at = time.monotonic() + self._backoff
            log.warning("backfill failed: live results wait for the journal", endpoint=self.opts.backfill,
                        error=str(e), retry_in_s=self._backoff, last_sequence=self.gaps.last)
            self._backoff = min(self._backoff * 2, 30.0)
            return False
        self._commit(chunk, [("result", c) for c in chunk])
        self._backoff = 0.5
        if self._fill_upto <= upto:
            self._fill_upto = 0
        return True

    def _commit(self, results: list[PartResult], items: list[tuple[Any, ...]]) -> None:
        """Store the results in one transaction, then hand the items to the loop (in order)."""
        if results:
            taken = self.store.add_many(results)
            if len(taken) != len(results):        # cannot happen: the sequence was checked before
                log.error("store refused results", offered=len(results), taken=len(taken))
        if items:
            self._to_loop(list(items))

    def _to_loop(self, items: list[tuple[Any, ...]]) -> None:
        loop = self._loop
        if loop is None:
            return
        while not self._in_flight.acquire(timeout=0.1):
            if self._halt.is_set():
                return
        try:
            loop.call_soon_threadsafe(self._deliver, items)
        except RuntimeError:      # the loop is closed: the gateway is ending
            self._in_flight.release()
            self._halt.set()

    # --- on the loop -----------------------------------------------------------------------------------
    def _deliver(self, items: list[tuple[Any, ...]]) -> None:
        try:
            for item in items:
                try:
                    self._deliver_one(item)
                except Exception:   # a bug in the hub or a listener: the rest of the batch still goes in
                    log.exception("hub failed to take an item", kind=item[0])
        finally:
            self._in_flight.release()

    def _deliver_one(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "result":
            self.hub.on_result(item[1])
        elif kind == "status":
            self.hub.on_status(item[1])
        elif kind == "preview":
            self.hub.on_preview(item[1], item[2])
        elif kind == "disconnect":
            self.hub.on_disconnect()

    def _stats(self) -> dict[str, Any]:
        s = self.stats
        return {"live": s.live, "backfilled": s.backfilled, "duplicates": s.duplicates, "lost": s.lost,
                "bad": s.bad, "backfill_failures": s.backfill_failures}


def _drain(sock: zmq.Socket) -> list[list[bytes]]:
    out = []
    while len(out) < MAX_DRAIN:
        try:
            out.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            break
    return out


def _header(frames: list[bytes]) -> dict[str, Any] | None:
    """The message's JSON header when it is one this gateway understands (schema version 1, a result
    with an integer sequence), else None."""
    if len(frames) < 2:
        return None
    try:
        header = json.loads(frames[1])
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict) or header.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        return None
    if frames[0] == RESULT:
        seq = header.get("sequence")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or "part_id" not in header \
                or "verdict" not in header:
            return None
    return header


def image_fetcher(opts: FeedOptions, context: zmq.Context | None = None
                  ) -> Callable[[int], list[tuple[dict[str, Any], bytes]]] | None:
    """store.fetch_images: one result's stored images from the station's backfill (blocking)."""
    if not opts.backfill:
        return None

    def fetch(sequence: int) -> list[tuple[dict[str, Any], bytes]]:
        for r in iter_backfill(opts.backfill, sequence - 1, 2000, limit=1, images=True, context=context,
                               **opts.curve):
            return image_pairs(r.header, r.images) if r.header.get("sequence") == sequence else []
        return []

    return fetch
