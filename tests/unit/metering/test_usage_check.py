"""The gate's quick check of a usage event never passes one that UsageEvent.validate refuses."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal
from typing import Any

import pytest

from daemon.core.errors import ValidationError
from daemon.metering.gate import _plainly_valid
from daemon.metering.ledger.events import MAX_BYTES, MAX_COMPUTE_MS, UsageEvent

GOOD: dict[str, Any] = {"tenant_id": "t-1", "subject": "key:dai_abc", "action": "echo", "module": "echo",
                        "plan": "starter", "compute_ms": 1.5, "bytes_in": 10, "bytes_out": 20,
                        "credits": -Decimal(0), "ts": 1_700_000_000.0}
ODD: dict[str, list[Any]] = {
    "tenant_id": ["", "x" * 257, "x" * 256],
    "subject": ["", "user@example.com", "s" * 257],
    "action": ["", "a" * 257],
    "compute_ms": [math.nan, math.inf, -0.5, MAX_COMPUTE_MS, MAX_COMPUTE_MS * 2, 3, True, 0.0],
    "bytes_in": [-1, MAX_BYTES + 1, 1.0, True, 0],
    "bytes_out": [-1, MAX_BYTES, MAX_BYTES + 1, 2.5, False],
    "credits": [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("0.01"), Decimal("-0.01"),
                Decimal(0), 0],
    "ts": [math.nan, math.inf, -1.0, 0.0, 5],
    "units": [{}, {"storage_bytes": 5.0}, {"Bad": 1.0}],
    "kind": ["usage", "served", "top_up", "nope"],
    "api_calls": [1, 0, 2],
}


def validates(event: UsageEvent) -> bool:
    try:
        event.validate()
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in ODD.items() for v in values])
def test_an_event_the_quick_check_passes_validates(name: str, value: Any) -> None:
    event = UsageEvent(**{**GOOD, name: value})
    assert not _plainly_valid(event) or validates(event)


def test_the_usual_calls_event_passes_the_quick_check() -> None:
    assert _plainly_valid(UsageEvent(**GOOD))
    assert _plainly_valid(UsageEvent(**{**GOOD, "credits": -Decimal("0.002")}))


def test_pairs_of_odd_values_never_pass_the_quick_check_unvalidated() -> None:
    for (a, va), (b, vb) in itertools.combinations([(n, v) for n, vs in ODD.items() for v in vs], 2):
        if a != b:
            event = UsageEvent(**{**GOOD, a: va, b: vb})
            assert not _plainly_valid(event) or validates(event), (a, va, b, vb)
