"""Invoices from the ledger, checked against hand-computed figures; the billing CLI."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.cli.main import main as cli_main
from daemon.core.envelope import Principal
from daemon.core.errors import ValidationError
from daemon.metering.billing import UsageReporter, invoice, money, parse_period
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.writer import UsageLedger
from daemon.metering.plans import save_plans
from daemon.runtime.config import PlanConfig


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def usage(ts: str, tenant: str = "t1", **kw: object) -> UsageEvent:
    return UsageEvent(tenant_id=tenant, subject="key:abc", action="echo", plan="starter", ts=at(ts),
                      **kw)  # type: ignore[arg-type]


async def test_starter_invoice_matches_the_hand_computed_example(tmp_path: Path) -> None:
    """Starter, March 2026: 123,457 calls and 101.5 compute hours.

    base                                          4,900
    api_calls overage  23,457 x 0.05 = 1,172.85 -> 1,173   (JPY: 0 decimals, ROUND_HALF_UP)
    compute overage      1.5 h x 50  =    75    ->    75
    subtotal                                      6,148
    """
    async with UsageLedger(tmp_path / "ledger.db") as ledger:
        await ledger.append(usage("2026-03-02T10:00:00+00:00", api_calls=100_000))
        await ledger.append(usage("2026-03-20T10:00:00+00:00", api_calls=23_457,
                                  compute_ms=101.5 * 3_600_000))
        await ledger.append(usage("2026-03-21T10:00:00+00:00", tenant="other", api_calls=999_999))
        inv = await invoice(ledger, "t1", "starter", PlanConfig(), "2026-03", "Asia/Tokyo", "acme")
    lines = [(ln.description, ln.quantity, ln.unit_price, ln.amount) for ln in inv.lines]
    assert lines == [
        ("Starter Plan - Base Fee", 1, Decimal(4900), Decimal(4900)),
        ("api_calls - Overage", 23_457, Decimal("0.05"), Decimal(1173)),
        ("compute_hours - Overage", Decimal("1.5"), Decimal(50), Decimal(75)),
    ]
    assert inv.subtotal == Decimal(6148)
    data = inv.to_dict()
    assert data["subtotal"] == "6148" and data["currency"] == "JPY"
    assert data["lines"][1] == {"description": "api_calls - Overage", "metric": "api_calls",
                                "quantity": "23457", "unit_price": "0.05", "amount": "1173"}
    assert data["period_start"] == "2026-03-01T00:00:00+00:00"
    assert data["period_start_local"] == "2026-03-01T09:00:00+09:00" and data["timezone"] == "Asia/Tokyo"


async def test_period_boundaries_are_utc(tmp_path: Path) -> None:
    plan = PlanConfig(included={"api_calls": 0})
    async with UsageLedger(tmp_path / "ledger.db") as ledger:
        await ledger.append(usage("2026-03-31T23:59:59+00:00", api_calls=3))
        await ledger.append(usage("2026-04-01T00:00:00+00:00", api_calls=5))
        march = await invoice(ledger, "t1", "starter", plan, "2026-03", "Asia/Tokyo")
        april = await invoice(ledger, "t1", "starter", plan, "2026-04", "Asia/Tokyo")
        # reproducible: new usage in April changes nothing about March
        await ledger.append(usage("2026-04-02T00:00:00+00:00", api_calls=7))
        again = await invoice(ledger, "t1", "starter", plan, "2026-03", "Asia/Tokyo")
    assert march.usage["api_calls"] == 3 and april.usage["api_calls"] == 5
    assert march.to_dict() == again.to_dict()


@pytest.mark.parametrize("bad", ["2026-13", "2026-00", "2026/03", "March", "", "26-03", "2026-3", "1999-01"])
def test_bad_period_is_a_validation_error(bad: str) -> None:
    with pytest.raises(ValidationError, match="YYYY-MM"):
        parse_period(bad)


def test_period_parsing() -> None:
    dec = parse_period("2026-12")
    assert (dec.start, dec.end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert parse_period("2026").cycle == "yearly"


def test_rounding_to_the_currency_minor_unit() -> None:
    assert money(Decimal("1172.5"), "JPY") == Decimal(1173)
    assert money(Decimal("1172.49"), "JPY") == Decimal(1172)
    assert money(Decimal("0.005"), "USD") == Decimal("0.01")
    assert money(Decimal("1.0005"), "KWD") == Decimal("1.001")


async def test_yearly_invoice_uses_yearly_base_and_inclusion(tmp_path: Path) -> None:
    async with UsageLedger(tmp_path / "ledger.db") as ledger:
        await ledger.append(usage("2026-06-01T00:00:00+00:00", api_calls=1_000_000))
        inv = await invoice(ledger, "t1", "starter", PlanConfig(), "2026")
    assert [ln.amount for ln in inv.lines] == [Decimal(49000)]  # 1,000,000 < 12 x 100,000


async def test_usage_report_is_the_callers_tenant_only(tmp_path: Path) -> None:
    async with UsageLedger(tmp_path / "ledger.db") as ledger:
        await ledger.append(usage("2026-03-02T00:00:00+00:00", api_calls=10))
        await ledger.append(usage("2026-03-02T00:00:00+00:00", tenant="t2", api_calls=99))
        reporter = UsageReporter(ledger, {"starter": PlanConfig()},
                                 wall_clock=lambda: at("2026-03-15T00:00:00+00:00"))
        who = Principal(tenant_id="t1", tenant_name="acme", plan="starter", role="viewer",
                        permissions=frozenset(), subject="user:u1")
        report = await reporter.usage_report(who, None)
        with pytest.raises(ValidationError):
            await reporter.usage_report(who, "2026-3")
    assert report["period"] == "2026-03" and report["usage"]["api_calls"] == "10"
    assert report["estimated_invoice"]["subtotal"] == "4900"
    assert report["credits"] == {"prepaid": False, "balance": None}


# -- the CLI --------------------------------------------------------------------------------

def make_state(tmp_path: Path) -> Path:
    conn = sqlite3.connect(tmp_path / "tenancy.db")
    conn.execute("CREATE TABLE tenants (id TEXT PRIMARY KEY, name TEXT, plan TEXT, timezone TEXT)")
    conn.execute("INSERT INTO tenants VALUES ('t1', 'acme', 'starter', 'Asia/Tokyo')")
    conn.commit()
    conn.close()
    save_plans(tmp_path, {"starter": PlanConfig()})  # what a hub that served here wrote
    return tmp_path


def cli(*argv: str) -> int:
    """``democratic-ai ARGV`` in this process (the CLI runs its own event loop, as from a shell)."""
    return cli_main(argv)


def test_cli_invoice_verify_and_top_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = make_state(tmp_path)

    async def seed() -> None:
        async with UsageLedger(state / "ledger.db") as ledger:
            await ledger.append(usage("2026-03-02T00:00:00+00:00", api_calls=123_457))

    asyncio.run(seed())  # the CLI runs its own loop, as it does from a shell
    assert cli("invoice", "--tenant", "acme", "--period", "2026-03", "--state-dir", str(state)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["subtotal"] == "6073" and out["timezone"] == "Asia/Tokyo"  # 4,900 + 1,173
    assert cli("credits", "top-up", "--tenant", "acme", "250", "--state-dir", str(state)) == 0
    assert json.loads(capsys.readouterr().out)["balance"] == "250"
    assert cli("usage", "--tenant", "acme", "--period", "2026-03", "--state-dir", str(state)) == 0
    assert json.loads(capsys.readouterr().out)["credits"] == {"prepaid": True, "balance": "250"}
    assert cli("ledger", "verify", "--state-dir", str(state)) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 2


def test_cli_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = make_state(tmp_path)
    assert cli("invoice", "--tenant", "nobody", "--period", "2026-03", "--state-dir", str(state)) == 2
    assert "no tenant named 'nobody'" in capsys.readouterr().err
    assert cli("invoice", "--tenant", "acme", "--period", "2026-3", "--state-dir", str(state)) == 2
    assert "YYYY-MM" in capsys.readouterr().err
    assert cli("credits", "top-up", "--tenant", "acme", "-5", "--state-dir", str(state)) == 2
    assert cli("ledger", "verify", "--state-dir", str(tmp_path / "empty")) == 1


async def test_cli_verify_names_the_first_bad_seq(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with UsageLedger(tmp_path / "ledger.db") as ledger:
        await ledger.append_many(usage("2026-03-02T00:00:00+00:00") for _ in range(5))
    conn = sqlite3.connect(tmp_path / "ledger.db")
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET api_calls = 0 WHERE seq = 4")
    conn.commit()
    conn.close()
    assert cli("ledger", "verify", "--state-dir", str(tmp_path)) == 1
    assert "seq 4" in capsys.readouterr().err


def test_cli_invoice_prices_with_the_plans_the_hub_served_with(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    state = make_state(tmp_path)
    # the hub served with its own starter plan: 2 calls included, 100 a call beyond
    save_plans(state, {"starter": PlanConfig(included={"api_calls": 2}, overage={"api_calls": "100"})})

    async def seed() -> None:
        async with UsageLedger(state / "ledger.db") as ledger:
            await ledger.append(usage("2026-03-02T00:00:00+00:00", api_calls=5))

    asyncio.run(seed())
    assert cli("invoice", "--tenant", "acme", "--period", "2026-03", "--state-dir", str(state)) == 0
    out = json.loads(capsys.readouterr().out)
    assert [line["metric"] for line in out["lines"]] == [None, "api_calls"]
    assert out["subtotal"] == "5200"  # 4,900 + 3 x 100, not the embedded plan's 4,900
    # an explicit --config still wins
    config = tmp_path / "hub.toml"
    config.write_text("[plans.starter]\nbase_monthly = \"10\"\n")
    assert cli("invoice", "--tenant", "acme", "--period", "2026-03", "--config", str(config),
               "--state-dir", str(state)) == 0
    assert json.loads(capsys.readouterr().out)["lines"][0]["amount"] == "10"


def test_cli_invoice_refuses_when_the_hubs_plans_are_unknown(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    state = make_state(tmp_path)
    (state / "plans.json").unlink()  # no hub ever served from this state dir
    assert cli("invoice", "--tenant", "acme", "--period", "2026-03", "--state-dir", str(state)) == 2
    err = capsys.readouterr().err
    assert "plans.json" in err and "--config" in err
    assert cli("usage", "--tenant", "acme", "--period", "2026-03", "--state-dir", str(state)) == 2
