"""Gather work into batches: up to a maximum size or a maximum wait after the first item, whichever first.

DeepStream's and Triton's convention: throughput grows with load, latency stays bounded at low rates.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
END = None  # the upstream stage's end marker


class Batcher(Generic[T]):
    """Pulls items from `source`; `size(item)` is what counts against `max_size` (crops per part)."""

    def __init__(self, source: queue.Queue, max_size: int, max_wait_s: float,
                 size: Callable[[T], int] = lambda _: 1) -> None:
        self.source = source
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.size = size
        self.ended = False
        self._held: T | None = None  # an item that did not fit the previous batch

    def next_batch(self) -> list[T]:
        """The next batch; empty only once the source has ended and everything was handed out."""
        batch: list[T] = []
        used = 0
        if self._held is not None:
            batch.append(self._held)
            used = self.size(self._held)
            self._held = None
        elif not self.ended:
            item = self.source.get()
            if item is END:
                self.ended = True
                return batch
            batch.append(item)
            used = self.size(item)
        else:
            return batch
        deadline = time.monotonic() + self.max_wait_s
        while used < self.max_size and not self.ended:
            remaining = deadline - time.monotonic()
            try:
                item = self.source.get(timeout=remaining) if remaining > 0 else self.source.get_nowait()
            except queue.Empty:
                break
            if item is END:
                self.ended = True  # flush what we have now: shutdown must not wait for max_wait
                break
            n = self.size(item)
            if used + n > self.max_size:
                self._held = item
                break
            batch.append(item)
            used += n
        return batch
