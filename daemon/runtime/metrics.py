"""Prometheus metrics of the hub, on the hub's own registry (never the global one).

Label children are bounded: remote modules come and go with actions and module ids of their
own choosing, so a child nobody has observed for ``idle_s`` seconds is removed (its series
ends; Prometheus reads a counter that comes back as a reset), at most ``max_children``
call children are kept (least recently used first out), and a module's gauges go when the
module does.
"""

from __future__ import annotations

import bisect
import collections
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: the histogram's upper bounds as prometheus_client keeps them: floats, +Inf last
_BOUNDS = (*(float(b) for b in LATENCY_BUCKETS), math.inf)
_LE = tuple(floatToGoString(b) for b in _BOUNDS)
#: prometheus_client's own switch for the ``_created`` series, read the way it reads it
_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")
_REQUESTS = ("democratic_ai_requests", "Calls answered, by door, action and result code")
_LATENCY = ("democratic_ai_request_seconds", "Time from a call's arrival to its answer")


class _Calls:
    """One (door, action, code) series: its count, and the (door, action) latency series it shares."""

    __slots__ = ("count", "created", "latency", "seen")

    def __init__(self, latency: _Latency, now: float) -> None:
        self.count = 0.0
        self.created = time.time()
        self.latency = latency
        self.seen = now  # the metrics clock's time of its last call, for eviction


class _Latency:
    """One (door, action) histogram: a count per bucket (not cumulative), the sum, and how many _Calls share it."""

    __slots__ = ("buckets", "created", "sum", "users")

    def __init__(self) -> None:
        self.buckets = [0.0] * len(_BOUNDS)
        self.sum = 0.0
        self.created = time.time()
        self.users = 0


class _CallCollector:
    """The requests counter and the latency histogram, as prometheus_client's Counter and Histogram
    expose them (same families, samples, order and ``_created``), from plain numbers the loop updates
    without a lock: a call costs a few additions, not six method calls and three mutexes."""

    def __init__(self, calls: dict[tuple[str, str, str], _Calls], latency: dict[tuple[str, str], _Latency]) -> None:
        self._calls = calls
        self._latency = latency

    def describe(self) -> Iterable[Metric]:
        return [Metric(*_REQUESTS, "counter"), Metric(*_LATENCY, "histogram")]

    def collect(self) -> Iterable[Metric]:
        requests = Metric(*_REQUESTS, "counter")
        for (door, action, code), calls in list(self._calls.items()):
            labels = {"door": door, "action": action, "code": code}
            requests.add_sample("democratic_ai_requests_total", labels, calls.count)
            if _CREATED:
                requests.add_sample("democratic_ai_requests_created", labels, calls.created)
        latency = Metric(*_LATENCY, "histogram")
        for (door, action), series in list(self._latency.items()):
            labels = {"door": door, "action": action}
            total = 0.0
            for le, count in zip(_LE, series.buckets, strict=True):
                total += count
                latency.add_sample("democratic_ai_request_seconds_bucket", {**labels, "le": le}, total)
            latency.add_sample("democratic_ai_request_seconds_count", labels, total)
            latency.add_sample("democratic_ai_request_seconds_sum", labels, series.sum)
            if _CREATED:
                latency.add_sample("democratic_ai_request_seconds_created", labels, series.created)
        return [requests, latency]


class HubMetrics:
    """The hub's counters and gauges on a private registry; the pipeline's CallObserver, rendered at /metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None, *, idle_s: float = 600.0,
                 max_children: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry or CollectorRegistry()
        self.idle_s = idle_s
        self.max_children = max_children
        self.clock = clock
        #: (door, action, code) -> its series, least recently used first (the LRU order for eviction)
        self._children: collections.OrderedDict[tuple[str, str, str], _Calls] = collections.OrderedDict()
        #: the same series in the order they were made (the order /metrics lists them, as prometheus_client does)
        self._calls: dict[tuple[str, str, str], _Calls] = {}
        #: (door, action) -> its latency histogram, shared by the codes of that door and action
        self._latency: dict[tuple[str, str], _Latency] = {}
        self._modules: set[str] = set()
        #: samples collected elsewhere (the ledger writer's process), appended to /metrics
        self.extra: list[Callable[[], bytes]] = []
        self.registry.register(_CallCollector(self._calls, self._latency))
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
        """Count one answered call and its latency; evict idle series."""
        now = self.clock()
        key = (door, action, code)
        calls = self._children.get(key)
        if calls is None:
            latency = self._latency.get(key[:2])
            if latency is None:
                latency = self._latency[key[:2]] = _Latency()
            latency.users += 1
            calls = self._children[key] = self._calls[key] = _Calls(latency, now)
            self._evict(now)
        else:
            calls.seen = now
            self._children.move_to_end(key)
        calls.count += 1.0
        latency = calls.latency
        latency.sum += seconds
        # the first bucket whose bound is >= seconds, as Histogram.observe picks it
        latency.buckets[bisect.bisect_left(_BOUNDS, seconds)] += 1.0

    def _evict(self, now: float) -> None:
        """Remove the least recently used series while over ``max_children`` or idle ``idle_s``."""
        while self._children:
            key, calls = next(iter(self._children.items()))
            if len(self._children) <= self.max_children and now - calls.seen < self.idle_s:
                return
            del self._children[key]
            del self._calls[key]
            calls.latency.users -= 1
            if not calls.latency.users:
                del self._latency[key[:2]]

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
