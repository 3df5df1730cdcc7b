"""Prometheus metrics of the hub, on the hub's own registry (never the global one).

Label children are bounded: remote modules come and go with actions and module ids of their
own choosing, so a child nobody has observed for ``idle_s`` seconds is removed (its series
ends; Prometheus reads a counter that comes back as a reset), at most ``max_children``
call children are kept (least recently used first out), and a module's gauges go when the
module does.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class HubMetrics:
    """The hub's counters and gauges on a private registry; the pipeline's CallObserver, rendered at /metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None, *, idle_s: float = 600.0,
                 max_children: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry or CollectorRegistry()
        self.idle_s = idle_s
        self.max_children = max_children
        self.clock = clock
        #: (door, action, code) -> (counter child, histogram child, last observed), least recently used first
        self._children: collections.OrderedDict[tuple[str, str, str], list[Any]] = collections.OrderedDict()
        #: (door, action) -> how many of ``_children`` share its histogram child
        self._latency_users: dict[tuple[str, str], int] = {}
        self._modules: set[str] = set()
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
        """Count one answered call and its latency (label children cached: .labels() is slow); evict idle ones."""
        now = self.clock()
        key = (door, action, code)
        children = self._children.get(key)
        if children is None:
            children = [self.requests.labels(door, action, code), self.latency.labels(door, action), now]
            self._children[key] = children
            self._latency_users[door, action] = self._latency_users.get((door, action), 0) + 1
            self._evict(now)
        else:
            children[2] = now
            self._children.move_to_end(key)
        children[0].inc()
        children[1].observe(seconds)

    def _evict(self, now: float) -> None:
        """Remove the least recently used children while over ``max_children`` or idle ``idle_s``."""
        while self._children:
            key, (_, _, seen) = next(iter(self._children.items()))
            if len(self._children) <= self.max_children and now - seen < self.idle_s:
                return
            del self._children[key]
            self.requests.remove(*key)
            door_action = key[:2]
            self._latency_users[door_action] -= 1
            if not self._latency_users[door_action]:
                del self._latency_users[door_action]
                self.latency.remove(*door_action)

    def call_children(self) -> int:
        """How many (door, action, code) children are held now."""
        return len(self._children)

    def set_module_stats(self, stats: Mapping[str, tuple[int, int]]) -> None:
        """Each module's (in flight, queued) gauges; a module that is gone loses its gauges."""
        for gone in self._modules - stats.keys():
            self.in_flight.remove(gone)
            self.queue_depth.remove(gone)
        for module_id, (in_flight, queued) in stats.items():
            self.in_flight.labels(module_id).set(in_flight)
            self.queue_depth.labels(module_id).set(queued)
        self._modules = set(stats)

    def render(self) -> bytes:
        """The Prometheus text of the registry (idle children evicted first), then each ``extra`` source's samples."""
        self._evict(self.clock())
        return generate_latest(self.registry) + b"".join(source() for source in self.extra)
