"""Plans as data, invoices and usage reports computed from the ledger alone.

An invoice is a pure function of (ledger entries in the period, plan, period):
the same ledger gives the same invoice, to the yen, every time.

* Periods are calendar months ``YYYY-MM`` (or years ``YYYY``, billed at the
  plan's yearly base with twelve months of inclusion), bounded in UTC:
  ``[first instant of the month, first instant of the next)``.  The tenant's
  timezone is shown beside them, it does not move them.
* Money is Decimal.  Each line's amount is rounded ROUND_HALF_UP to the
  currency's minor unit (JPY 0 places, USD 2, ...); the subtotal is the sum of
  the rounded lines, so the lines always add up to it.
* Metrics a plan can price: api_calls, compute_hours, storage_gb,
  bandwidth_gb, and any model unit a module reports (audio_s, images, ...).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.core.envelope import Principal
from daemon.core.errors import ValidationError
from daemon.core.i18n import t
from daemon.metering.ledger.chain import SELECT, connect_ro
from daemon.metering.ledger.rows import LedgerRow
from daemon.metering.ledger.totals import UsageTotals, read_totals
from daemon.metering.ledger.writer import LEDGER_FILE, Ledger
from daemon.runtime.config import PlanConfig

log = logging.getLogger(__name__)

#: ISO 4217 minor units where they are not 2
MINOR_UNITS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "UGX": 0,
               "BHD": 3, "JOD": 3, "KWD": 3, "OMR": 3, "TND": 3}
_QUANTITY = Decimal("0.000001")  # derived quantities (hours, GB) are exact to 6 places
_PERIOD = re.compile(r"^(\d{4})(?:-(\d{2}))?$")


@dataclass(frozen=True, slots=True)
class Period:
    """A billing period: a calendar month or year, as a half-open UTC interval."""

    label: str  # "2026-03" or "2026"
    cycle: str  # "monthly" | "yearly"
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive


def parse_period(text: str) -> Period:
    """``"2026-03"`` -> March 2026 in UTC; ``"2026"`` -> the year.  Anything else: ValidationError."""
    match = _PERIOD.match(text.strip()) if isinstance(text, str) else None
    year = int(match.group(1)) if match else 0
    month = int(match.group(2)) if match and match.group(2) else None
    if not match or not 2000 <= year <= 9998 or (month is not None and not 1 <= month <= 12):
        raise ValidationError(t("errors.metering_billing.period_not_yyyy_mm", text=text),
                              {"period": str(text)})
    if month is None:
        return Period(f"{year:04d}", "yearly", datetime(year, 1, 1, tzinfo=UTC),
                      datetime(year + 1, 1, 1, tzinfo=UTC))
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if month == 12 else datetime(year, month + 1, 1, tzinfo=UTC)
    return Period(f"{year:04d}-{month:02d}", "monthly", datetime(year, month, 1, tzinfo=UTC), end)


def current_period(now: float) -> str:
    """The ``YYYY-MM`` month holding ``now`` (epoch seconds), in UTC."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


def minor_unit(currency: str) -> Decimal:
    """The currency's smallest amount: 1 for JPY, 0.01 for USD (ISO 4217; 2 places unless listed)."""
    return Decimal(1).scaleb(-MINOR_UNITS.get(currency.upper(), 2))


