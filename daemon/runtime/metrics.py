"""Prometheus metrics of the hub, on the hub's own registry (never the global one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class HubMetrics:
    """The hub's counters and gauges on a private registry; the pipeline's CallObserver, rendered at /metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        #: samples collected elsewhere (the ledger writer's process), appended to /metrics
        self.extra: list[Callable[[], bytes]] = []
        self.requests = Counter(
            "democratic_ai_requests", "Calls answered, by door, action and result code",
            ["door", "action", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "democratic_ai_request_seconds", "Time from a call's arrival to its answer",
            ["door", "action"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "democratic_ai_queue_depth", "Calls waiting for a module slot", ["module"], registry=self.registry,
        )
        self.in_flight = Gauge(
            "democratic_ai_in_flight", "Calls a module is running now", ["module"], registry=self.registry,
        )
        self.modules_failed = Gauge(
            "democratic_ai_modules_failed", "Enabled modules that failed to start", registry=self.registry,
        )

    def observe_call(self, door: str, action: str, code: str, seconds: float) -> None:
        """Count one answered call and its latency (label children cached: .labels() is slow)."""
        key = (door, action, code)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(door, action, code), self.latency.labels(door, action))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text of the registry, then each ``extra`` source's samples."""
        return generate_latest(self.registry) + b"".join(source() for source in self.extra)
