"""Facts about the machine this process runs on."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The CPU cores this process may use (its affinity mask where the OS has one)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
