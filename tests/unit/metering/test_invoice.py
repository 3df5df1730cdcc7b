"""Invoices as a pure function of a period's totals and a plan: the edges of inclusion."""

from __future__ import annotations

from decimal import Decimal

from daemon.metering.billing import build_invoice, parse_period
from daemon.metering.ledger.totals import UsageTotals
from daemon.runtime.config import PlanConfig

PLAN = PlanConfig(currency="JPY", base_monthly="4900", included={"api_calls": 100, "compute_hours": 2},
                  overage={"api_calls": "0.05", "compute_hours": "50"})


def totals(api_calls: int, compute_ms: float = 0.0) -> UsageTotals:
    return UsageTotals(tenant_id="t1", events=api_calls, api_calls=api_calls, compute_ms=compute_ms, bytes_in=0,
                       bytes_out=0, units={}, credits_debited=Decimal(0), credits_topped_up=Decimal(0),
                       first_seq=1, last_seq=api_calls)


def test_an_invoice_at_exactly_the_included_quantity_has_only_the_base_fee() -> None:
    inv = build_invoice(totals(100, compute_ms=2 * 3_600_000), "starter", PLAN, parse_period("2026-03"))
    assert [(ln.metric, ln.amount) for ln in inv.lines] == [(None, Decimal(4900))]
    assert inv.subtotal == Decimal(4900)


def test_one_call_over_the_included_quantity_is_one_overage_line() -> None:
    inv = build_invoice(totals(101), "starter", PLAN, parse_period("2026-03"))
    assert [(ln.metric, ln.quantity) for ln in inv.lines] == [(None, Decimal(1)), ("api_calls", Decimal(1))]
    assert inv.subtotal == Decimal(4900)  # 0.05 rounds to 0 yen: the line is shown, the amount is 0
