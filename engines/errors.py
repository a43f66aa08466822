"""Errors a user of an engine can fix: what is wrong and how to fix it, in one message.

The `engines` CLI prints the message as one line on stderr and exits 2.
"""

from __future__ import annotations

from common.errors import ModelError


class EngineError(ModelError):
    """An engine or request that cannot be used here (backend, GPU, batch); the message says how to fix it."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (driver and loader errors can span several), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
