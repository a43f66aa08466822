"""structlog set-up: JSON lines on stdout (journald keeps them), every line with the station id.

Per-result lines carry the sequence number through structlog's contextvars.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog


def setup_logging(level: str = "info", fmt: str = "json", station_id: str | None = None,
                  stream: TextIO | None = None) -> None:
    def add_station(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        if station_id is not None:
            event.setdefault("station", station_id)
        return event

    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_station,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
