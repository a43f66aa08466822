"""The one place the production model changes: a slot holding the ModelSet the score loop decides with.

The score loop asks the slot for the set before each batch and tells it when the batch is decided; a
loader thread offers a new set. The switch happens only between two batches: at once when no batch is
being scored (an idle line swaps too), else as soon as the batch in flight is decided. So every part is
scored exactly once, by one set, and its verdict carries that set's model_id.

    slot = ModelSlot(models)
    # score thread                                  # loader thread
    models = slot.between_batches()                 swap = slot.swap(new_set, timeout_s=30)
    results = score_and_decide(models, batch)       swap.old.production.engine.close()  # no batch uses it
    slot.batch_done(len(results))

`Swap.decided` counts the results decided before the switch: with the publisher's first sequence number,
the last sequence number the old set decided is `first_sequence + decided - 1` (one result per number).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from inspector.models.active import ModelSet


class SlotClosed(Exception):
    """The pipeline stopped: the slot takes no new set."""


class SwapTimeout(Exception):
    """The batch in flight did not end in time (an engine call hangs): the offer was withdrawn."""


@dataclass(frozen=True)
class Swap:
    old: ModelSet
    new: ModelSet
    decided: int  # results decided before the switch (all of them by `old` or earlier sets)
    at: float  # time.time() of the switch
    number: int  # 1 for the slot's first switch, 2 for the next, ...


class ModelSlot:
    """The current ModelSet, a pending one, and whether a batch is being scored (thread-safe)."""

    def __init__(self, models: ModelSet) -> None:
        self._cond = threading.Condition()
        self._current = models
        self._pending: ModelSet | None = None
        self._busy = False  # the score loop holds `_current` for a batch
        self._decided = 0
        self._swaps: list[Swap] = []
        self._switches = 0
        self._closed = False

    @property
    def current(self) -> ModelSet:
        """The set the next batch is scored with (a pending set is not current until the switch)."""
        with self._cond:
            return self._current

    @property
    def decided(self) -> int:
        """Results decided so far (by every set)."""
        with self._cond:
            return self._decided

    @property
    def swaps(self) -> list[Swap]:
        with self._cond:
            return list(self._swaps)

    # --- the score thread -------------------------------------------------------------------------
    def between_batches(self) -> ModelSet:
        """Before a batch: switch to a pending set, then hand out the set for this batch (held until
        `batch_done`)."""
        with self._cond:
            if self._pending is not None:
                self._switch()
            self._busy = True
            return self._current

    def batch_done(self, results: int) -> None:
        """After a batch: `results` verdicts were decided with the set `between_batches` returned; a set
        offered meanwhile becomes current now."""
        with self._cond:
            self._decided += results
            self._busy = False
            if self._pending is not None:
                self._switch()

    # --- the loader thread ------------------------------------------------------------------------
    def offer(self, new: ModelSet) -> int:
        """Make `new` current at the next point between two batches (now, when no batch is in flight);
        the number its switch will have."""
        with self._cond:
            return self._offer(new)

    def _offer(self, new: ModelSet) -> int:
        if self._closed:
            raise SlotClosed("the pipeline has stopped")
        if self._pending is not None:
            raise RuntimeError("another set is already waiting for the switch")
        self._pending = new
        number = self._switches + 1  # one pending set at a time: the next switch is this one
        if not self._busy:
            self._switch()
        return number

    def swap(self, new: ModelSet, timeout_s: float) -> Swap:
        """Offer `new` and wait for the switch. SwapTimeout (offer withdrawn) if the batch in flight does
        not end within `timeout_s`; SlotClosed if the pipeline stops first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            number = self._offer(new)
            while True:
                done = next((s for s in reversed(self._swaps) if s.number == number), None)
                if done is not None:
                    return done
                if self._closed:
                    raise SlotClosed("the pipeline stopped before the switch")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._pending = None
                    raise SwapTimeout(f"the batch in flight did not end within {timeout_s:g} s")
                self._cond.wait(remaining)

    def close(self) -> ModelSet:
        """No more offers (a pending one is withdrawn, its waiter gets SlotClosed); the last current set."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()
            return self._current

    def _switch(self) -> None:
        assert self._pending is not None
        self._switches += 1
        swap = Swap(self._current, self._pending, self._decided, time.time(), self._switches)
        self._current, self._pending = self._pending, None
        self._swaps.append(swap)
        del self._swaps[:-16]  # waiters look for theirs among the newest
        self._cond.notify_all()
