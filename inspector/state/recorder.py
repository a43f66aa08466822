"""Record results before they are published: failed parts' images into the image store, then every
verdict into the journal, a whole batch in one commit. Owned by the publishing thread.

A disk fault never stops inspection or publishing: the journal keeps the rows in memory and writes
them once it can (journal.py), the store skips the images. Each fault is logged once when it starts
and once when it ends, and shown on the status topic (`journal.state`, `image_store.state`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import structlog

from inspector.records import Outgoing
from inspector.state.image_store import ImageStore, extension
from inspector.state.journal import Journal, JournalUnavailable

log = structlog.get_logger("inspector.recorder")


class Health:
    """The state of one store, `ok` or `fault`, logged on each change (not once per part)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "ok"
        self.error: str | None = None
        self.outages = 0
        self._since = 0.0

    def fault(self, error: str) -> None:
        self.error = error
        if self.state != "fault":
            self.state, self._since = "fault", time.monotonic()
            self.outages += 1
            log.error(f"{self.name} unavailable: inspection and publishing go on", error=error)

    def ok(self) -> None:
        if self.state == "fault":
            log.warning(f"{self.name} recovered", outage_s=round(time.monotonic() - self._since, 3),
                        last_error=self.error)
            self.state = "ok"

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "outages": self.outages, "error": self.error if self.state == "fault" else None}


class Recorder:
    """The journal (None: journaling off) and the image store (None: images not kept)."""

    def __init__(self, journal: Journal | None, store: ImageStore | None = None,
                 store_kinds: Sequence[str] = (), store_passed_every: int = 0) -> None:
        self.journal = journal
        self.store = store
        self.store_kinds = tuple(store_kinds) if store is not None else ()
        self.store_passed_every = store_passed_every if store is not None else 0  # [state] store_passed_every
        self.journal_health = Health("journal")
        self.store_health = Health("image store")

    def record(self, batch: Sequence[Outgoing]) -> None:
        """Store the images, then journal the batch in one commit; never raises for a disk fault."""
        names = [self._store(o) for o in batch]
        if self.journal is None:
            return
        try:
            self.journal.append_many([(o.header, n, o.raw, o.shadow) for o, n in zip(batch, names, strict=True)])
        except JournalUnavailable as exc:
            self.journal_health.fault(str(exc))
        else:
            self.journal_health.ok()

    def _store(self, out: Outgoing) -> dict[str, str]:
        if self.store is None or not out.stored:
            return {}
        faults = self.store.counters["faults"]
        images = {key: (extension(fmt), data) for key, (fmt, data) in out.stored.items()}
        names = self.store.save_part(int(out.header["sequence"]), images, out.header.get("captured_at"))
        if self.store.counters["faults"] > faults:
            self.store_health.fault(self.store.last_error or "write failed")
        elif names:
            self.store_health.ok()
        return names

    def stats(self) -> dict[str, Any]:
        """`journal` and `image_store` objects for the status topic."""
        out: dict[str, Any] = {"journal": {"state": "off"}, "image_store": {"state": "off"}}
        if self.journal is not None:
            out["journal"] = {**self.journal.stats(), **self.journal_health.snapshot()}
        if self.store is not None:
            out["image_store"] = {**self.store.stats(), **self.store_health.snapshot()}
        return out

    def close(self) -> None:
        """Write what an outage held back if the disk is back, then close (in the owning thread)."""
        if self.journal is None:
            return
        try:
            if self.journal.flush():
                self.journal_health.ok()
        except JournalUnavailable as exc:
            pending = self.journal.stats()["pending"]
            log.error("journal unavailable at exit: verdicts not journaled", pending=pending, error=str(exc))
        with contextlib.suppress(Exception):
            self.journal.close()
