"""fast_init: the same frozen dataclass instances as the generated __init__ makes, built faster."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from daemon.core.envelope import CallRequest, CallResult, Envelope, MessageType, Principal, Receipt
from daemon.core.fastinit import fast_init


@dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: str = "b"
    c: dict[str, Any] = field(default_factory=dict)
    d: tuple[int, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class Fast:
    a: int
    b: str = "b"
    c: dict[str, Any] = field(default_factory=dict)
    d: tuple[int, ...] = ()


@pytest.mark.parametrize(("args", "kwargs"), [
    ((1,), {}), ((1, "x"), {}), ((1,), {"d": (2,)}), ((), {"a": 3, "c": {"k": 1}}), ((1, "x", {"z": 2}, (3,)), {}),
])
def test_the_same_fields_as_the_dataclass_init(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    fast, plain = Fast(*args, **kwargs), Plain(*args, **kwargs)
    assert dataclasses.astuple(fast) == dataclasses.astuple(plain)


def test_a_default_factory_gives_each_instance_its_own_value() -> None:
    first, second = Fast(1), Fast(2)
    assert first.c == {} and first.c is not second.c


def test_the_call_errors_of_a_bad_call_are_the_same() -> None:
    with pytest.raises(TypeError):
        Fast()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Fast(1, nope=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Fast(1, a=1)  # type: ignore[misc]


def test_instances_stay_frozen_comparable_replaceable_and_picklable() -> None:
    fast = Fast(1, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.a = 2  # type: ignore[misc]
    assert fast == Fast(1, "x") and fast != Fast(2, "x")
    assert dataclasses.replace(fast, a=5) == Fast(5, "x")
    assert pickle.loads(pickle.dumps(fast)) == fast


def test_it_refuses_what_it_does_not_handle() -> None:
    @dataclass(slots=True)
    class Mutable:
        a: int

    with pytest.raises(TypeError):
        fast_init(Mutable)


def test_the_pipelines_own_classes_keep_their_defaults() -> None:
    request = CallRequest("echo")
    assert (request.type, request.priority, request.headers, request.door, request.visited) == (
        MessageType.REQUEST, 5, {}, "http", ())
    assert request.headers is not CallRequest("echo").headers
    principal = Principal("t", "T", "starter", "member", frozenset(), "key:x")
    assert principal.auth == "api_key" and principal.key_id is None
    envelope = Envelope("id", MessageType.REQUEST, "echo", {}, principal, "", 5, None, None, 0.0, "id", {}, "http",
                        "trace", 0)
    assert (envelope.source, envelope.hop_count, envelope.assertion) == ("", 0, b"")
    result = CallResult("id", "id", "echo", None, Receipt(1, "h"))
    assert (result.usage, result.result_json, result.headers, result.served_by) == ({}, b"null", {}, "")
