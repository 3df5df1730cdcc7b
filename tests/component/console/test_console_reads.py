"""The console's reads of a real ledger file, and its static files served with their headers."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.api.http_api import ApiRequest
from daemon.console.overview import (
    LATENCY_WINDOW_S,
    Reuse,
    first_seq_since,
    read_latencies,
    read_tenant_calls,
    read_usage_series,
)
from daemon.console.static import CSP, StaticFiles
from daemon.core.errors import NotFound
from daemon.metering.ledger.chain import connect_ro
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.writer import UsageLedger


def us(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1_000_000)


def event(ts: str, tenant: str = "acme", action: str = "echo", module: str = "echo", **kw: object) -> UsageEvent:
    return UsageEvent(tenant_id=tenant, subject="key:abc", action=action, module=module, plan="starter",
                      ts=datetime.fromisoformat(ts).timestamp(), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def ledger(tmp_path: Path) -> Path:
    """A day of usage: acme before and after midnight, globex once, a top-up that is no call."""
    path = tmp_path / "ledger.db"
    async with UsageLedger(path) as ledger:
        await ledger.append(event("2026-10-31T23:59:00+00:00", compute_ms=5.0))
        await ledger.append(event("2026-11-30T10:00:10+00:00", compute_ms=10.0))
        await ledger.append(event("2026-11-30T10:00:50+00:00", compute_ms=20.0, api_calls=2))
        await ledger.append(event("2026-11-30T10:02:00+00:00", action="text.summarize", module="text",
                                  compute_ms=300.0))
        await ledger.append(event("2026-11-30T10:02:30+00:00", tenant="globex", compute_ms=30.0))
        await ledger.append(UsageEvent(tenant_id="acme", subject="admin:cli", action="credits.top_up",
                                       kind="top_up", api_calls=0, credits=Decimal(100),
                                       ts=datetime.fromisoformat("2026-11-30T10:03:00+00:00").timestamp()))
    return path


def test_the_first_entry_of_a_window_is_found_by_binary_search(ledger: Path) -> None:
    with contextlib.closing(connect_ro(ledger)) as conn:
        assert first_seq_since(conn, us("2026-01-01T00:00:00+00:00")) == 1
        assert first_seq_since(conn, us("2026-11-30T10:00:10+00:00")) == 2
        assert first_seq_since(conn, us("2026-11-30T10:00:11+00:00")) == 3
        assert first_seq_since(conn, us("2027-01-01T00:00:00+00:00")) == 7, "after the head: nothing"


def test_calls_per_minute_by_tenant_and_action(ledger: Path) -> None:
    start = us("2026-11-30T10:00:00+00:00")
    series = read_usage_series(ledger, start, 4, None)
    assert series == [
        {"tenant_id": "acme", "action": "echo", "counts": [3, 0, 0, 0]},
        {"tenant_id": "acme", "action": "text.summarize", "counts": [0, 0, 1, 0]},
        {"tenant_id": "globex", "action": "echo", "counts": [0, 0, 1, 0]},
    ]
    assert [s["tenant_id"] for s in read_usage_series(ledger, start, 4, "globex")] == ["globex"]
    assert read_usage_series(ledger.parent / "none.db", start, 4, None) == []


def test_calls_today_and_this_month_per_tenant(ledger: Path) -> None:
    calls = read_tenant_calls(ledger, (us("2026-11-30T00:00:00+00:00"), us("2026-11-01T00:00:00+00:00")))
    assert calls == {"acme": (4, 4), "globex": (1, 1)}, "October's call and the top-up are not counted"
    since = (us("2026-11-30T00:00:00+00:00"), us("2026-11-01T00:00:00+00:00"))
    assert read_tenant_calls(ledger, since, "globex") == {"globex": (1, 1)}, "a tenant's viewer: its rows only"


def test_answers_are_reused_for_a_moment_per_key_and_kept_bounded() -> None:
    reuse = Reuse(max_age_s=1.5, size=3)
    reuse.put(("tenants", "acme"), ["acme's rows"], now=100.0)
    assert reuse.get(("tenants", "acme"), 101.0) == ["acme's rows"]
    assert reuse.get(("tenants", "globex"), 101.0) is None, "another scope reads for itself"
    assert reuse.get(("tenants", "acme"), 101.5) is None, "stale after 1.5 s"
    for n in range(10):
        reuse.put(n, n, now=200.0 + n)
    assert len(reuse._answers) <= 3


def test_module_latencies_cover_the_last_minute() -> None:
    assert LATENCY_WINDOW_S == 60, "issue 14: p50/p99 over the last minute"


def test_module_latencies_are_percentiles_of_the_ledgers_compute_times(ledger: Path) -> None:
    latencies = read_latencies(ledger, us("2026-11-30T00:00:00+00:00"))
    assert latencies["text"] == (300.0, 300.0)
    p50, p99 = latencies["echo"]
    assert p50 == 20.0 and 29.0 < p99 <= 30.0


def test_an_unreadable_ledger_is_an_error_not_a_blank(tmp_path: Path) -> None:
    broken = tmp_path / "ledger.db"
    broken.write_bytes(b"not a database at all" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        read_usage_series(broken, 0, 1, None)


def request(path: str = "/", **headers: str) -> ApiRequest:
    return ApiRequest("GET", path, headers)


def test_the_page_and_assets_carry_the_security_headers_and_an_etag(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>x</title>")
    (tmp_path / "console.js").write_text("console.log(1)")
    (tmp_path / "notes.txt").write_text("not served")
    files = StaticFiles(tmp_path)
    assert files.names == ["console.js", "index.html"]
    page = files.page(request())
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CSP and page.headers["x-frame-options"] == "DENY"
    script = files.asset(request(), "console.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "no-cache"
    again = files.asset(request(**{"if-none-match": script.headers["etag"]}), "console.js")
    assert again.status == 304 and again.body == b""
    for name in ("notes.txt", "index.html", "..", "missing.js"):
        with pytest.raises(NotFound):
            files.asset(request(), name)


def test_each_language_serves_the_console_section_of_its_catalogue(tmp_path: Path) -> None:
    files = StaticFiles(tmp_path)
    with pytest.raises(NotFound):
        files.page(request())
    assert files.language(request(), "ja").headers["content-type"] == "application/json"
    with pytest.raises(NotFound) as unknown:
        files.language(request(), "fr")
    assert unknown.value.details == {"languages": ["en", "ja", "zh"]}
