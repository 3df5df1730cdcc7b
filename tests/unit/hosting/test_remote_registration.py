"""A remote module's register frame, and what its reported usage may bill."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.core.errors import ValidationError
from daemon.hosting.remote_module import RemoteModule, parse_registration
from modules.sdk import Call


def frame(**extra: Any) -> dict[str, Any]:
    return {"type": "register", "module_id": "ocr-1", "capabilities": [{"action": "image.ocr"}], **extra}


async def never(_: dict[str, Any]) -> None:
    raise AssertionError("nothing is sent in these tests")


def module(units: dict[str, float]) -> RemoteModule:
    reg = parse_registration(frame(units=units), 16)
    return RemoteModule(reg.module_id, reg.concurrency, reg.capabilities, never, units=reg.units)


def test_a_register_frame_declares_the_units_it_bills_with_a_cap_per_call() -> None:
    reg = parse_registration(frame(units={"pages": 50, "audio_s": 3600.5}), 16)
    assert reg.units == {"pages": 50.0, "audio_s": 3600.5}
    assert parse_registration(frame(), 16).units == {}  # declares none: bills none


@pytest.mark.parametrize(("units", "pointer"), [
    (["pages"], "/units"),
    ({"Pages": 5}, "/units"),
    ({"pages": 0}, "/units/pages"),
    ({"pages": -1}, "/units/pages"),
    ({"pages": True}, "/units/pages"),
    ({"pages": "5"}, "/units/pages"),
    ({"pages": 1e13}, "/units/pages"),
    ({f"u{i}": 1 for i in range(33)}, "/units"),
])
def test_bad_units_are_refused_naming_the_field(units: Any, pointer: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_registration(frame(units=units), 16)
    assert refused.value.details["pointer"] == pointer


@pytest.mark.parametrize("action", ["Image.OCR", "a" * 129, "", "x y", 7])
def test_a_capability_with_a_bad_action_name_is_refused_naming_it(action: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_registration(frame(capabilities=[{"action": "ok.one"}, {"action": action}]), 16)
    assert refused.value.details["pointer"] == "/capabilities/1/action"


def test_a_register_frame_may_declare_at_most_256_capabilities() -> None:
    caps = [{"action": f"a.{i}"} for i in range(257)]
    with pytest.raises(ValidationError) as refused:
        parse_registration(frame(capabilities=caps), 16)
    assert refused.value.details["pointer"] == "/capabilities"


def test_usage_bills_declared_units_only_each_capped_per_call() -> None:
    ocr = module({"pages": 10})
    call = Call(id="c1", action="image.ocr", tenant_id="acme")
    ocr.bill({"pages": 3, "api_calls": 1_000_000, "storage_gb": 500}, call)
    assert call.usage == {"pages": 3.0}
    capped = Call(id="c2", action="image.ocr", tenant_id="acme")
    ocr.bill({"pages": 1e9}, capped)
    assert capped.usage == {"pages": 10.0}


@pytest.mark.parametrize("qty", [-5, float("nan"), float("inf"), True, "3", None])
def test_a_quantity_that_is_not_a_finite_non_negative_number_bills_nothing(qty: Any) -> None:
    ocr = module({"pages": 10})
    call = Call(id="c1", action="image.ocr", tenant_id="acme")
    ocr.bill({"pages": qty}, call)
    assert call.usage == {}


def test_a_platform_module_shows_no_owner_and_a_tenant_module_shows_its_own() -> None:
    reg = parse_registration(frame(), 16)
    platform = RemoteModule(reg.module_id, 4, reg.capabilities, never, owner="key:dai_root0000")
    mine = RemoteModule(reg.module_id, 4, reg.capabilities, never, owner="key:dai_acme0000", tenant_id="t-acme")
    assert platform.describe() == {"scope": "platform"}
    assert mine.describe() == {"scope": "tenant", "tenant_id": "t-acme", "owner": "key:dai_acme0000"}
