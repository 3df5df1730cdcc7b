"""The router's decisions: direct, least loaded, round robin on ties, cache invalidation, tenants, names."""

import pytest

from daemon.core.errors import CapabilityNotFound, ModuleNotFound, ValidationError
from daemon.core.router import ModuleEntry, Router, check_action


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


def test_unknown_actions_are_not_remembered() -> None:
    router = make_router({})
    router.add(ModuleEntry("a", frozenset({"echo"}), 4))
    for i in range(1000):
        assert router.route(f"nobody.has.{i}") is None
        assert not router.has_action(f"nobody.has.{i}")
    assert router.route("echo") == "a"
    assert router.cached_actions() == 1  # only the action a module has


def test_a_tenant_module_serves_its_own_tenant_only() -> None:
    router = make_router({})
    router.add(ModuleEntry("acme-ocr", frozenset({"acme.ocr"}), 16, tenant_id="acme"))
    assert router.route("acme.ocr", tenant_id="acme") == "acme-ocr"
    assert router.route("acme.ocr", tenant_id="globex") is None
    assert router.broadcast("acme.ocr", tenant_id="globex") == []
    with pytest.raises(ModuleNotFound):  # as a target it does not exist for anyone else either
        router.route("acme.ocr", target="acme-ocr", tenant_id="globex")


def test_platform_modules_serve_every_tenant_and_a_tenant_may_add_its_own_beside_them() -> None:
    router = make_router({"local": 4})  # the platform module is busy: the tenant's idle one wins its calls
    router.add(ModuleEntry("local", frozenset({"x"}), 4))
    router.add(ModuleEntry("mine", frozenset({"x"}), 16, tenant_id="acme"))
    assert router.platform_serves("x")
    assert router.route("x", tenant_id="acme") == "mine"
    assert [router.route("x", tenant_id="globex") for _ in range(3)] == ["local"] * 3
    assert router.visible("mine", "acme") and not router.visible("mine", "globex")
    assert router.visible("local", "globex")


def test_the_tenant_filter_follows_membership() -> None:
    router = make_router({})
    router.add(ModuleEntry("mine", frozenset({"x"}), 4, tenant_id="acme"))
    router.remove("mine")
    router.add(ModuleEntry("shared", frozenset({"x"}), 4))
    assert router.route("x", tenant_id="globex") == "shared"
    assert not router.platform_serves("y")


@pytest.mark.parametrize("action", ["echo", "text.summarize", "audio.vad.stream", "a", "x_y-z.0", "9lives",
                                    "a" * 128])
def test_plain_action_names_are_valid(action: str) -> None:
    assert check_action(action) == action


@pytest.mark.parametrize("action", ["", "a" * 129, "Echo", ".echo", "-x", "echo ", "e/cho", "ech\u00f6", "\ud800",
                                    "a\nb", 5, None, ["echo"]])
def test_other_action_names_are_a_validation_error_naming_the_field(action: object) -> None:
    with pytest.raises(ValidationError) as refused:
        check_action(action, "/capabilities/0/action")
    assert refused.value.details["pointer"] == "/capabilities/0/action"
