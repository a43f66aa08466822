"""Prometheus `/metrics`: the station as the gateway sees it, on a registry of its own (never the global one).

Counters and gauges are read from the hub when Prometheus scrapes (a custom collector: exact values, nothing
sampled); only the latency histogram is observed as results arrive (`observe`). Every name and label is
listed in docs/plant.md ("web").

prometheus_client's custom collectors: a `collect()` yielding *MetricFamily objects, registered on a
CollectorRegistry (https://prometheus.github.io/client_python/collector/custom/); a CounterMetricFamily is
named without `_total`, which the exposition adds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)

from inspector.gateway.hub import DRIFT_STATES, STATE_CODES, Hub, PartResult
from inspector.gateway.web.views import camera_up, engine_state

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StationCollector:
    """Reads the hub at scrape time. `queues`: extra queue depths of the gateway ({name: depth})."""

    def __init__(self, hub: Hub, station_id: str, queues: Callable[[], dict[str, int]]) -> None:
        self.hub = hub
        self.station_id = station_id
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        hub, status = self.hub, self.hub.status or {}
        c = hub.counters
        parts = CounterMetricFamily("inspector_parts", "Results the gateway has taken in, by verdict "
                                    "(over the station's whole journal).", labels=["verdict"])
        for verdict, n in (("pass", c.passed), ("fail", c.failed), ("error", c.errors)):
            parts.add_metric([verdict], n)
        yield parts
        yield CounterMetricFamily("inspector_frames", "Frames the station read from its camera (this run).",
                                  value=_int(status.get("frames_captured")))
        dropped = CounterMetricFamily("inspector_frames_dropped", "Frames the station dropped (this run), by reason.",
                                      labels=["reason"])
        for reason, n in sorted((status.get("frames_dropped") or {}).items()):
            dropped.add_metric([str(reason)], _int(n))
        yield dropped
        yield CounterMetricFamily("inspector_gateway_events_dropped", "Result/status events dropped from slow "
                                  "gateway servers' queues (counters are never dropped).", value=hub.dropped)
        yield GaugeMetricFamily("inspector_last_sequence", "The newest result sequence the gateway has taken in.",
                                value=hub.last_sequence)
        depth = GaugeMetricFamily("inspector_queue_depth", "Items waiting in a queue, by queue.", labels=["queue"])
        for name, n in sorted(self._queue_depths().items()):
            depth.add_metric([name], n)
        yield depth
        quantiles = GaugeMetricFamily("inspector_station_latency_seconds", "The station's own latency "
                                      "percentiles (capture to verdict, its last 2000 results).", labels=["quantile"])
        for q, key in (("0.5", "latency_p50_ms"), ("0.99", "latency_p99_ms")):
            value = status.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                quantiles.add_metric([q], value / 1000)
        yield quantiles
        yield GaugeMetricFamily("inspector_camera_up", "1 while the station reports its camera open.",
                                value=int(camera_up(hub)))
        yield GaugeMetricFamily("inspector_engine_up", "1 while the station's engine is not in error.",
                                value=int(hub.connected and engine_state(hub) == "ok"))
        yield GaugeMetricFamily("inspector_gateway_connected", "1 while the gateway hears the station.",
                                value=int(hub.connected))
        state = StateSetMetricFamily("inspector_station_state", "The station's state as the gateway sees it.")
        state.add_metric([], {s: s == hub.state for s in STATE_CODES})
        yield state
        yield from self._drift()
        info = InfoMetricFamily("inspector_model", "The model the station runs.", labels=["station_id"])
        info.add_metric([self.station_id], {"model_id": hub.model_id, "backend": str(status.get("backend") or "")})
        yield info

    def _drift(self) -> Iterator[Metric]:
        """The station's drift watch (status `drift`, inspector/drift.py): its state, and its numbers while
        it has them (none before min_parts parts, or for a model without normal_scores)."""
        drift = self.hub.drift or {}
        state = StateSetMetricFamily("inspector_drift_state", "The station's drift watch: recent parts' scores "
                                     "against the model's held-out normal scores (warning: they moved).")
        current = str(drift.get("state") or "unknown")
        state.add_metric([], {s: s == current for s in DRIFT_STATES})
        yield state
        yield GaugeMetricFamily("inspector_drift_warning", "1 while the drift watch warns that the scores of "
                                "recent parts have moved since the model was trained.", value=int(current == "warning"))
        for name, key, text in (
                ("inspector_drift_shift", "median_shift", "Median score of the recent parts minus the model's "
                 "held-out normals' median, in normal spreads (IQR/1.349)."),
                ("inspector_drift_ks", "ks", "Kolmogorov-Smirnov statistic of the recent scores against the "
                 "held-out normals (0..1).")):
            value = drift.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                yield GaugeMetricFamily(name, text, value=value)
        rate = GaugeMetricFamily("inspector_drift_fail_rate", "Share of the drift window's parts above a "
                                 "threshold (recent) and what good parts would give (expected).", labels=["kind"])
        for kind in ("recent", "expected"):
            value = drift.get(f"fail_rate_{kind}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rate.add_metric([kind], value)
        yield rate

    def _queue_depths(self) -> dict[str, int]:
        status = self.hub.status or {}
        out: dict[str, int] = {}
        queues = status.get("queues")
        if isinstance(queues, dict):  # the station's own queue depths, if its status has them
            out.update({f"station_{k}": _int(v) for k, v in queues.items()})
        journal = status.get("journal")
        if isinstance(journal, dict) and "pending" in journal:
            out["station_journal_pending"] = _int(journal["pending"])
        out.update(self.queues())
        return out


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class Metrics:
    """The registry behind /metrics: the station collector and the latency histogram."""

    def __init__(self, hub: Hub, station_id: str, queues: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StationCollector(hub, station_id, queues))  # type: ignore[arg-type]
        self.latency = Histogram("inspector_latency_seconds", "Capture to verdict, per result as the gateway "
                                 "receives them (the result's latency_ms).", buckets=LATENCY_BUCKETS,
                                 registry=self.registry)

    def observe(self, result: PartResult) -> None:
        if result.latency_ms >= 0:
            self.latency.observe(result.latency_ms / 1000)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
