"""A usage event as a caller states it, and the checks that keep impossible ones out of the ledger.

The bounds are sanity caps, not quotas: beyond them a module is misreporting, not working hard.
Validation runs on the caller's side (the usage gate, before the ledger queue), so a bad event
is refused with the caller's error and never costs the writer a transaction.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from daemon.core.envelope import new_uuid
from daemon.core.errors import ValidationError
from daemon.core.i18n import t

__all__ = ["KINDS", "MAX_BYTES", "MAX_CALLS", "MAX_COMPUTE_MS", "MAX_TOP_UP", "MAX_UNIT", "MAX_UNITS", "UsageEvent",
           "check_measurements", "top_up_event"]

#: "served": a call this hub ran for a fleet peer; the peer's own ledger bills its caller, so no credits
KINDS = ("usage", "top_up", "account", "served")

# bounds on one event: beyond these a module is misreporting, not working hard
MAX_CALLS = 1_000_000
MAX_COMPUTE_MS = 7 * 24 * 3600 * 1000.0
MAX_BYTES = 1 << 40
MAX_UNIT = 1e12
MAX_UNITS = 32
MAX_TOP_UP = Decimal(10) ** 12
_UNIT_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One billable fact, as the caller states it; seq, hash and final ts come from the writer."""

    tenant_id: str
    subject: str  # opaque: "user:<id>", "key:<prefix>", "admin:<who>"
    action: str
    module: str = ""
    plan: str = ""
    kind: str = "usage"  # "usage" | "top_up" | "account" (opens a prepaid balance at 0) | "served" (for a peer)
    api_calls: int = 1
    compute_ms: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    units: Mapping[str, float] = field(default_factory=dict)  # model units: audio_s, images ...
    credits: Decimal = Decimal(0)  # delta on the tenant's balance
    ts: float = 0.0  # wall clock seconds; 0: when written
    trace_id: str = ""
    event_id: str = field(default_factory=new_uuid)

    def validate(self) -> None:
        """Refuse what cannot be a true measurement, before it gets near the ledger."""
        for name, text in (("tenant_id", self.tenant_id), ("subject", self.subject), ("action", self.action)):
            if not text or len(text) > 256:
                raise ValidationError(t("errors.ledger_events.usage_event_characters", name=name))
        if "@" in self.subject:
            # the ledger outlives people: only opaque ids, so deleting a user leaves anonymous billing
            raise ValidationError(t("errors.ledger_events.usage_event_subject_opaque"))
        if self.kind not in KINDS:
            raise ValidationError(t("errors.ledger_events.usage_event_unknown_kind", kind=self.kind))
        _bounded("api_calls", self.api_calls, MAX_CALLS, integer=True)
        _bounded("bytes_in", self.bytes_in, MAX_BYTES, integer=True)
        check_measurements(self.compute_ms, self.bytes_out, self.units)
        if not isinstance(self.credits, Decimal) or not self.credits.is_finite():
            raise ValidationError(t("errors.ledger_events.usage_event_credits_finite"))
        if self.kind == "usage" and self.credits > 0:
            raise ValidationError(t("errors.ledger_events.usage_event_call_only"))
        if self.kind in ("account", "served") and self.credits != 0:
            raise ValidationError(t("errors.ledger_events.event_carries_no_credits", kind=self.kind))
        if self.kind == "top_up" and not 0 < self.credits <= MAX_TOP_UP:
            raise ValidationError(t("errors.ledger_events.top_up_amount", max_top_up=MAX_TOP_UP))
        if not math.isfinite(self.ts) or self.ts < 0:
            raise ValidationError(t("errors.ledger_events.usage_event_bad_timestamp"))


def top_up_event(tenant_id: str, amount: Decimal | str | int, actor: str, ts: float) -> UsageEvent:
    """A top-up of prepaid credits (the first makes the tenant prepaid); ValidationError for a bad amount."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise ValidationError(t("errors.ledger_events.top_up_not_number", amount=amount)) from None
    if value.is_finite() and value.as_tuple().exponent < -6:  # type: ignore[operator]
        raise ValidationError(t("errors.ledger_events.top_up_most_decimal"))
    return UsageEvent(tenant_id=tenant_id, subject=actor, action="credits.top_up", kind="top_up", api_calls=0,
                      credits=value, ts=ts)


def open_account_event(tenant_id: str, actor: str, ts: float) -> UsageEvent:
    """Makes a tenant prepaid with a balance of 0: its calls are refused until a top-up."""
    return UsageEvent(tenant_id=tenant_id, subject=actor, action="credits.open", kind="account", api_calls=0, ts=ts)


def check_measurements(compute_ms: float, bytes_out: int, units: Mapping[str, float]) -> None:
    """What a module (or its run) measured: finite, non-negative, below absurd caps."""
    _bounded("compute_ms", compute_ms, MAX_COMPUTE_MS)
    _bounded("bytes_out", bytes_out, MAX_BYTES, integer=True)
    if len(units) > MAX_UNITS:
        raise ValidationError(t("errors.ledger_events.usage_event_more_model", max_units=MAX_UNITS))
    for unit, value in units.items():
        if not isinstance(unit, str) or not _UNIT_NAME.match(unit):
            raise ValidationError(t("errors.ledger_events.usage_event_unit_name", unit=unit))
        _bounded(f"units.{unit}", value, MAX_UNIT)


def _bounded(name: str, value: object, cap: float, integer: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        if integer:
            raise ValidationError(t("errors.ledger_events.usage_event_whole_number", name=name))
        raise ValidationError(t("errors.ledger_events.usage_event_number", name=name))
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number) or number < 0 or number > cap:
        raise ValidationError(t("errors.ledger_events.usage_event_outside", name=name, value=value, cap=cap))
