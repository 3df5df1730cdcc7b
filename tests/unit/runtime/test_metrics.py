"""The hub's metrics hold a bounded set of label children, however many actions and modules come and go."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from daemon.runtime.metrics import LATENCY_BUCKETS, HubMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def series(metrics: HubMetrics, name: str) -> list[str]:
    return [line for line in metrics.render().decode().splitlines() if line.startswith(name)]


def test_a_child_nobody_observes_for_idle_s_is_removed_from_metrics() -> None:
    clock = Clock()
    metrics = HubMetrics(idle_s=60.0, clock=clock)
    metrics.observe_call("http", "gone.module.action", "OK", 0.01)
    metrics.observe_call("http", "echo", "OK", 0.01)
    clock.now = 50.0
    metrics.observe_call("http", "echo", "OK", 0.01)  # echo is still used
    clock.now = 61.0
    text = metrics.render().decode()
    assert 'action="gone.module.action"' not in text
    assert 'democratic_ai_requests_total{action="echo",code="OK",door="http"} 2.0' in text
    assert metrics.call_children() == 1


def test_at_most_max_children_are_held_least_recently_used_first_out() -> None:
    clock = Clock()
    metrics = HubMetrics(max_children=100, clock=clock)
    for n in range(10_000):  # a remote module churning through action names
        metrics.observe_call("ws", f"churn.{n}", "OK", 0.001)
    assert metrics.call_children() == 100
    assert len(series(metrics, "democratic_ai_requests_total")) == 100
    assert len(series(metrics, "democratic_ai_request_seconds_count")) == 100


def test_the_latency_child_stays_while_another_code_of_its_action_uses_it() -> None:
    clock = Clock()
    metrics = HubMetrics(idle_s=60.0, clock=clock)
    metrics.observe_call("grpc", "echo", "RATE_LIMITED", 0.001)
    clock.now = 30.0
    metrics.observe_call("grpc", "echo", "OK", 0.002)
    clock.now = 70.0  # RATE_LIMITED idle, OK not
    assert series(metrics, "democratic_ai_request_seconds_count") == [
        'democratic_ai_request_seconds_count{action="echo",door="grpc"} 2.0']
    assert all("RATE_LIMITED" not in line for line in series(metrics, "democratic_ai_requests_total"))


def test_a_module_that_is_gone_loses_its_gauges() -> None:
    metrics = HubMetrics()
    metrics.set_module_stats({"echo": (1, 0), "remote-a": (2, 5)})
    metrics.set_module_stats({"echo": (0, 0)})
    assert series(metrics, "democratic_ai_queue_depth{") == ['democratic_ai_queue_depth{module="echo"} 0.0']
    assert series(metrics, "democratic_ai_in_flight{") == ['democratic_ai_in_flight{module="echo"} 0.0']



def test_the_calls_series_read_as_prometheus_clients_counter_and_histogram_would() -> None:
    # the reference: the library's own Counter and Histogram, fed the same calls
    registry = CollectorRegistry()
    requests = Counter("democratic_ai_requests", "Calls answered, by door, action and result code",
                       ["door", "action", "code"], registry=registry)
    latency = Histogram("democratic_ai_request_seconds", "Time from a call's arrival to its answer",
                        ["door", "action"], buckets=LATENCY_BUCKETS, registry=registry)
    metrics = HubMetrics(clock=Clock())
    rng = random.Random(7)
    edges = [0.0, *LATENCY_BUCKETS, 30.5, 1e-9, 0.00050000001]  # each bucket's bound itself, and just past it
    for n in range(3000):
        door, action, code = rng.choice(["http", "ws"]), rng.choice(["echo", "ocr"]), rng.choice(["OK", "NOT_FOUND"])
        seconds = rng.choice(edges) if n % 3 else rng.random() * rng.choice([0.001, 0.1, 40])
        metrics.observe_call(door, action, code, seconds)
        requests.labels(door, action, code).inc()
        latency.labels(door, action).observe(seconds)

    def calls(body: bytes) -> list[str]:  # the two families; _created holds each side's own creation time
        return [line for line in body.decode().splitlines()
                if "democratic_ai_request" in line and "_created" not in line]

    ours = calls(metrics.render())
    assert len(ours) == 8 + 4 * (len(LATENCY_BUCKETS) + 3) + 4  # 8 request series, 4 histograms, 4 headers
    assert ours == calls(generate_latest(registry))
