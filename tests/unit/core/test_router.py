"""The router's decisions: direct, least loaded, round robin on ties, cache invalidation."""

import pytest

from daemon.core.errors import CapabilityNotFound, ModuleNotFound
from daemon.core.router import ModuleEntry, Router


def make_router(loads: dict[str, int]) -> Router:
    return Router(load=lambda module_id: loads.get(module_id, 0))


def test_a_target_goes_to_that_module_or_is_module_not_found() -> None:
    router = make_router({})
    router.add(ModuleEntry("a", frozenset({"echo"}), 4))
    router.add(ModuleEntry("b", frozenset({"echo"}), 4))
    assert router.route("echo", target="b") == "b"
    with pytest.raises(ModuleNotFound):
        router.route("echo", target="missing")
    with pytest.raises(CapabilityNotFound):
        router.route("text.summarize", target="a")


def test_an_unknown_action_is_left_to_federation() -> None:
    router = make_router({})
    router.add(ModuleEntry("a", frozenset({"echo"}), 4))
    assert router.route("audio.vad") is None


def test_the_least_loaded_module_relative_to_its_concurrency_wins() -> None:
    loads = {"small": 1, "big": 3}
    router = make_router(loads)
    router.add(ModuleEntry("small", frozenset({"x"}), 2))  # half full
    router.add(ModuleEntry("big", frozenset({"x"}), 8))  # 3/8 full
    assert router.route("x") == "big"
    loads["big"] = 6
    assert router.route("x") == "small"


def test_ties_are_served_round_robin() -> None:
    router = make_router({})
    for name in ("a", "b", "c"):
        router.add(ModuleEntry(name, frozenset({"x"}), 4))
    assert [router.route("x") for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_the_route_cache_forgets_a_module_the_moment_it_goes_or_comes() -> None:
    router = make_router({})
    router.add(ModuleEntry("a", frozenset({"x"}), 4))
    assert router.route("x") == "a"
    router.remove("a")
    assert router.route("x") is None
    router.add(ModuleEntry("b", frozenset({"x"}), 4))
    assert router.route("x") == "b"


def test_broadcast_reaches_every_module_with_the_action() -> None:
    router = make_router({})
    router.add(ModuleEntry("a", frozenset({"tick", "x"}), 4))
    router.add(ModuleEntry("b", frozenset({"tick"}), 4))
    router.add(ModuleEntry("c", frozenset({"x"}), 4))
    assert sorted(router.broadcast("tick")) == ["a", "b"]
