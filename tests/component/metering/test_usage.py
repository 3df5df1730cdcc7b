"""The usage gate: limits and credits before a call, the durable record after it.

The gate runs against both writers: ``UsageLedger`` in a thread and ``LedgerProcess``, the
writer process the hub ships, through its pipe."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from daemon.core.envelope import Envelope, MessageType, Principal
from daemon.core.errors import CreditsExhausted, ModuleError, RateLimited, Unavailable
from daemon.metering.gate import UsageGate
from daemon.metering.ledger.chain import verify
from daemon.metering.ledger.process import LedgerProcess
from daemon.metering.ledger.writer import UsageLedger
from daemon.runtime.config import PlanConfig


def principal(rate: str | None = None, tenant: str = "t1") -> Principal:
    return Principal(tenant_id=tenant, tenant_name="acme", plan="starter", role="user",
                     permissions=frozenset({"module:use"}), subject="key:abc123", key_id="k1", rate_limit=rate)


def envelope(who: Principal) -> Envelope:
    return Envelope(id="c1", type=MessageType.REQUEST, action="echo", payload={}, principal=who, target="",
                    priority=5, ttl=None, deadline=None, timestamp=0.0, correlation_id="c1", headers={},
                    door="http", trace_id="tr1", bytes_in=42)


@pytest.fixture(params=["in-thread", "writer-process"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UsageLedger]:
    path = tmp_path / "ledger.db"
    opened = UsageLedger(path) if request.param == "in-thread" else LedgerProcess(path)
    async with opened:
        yield opened  # type: ignore[misc]  # the same calls the gate makes, whichever writer


def count(ledger: UsageLedger) -> int:
    return int(sqlite3.connect(ledger.path).execute("SELECT count(*) FROM events").fetchone()[0])


async def test_key_limit_refuses_with_headers_and_is_audited(ledger: UsageLedger) -> None:
    refusals: list[tuple[str, str]] = []
    registry = CollectorRegistry()
    gate = UsageGate(ledger, {"starter": PlanConfig()}, registry,
                     on_refusal=lambda p, reason: refusals.append((p.subject, reason)))
    who = principal(rate="2/min")
    for _ in range(2):
        admission = await gate.admit(envelope(who), now=10.0)
        await gate.record(envelope(who), "echo", {}, 1.0, 5, admission)
    assert admission.headers["RateLimit-Limit"] == "2" and admission.headers["RateLimit-Remaining"] == "0"
    assert "RateLimit-Policy" in admission.headers
    with pytest.raises(RateLimited) as caught:
        await gate.admit(envelope(who), now=11.0)
    err = caught.value
    assert err.http_status == 429 and err.retry_after >= 1
    assert err.headers["Retry-After"] == str(err.retry_after)
    assert err.headers["RateLimit-Remaining"] == "0" and err.headers["RateLimit-Limit"] == "2"
    assert refusals == [("key:abc123", "rate_limited_key_api_calls")]
    assert registry.get_sample_value("democratic_ai_usage_refusals_total",
                                     {"reason": "rate_limited_key_api_calls"}) == 1
    assert count(ledger) == 2  # the refused call was never billed


async def test_plan_limit_applies_per_tenant(ledger: UsageLedger) -> None:
    gate = UsageGate(ledger, {"starter": PlanConfig(rate_limits={"api_calls": "3/s"})})
    for _ in range(3):
        await gate.admit(envelope(principal()), now=0.0)
    with pytest.raises(RateLimited):
        await gate.admit(envelope(principal()), now=0.5)
    await gate.admit(envelope(principal(tenant="t2")), now=0.5)  # another tenant is not affected


async def test_compute_token_bucket_charged_after_the_call(ledger: UsageLedger) -> None:
    gate = UsageGate(ledger, {"starter": PlanConfig(rate_limits={"compute_time": "1000/s"})})
    who = principal()
    admission = await gate.admit(envelope(who), now=0.0)
    await gate.record(envelope(who), "echo", {}, 3000.0, 0, admission, now=0.0)  # 2 s of debt
    with pytest.raises(RateLimited) as caught:
        await gate.admit(envelope(who), now=1.0)
    assert caught.value.retry_after == 1
    await gate.admit(envelope(who), now=2.1)


async def test_credits_debited_with_the_usage_and_exhausted(ledger: UsageLedger) -> None:
    gate = UsageGate(ledger, {"starter": PlanConfig(call_price="0.05")})
    await ledger.top_up("t1", "0.10", "admin:test")
    who = principal()
    for _ in range(2):
        admission = await gate.admit(envelope(who))
        await gate.record(envelope(who), "echo", {}, 1.0, 5, admission)
    assert ledger.balance("t1") == 0
    with pytest.raises(CreditsExhausted) as caught:
        await gate.admit(envelope(who))
    assert caught.value.http_status == 402
    rows = sqlite3.connect(ledger.path).execute("SELECT kind, credits FROM events ORDER BY seq").fetchall()
    assert rows == [("top_up", "0.10"), ("usage", "-0.05"), ("usage", "-0.05")]
    # a top-up from another process (the CLI) is seen at the next refusal
    async with UsageLedger(ledger.path) as cli:
        await cli.top_up("t1", "1", "admin:cli")
    gate._refreshed.clear()  # skip the 1 s refresh throttle
    await gate.admit(envelope(who))


async def test_concurrent_calls_cannot_overspend(ledger: UsageLedger) -> None:
    gate = UsageGate(ledger, {"starter": PlanConfig(call_price="1")})
    await ledger.top_up("t1", "3", "admin:test")
    who = principal()
    outcomes = await asyncio.gather(*(gate.admit(envelope(who)) for _ in range(10)), return_exceptions=True)
    admitted = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(admitted) == 3 and sum(isinstance(o, CreditsExhausted) for o in outcomes) == 7
    await asyncio.gather(*(gate.record(envelope(who), "echo", {}, 1.0, 1, a) for a in admitted))
    assert ledger.balance("t1") == 0


async def test_a_failed_call_gives_its_reservation_back(ledger: UsageLedger) -> None:
    gate = UsageGate(ledger, {"starter": PlanConfig(call_price="1")})
    await ledger.top_up("t1", "1", "admin:test")
    admission = await gate.admit(envelope(principal()))
    with pytest.raises(CreditsExhausted):
        await gate.admit(envelope(principal()))
    del admission  # the call failed; the pipeline dropped it
    gc.collect()
    await gate.admit(envelope(principal()))


async def test_impossible_module_usage_is_a_module_error_and_not_billed(ledger: UsageLedger) -> None:
    gate = UsageGate(ledger, {"starter": PlanConfig()})
    await ledger.top_up("t1", "5", "admin:test")
    who = principal()
    for usage, ms in (({"audio_s": -1.0}, 1.0), ({}, float("inf")), ({"images": "many"}, 1.0)):
        admission = await gate.admit(envelope(who))
        with pytest.raises(ModuleError):
            await gate.record(envelope(who), "echo", usage, ms, 0, admission)  # type: ignore[arg-type]
    assert count(ledger) == 1 and ledger.balance("t1") == 5
    assert gate._reserved == {}


async def test_full_disk_is_unavailable_and_nothing_billed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with UsageLedger(path) as ledger:
        await ledger.top_up("t1", "5", "admin:test")
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    async with UsageLedger(path, max_page_count=pages) as ledger:
        gate = UsageGate(ledger, {"starter": PlanConfig()})
        who = principal()
        big = {f"unit_{i}": 1.0 for i in range(30)}
        failures = 0
        for _ in range(100):
            admission = await gate.admit(envelope(who))
            try:
                await gate.record(envelope(who), "echo", big, 1.0, 0, admission)
            except Unavailable:
                failures += 1
        assert failures > 0
        billed = 100 - failures
        assert ledger.balance("t1") == Decimal(5) - billed * Decimal("0.05")
        assert gate._reserved == {}
    result = verify(path)
    assert result.ok and result.count == 1 + billed


async def test_opaque_subject_only(ledger: UsageLedger) -> None:
    gate = UsageGate(ledger, {"starter": PlanConfig()})
    who = principal()
    admission = await gate.admit(envelope(who))
    await gate.record(envelope(who), "echo", {}, 1.0, 0, admission)
    subject, trace = sqlite3.connect(ledger.path).execute("SELECT subject, trace_id FROM events").fetchone()
    assert (subject, trace) == ("key:abc123", "tr1")


async def test_limiters_of_keys_gone_idle_are_dropped(ledger: UsageLedger) -> None:
    gate = UsageGate(ledger, {"starter": PlanConfig(rate_limits={"api_calls": "5/min"})})
    for n in range(200):  # 200 keys of 200 tenants, each calling once
        who = Principal(tenant_id=f"t{n}", tenant_name="acme", plan="starter", role="user",
                        permissions=frozenset({"module:use"}), subject=f"key:k{n}", key_id=f"k{n}",
                        rate_limit="2/min")
        await gate.admit(envelope(who), now=1000.0)
    assert gate.limiters == 400
    # ten minutes later one key calls: every window of the others is over, their limiters go
    await gate.admit(envelope(principal(rate="2/min")), now=1600.0)
    assert gate.limiters == 2
    # a key still inside its window keeps its count: dropping is never a reset
    who = principal(rate="2/min")
    await gate.admit(envelope(who), now=1601.0)
    gate.sweep(1602.0)
    with pytest.raises(RateLimited):
        await gate.admit(envelope(who), now=1603.0)


async def test_a_callers_checks_built_once_follow_the_limiters_a_sweep_drops(ledger: UsageLedger) -> None:
    gate = UsageGate(ledger, {"starter": PlanConfig(rate_limits={"api_calls": "5/min", "bandwidth": "10000/min"})})
    who = principal(rate="2/min")
    await gate.admit(envelope(who), now=1000.0)
    await gate.admit(envelope(who), now=1001.0)
    with pytest.raises(RateLimited):  # the cached checks hold the key's own limiter: its count is kept
        await gate.admit(envelope(who), now=1002.0)
    # the bandwidth check costs each call's own bytes, not the first call's: 42 + 42 of 100, then over
    bytes_gate = UsageGate(ledger, {"starter": PlanConfig(rate_limits={"bandwidth": "100/min"})})
    anyone = principal()
    await bytes_gate.admit_call(anyone, "echo", 42, now=1000.0)
    await bytes_gate.admit_call(anyone, "echo", 42, now=1000.0)
    with pytest.raises(RateLimited):
        await bytes_gate.admit_call(anyone, "echo", 42, now=1000.0)
    await bytes_gate.admit_call(anyone, "echo", 0, now=1000.0)
    # ten minutes later the sweep drops the key's limiter, and the next call gets a fresh one
    await gate.admit(envelope(who), now=1600.0)
    assert gate.limiters == 3
    await gate.admit(envelope(who), now=1601.0)
    with pytest.raises(RateLimited):
        await gate.admit(envelope(who), now=1602.0)