def money(amount: Decimal, currency: str) -> Decimal:
    """``amount`` rounded half-up to the currency's minor unit."""
    return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def metric_quantities(totals: UsageTotals) -> dict[str, Decimal]:
    """The billable quantities of a period, in the units plans price them in."""
    def dec(value: float) -> Decimal:
        return Decimal(repr(float(value)))  # repr: the shortest exact spelling of the float

    quantities = {name: dec(value) for name, value in totals.units.items()}
    storage_gb = quantities.get("storage_gb", Decimal(0)) + quantities.get("storage_bytes", Decimal(0)) / 10**9
    quantities.update({
        "api_calls": Decimal(totals.api_calls),
        "compute_hours": (dec(totals.compute_ms) / 3_600_000).quantize(_QUANTITY, ROUND_HALF_UP),
        "storage_gb": storage_gb.quantize(_QUANTITY, ROUND_HALF_UP),
        "bandwidth_gb": (Decimal(totals.bytes_in + totals.bytes_out) / 10**9).quantize(_QUANTITY, ROUND_HALF_UP),
    })
    # normalized: "23457", not "23457.000000"; :f formatting never shows an exponent
    return {name: q.normalize() for name, q in sorted(quantities.items())}


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One priced line; ``amount`` is already rounded to the currency, ``metric`` None for the base fee."""

    description: str
    metric: str | None
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal

    def to_dict(self) -> dict[str, Any]:
        """Decimals as plain strings (never an exponent), for JSON."""
        return {"description": self.description, "metric": self.metric, "quantity": _text(self.quantity),
                "unit_price": _text(self.unit_price), "amount": _text(self.amount)}


@dataclass(frozen=True, slots=True)
class Invoice:
    """A tenant's invoice for a period: lines, their rounded subtotal, and the ledger span it came from."""

    tenant_id: str
    tenant_name: str
    plan: str
    currency: str
    period: Period
    timezone: str
    lines: tuple[InvoiceLine, ...]
    subtotal: Decimal
    usage: Mapping[str, Decimal]
    events: int
    first_seq: int | None
    last_seq: int | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON invoice: UTC bounds and the same bounds in the tenant's timezone."""
        zone = _zone(self.timezone)
        return {
            "tenant": self.tenant_name or self.tenant_id,
            "tenant_id": self.tenant_id,
            "plan": self.plan,
            "currency": self.currency,
            "period": self.period.label,
            "cycle": self.period.cycle,
            "period_start": self.period.start.isoformat(),
            "period_end": self.period.end.isoformat(),
            "timezone": self.timezone,
            "period_start_local": self.period.start.astimezone(zone).isoformat(),
            "period_end_local": self.period.end.astimezone(zone).isoformat(),
            "lines": [line.to_dict() for line in self.lines],
            "subtotal": _text(self.subtotal),
            "usage": {k: _text(v) for k, v in self.usage.items()},
            "ledger": {"events": self.events, "first_seq": self.first_seq, "last_seq": self.last_seq},
        }

    def render_table(self) -> str:
        """A plain-text invoice for a terminal."""
        head = (f"Invoice {self.period.label} - {self.tenant_name or self.tenant_id} ({self.plan}, "
                f"{self.currency})\nPeriod (UTC): {self.period.start:%Y-%m-%d %H:%M} .. "
                f"{self.period.end:%Y-%m-%d %H:%M}   timezone: {self.timezone}")
        rows = [("Description", "Quantity", "Unit price", "Amount")]
        rows += [(ln.description, _text(ln.quantity), _text(ln.unit_price), _text(ln.amount))
                 for ln in self.lines]
        rows.append(("Subtotal", "", "", _text(self.subtotal)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        body = [f"{r[0]:<{widths[0]}}  " + "  ".join(f"{r[i]:>{widths[i]}}" for i in (1, 2, 3)) for r in rows]
        body.insert(1, "-" * len(body[0]))
        body.insert(len(body) - 1, "-" * len(body[0]))
        return "\n".join([head, "", *body])


def _text(value: Decimal) -> str:
    return f"{value:f}"


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def build_invoice(totals: UsageTotals, plan_name: str, plan: PlanConfig, period: Period,
                  tz: str = "UTC", tenant_name: str = "") -> Invoice:
    """The invoice of ``totals`` under ``plan``: base fee, then one overage line per metric over."""
    currency = plan.currency.upper()
    yearly = period.cycle == "yearly"
    base = money(Decimal(plan.base_yearly if yearly else plan.base_monthly), currency)
    lines = [InvoiceLine(f"{plan_name.capitalize()} Plan - Base Fee", None, Decimal(1), base, base)]
    usage = metric_quantities(totals)
    for metric, price in plan.overage.items():
        included = Decimal(str(plan.included.get(metric, 0))) * (12 if yearly else 1)
        over = (usage.get(metric, Decimal(0)) - included).normalize()
        if over > 0:
            unit_price = Decimal(price)
            lines.append(InvoiceLine(f"{metric} - Overage", metric, over, unit_price,
                                     money(over * unit_price, currency)))
    if _zone(tz) is UTC and tz != "UTC":
        log.warning("unknown timezone %r for tenant %s; showing UTC", tz, totals.tenant_id)
        tz = "UTC"
    return Invoice(totals.tenant_id, tenant_name, plan_name, currency, period, tz, tuple(lines),
                   sum((ln.amount for ln in lines), Decimal(0)), usage, totals.events,
                   totals.first_seq, totals.last_seq)


async def invoice(ledger: Ledger, tenant_id: str, plan_name: str, plan: PlanConfig, period: str,
                  tz: str = "UTC", tenant_name: str = "") -> Invoice:
    """The tenant's invoice for ``period`` (``YYYY-MM``), from the open ledger."""
    bounds = parse_period(period)
    totals = await ledger.totals(tenant_id, bounds.start, bounds.end)
    return build_invoice(totals, plan_name, plan, bounds, tz, tenant_name)


def invoice_from_file(path: str | Path, tenant_id: str, plan_name: str, plan: PlanConfig, period: str,
                      tz: str = "UTC", tenant_name: str = "") -> Invoice:
    """The same, read straight from the ledger file (the CLI; works while the daemon runs)."""
    bounds = parse_period(period)
    totals = read_totals(path, tenant_id, bounds.start, bounds.end)
    return build_invoice(totals, plan_name, plan, bounds, tz, tenant_name)


def report(inv: Invoice, balance: Decimal | None) -> dict[str, Any]:
    """The usage summary shape shared by ``GET /v1/usage`` and ``democratic-ai usage``."""
    data = inv.to_dict()
    return {
        "tenant": data["tenant"], "tenant_id": inv.tenant_id, "plan": inv.plan, "period": inv.period.label,
        "period_start": data["period_start"], "period_end": data["period_end"], "timezone": inv.timezone,
        "currency": inv.currency, "usage": data["usage"], "events": inv.events,
        "estimated_invoice": {"lines": data["lines"], "subtotal": data["subtotal"]},
        "credits": {"prepaid": balance is not None, "balance": None if balance is None else f"{balance:f}"},
    }


class UsageReporter:
    """``GET /v1/usage`` without a transport: the caller's own tenant only, never another's."""

    def __init__(self, ledger: Ledger, plans: Mapping[str, PlanConfig], *, default_plan: str = "starter",
                 timezone_of: Callable[[str], Awaitable[str]] | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._ledger = ledger
        self._plans = dict(plans)
        self._default = default_plan
        self._timezone_of = timezone_of
        self._wall = wall_clock

    async def usage_report(self, principal: Principal, period: str | None = None) -> dict[str, Any]:
        """The caller's usage and estimated invoice for ``period`` (default: this month, UTC)."""
        plan_name = principal.plan if principal.plan in self._plans else self._default
        # asked at each report, never cached: a tenant's timezone is the one it has now
        tz = await self._timezone_of(principal.tenant_id) if self._timezone_of else "UTC"
        inv = await invoice(self._ledger, principal.tenant_id, plan_name, self._plans[plan_name],
                            period or current_period(self._wall()), tz, principal.tenant_name)
        return report(inv, self._ledger.balance(principal.tenant_id))


def export_usage(state_dir: Path, export: dict[str, Any], plans: Mapping[str, PlanConfig],
                 default_plan: str = "starter") -> dict[str, Any]:
    """``tenant export``'s ledger part: every usage event of the tenant and an invoice per month.

    Read-only on the ledger file, so it works while the daemon runs.
    """
    tenant = export["tenant"]
    path = state_dir / LEDGER_FILE
    if not path.exists():
        return {"usage_events": [], "invoices": []}
    with contextlib.closing(connect_ro(path)) as conn:
        rows = [LedgerRow._make(row) for row in
                conn.execute(f"{SELECT} WHERE tenant_id = ? ORDER BY seq", (tenant["id"],))]
    months = sorted({datetime.fromtimestamp(row.ts_us / 1e6, UTC).strftime("%Y-%m") for row in rows})
    plan_name = tenant.get("plan") if tenant.get("plan") in plans else default_plan
    invoices = [invoice_from_file(path, tenant["id"], plan_name, plans[plan_name], month,
                                  tenant.get("timezone") or "UTC", tenant["name"]).to_dict() for month in months]
    return {"usage_events": [_exported(row) for row in rows], "invoices": invoices}


def _exported(row: LedgerRow) -> dict[str, Any]:
    event = row.to_dict()
    del event["prev_hash"]  # an export shows the hashed fields and the hash, not the link
    return event
