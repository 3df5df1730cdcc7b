"""The usage ledger against real SQLite files: group commit, the chain, damage, a full disk, credits."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from daemon.core.errors import Unavailable, ValidationError
from daemon.metering.ledger.chain import verify
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.writer import UsageLedger
from daemon.runtime.config import LedgerConfig


def ev(tenant: str = "t1", **kw: object) -> UsageEvent:
    return UsageEvent(tenant_id=tenant, subject="key:abc123", action="echo", module="echo", plan="starter",
                      **kw)  # type: ignore[arg-type]


def tamper(path: Path, sql: str, *args: object) -> None:
    """What an attacker with file access does: drop the append-only triggers and edit."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER IF EXISTS events_no_update")
    conn.execute("DROP TRIGGER IF EXISTS events_no_delete")
    conn.execute(sql, args)
    conn.commit()
    conn.close()


async def fill(path: Path, n: int) -> None:
    async with UsageLedger(path) as ledger:
        await ledger.append_many(ev(compute_ms=float(i)) for i in range(n))


async def test_group_commit_many_concurrent_appends(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "ledger.db"
    async with UsageLedger(path, LedgerConfig(batch_max=64, batch_delay_ms=2.0), registry) as ledger:

        async def caller(i: int) -> list[int]:
            return [(await ledger.append(ev(tenant=f"t{i % 4}"))).seq for _ in range(20)]

        per_caller = await asyncio.gather(*(caller(i) for i in range(64)))
        head = ledger.head
    seqs = [s for one in per_caller for s in one]
    assert sorted(seqs) == list(range(1, 64 * 20 + 1))  # unique, no gaps
    assert all(one == sorted(one) for one in per_caller)  # each caller's receipts increase
    batches = registry.get_sample_value("democratic_ai_ledger_batch_size_count")
    assert batches is not None and batches < 64 * 20 / 4  # events really shared fsyncs
    assert registry.get_sample_value("democratic_ai_ledger_events_total", {"plan": "starter"}) == 1280
    assert registry.get_sample_value("democratic_ai_ledger_commit_seconds_count") == batches
    result = verify(path)
    assert result.ok and result.count == 1280 and head.seq == 1280


async def test_receipt_is_the_committed_entry(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with UsageLedger(path) as ledger:
        receipt = await ledger.append(ev(units={"audio_s": 2.5}, bytes_in=10, bytes_out=20))
        # durable before the answer: another connection sees it at once
        row = sqlite3.connect(path).execute("SELECT hash, units FROM events WHERE seq = ?",
                                            (receipt.seq,)).fetchone()
    assert row == (receipt.hash, '{"audio_s":2.5}')


async def test_the_ledger_and_its_journal_are_readable_by_the_hub_alone(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with UsageLedger(path) as ledger:
        await ledger.append(ev())
        modes = {f.name: f.stat().st_mode & 0o777 for f in tmp_path.iterdir() if f.name.startswith("ledger.db")}
    assert modes["ledger.db"] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes  # -wal and -shm hold the same usage


async def test_no_update_or_delete_path(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    await fill(path, 2)
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE events SET compute_ms = 0")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM events")
    conn.close()


async def test_tampered_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    await fill(path, 50)
    assert verify(path).ok
    tamper(path, "UPDATE events SET compute_ms = 0.5 WHERE seq = 17")
    result = verify(path)
    assert not result.ok and result.first_bad_seq == 17 and result.count == 16
    assert "altered" in result.reason


async def test_deleted_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    await fill(path, 20)
    tamper(path, "DELETE FROM events WHERE seq = 9")
    result = verify(path)
    assert not result.ok and result.first_bad_seq == 9 and "missing" in result.reason


async def test_lost_tail_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    await fill(path, 20)
    tamper(path, "DELETE FROM events WHERE seq > 15")
    result = verify(path)
    assert not result.ok and result.first_bad_seq == 16 and "tail" in result.reason


async def test_truncated_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    await fill(path, 3000)  # closes: WAL checkpointed into the main file
    size = path.stat().st_size
    os.truncate(path, size // 2)  # a torn copy / a half-written disk image
    result = verify(path)
    assert not result.ok
    # the surviving half still verifies, up to the first entry the tear took
    assert result.first_bad_seq is not None and 1000 < result.first_bad_seq <= 3000
    assert result.count == result.first_bad_seq - 1  # everything before it did verify


async def test_full_disk_fails_unavailable_and_bills_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    await fill(path, 10)
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    async with UsageLedger(path, max_page_count=pages) as ledger:
        await ledger.top_up("t1", "100", "admin:test")  # fits in the pages we have
        before = ledger.head
        big = {f"unit_{i}": float(i) for i in range(30)}
        with pytest.raises(Unavailable, match="nothing was billed"):
            await asyncio.gather(*(ledger.append(ev(units=big, credits=Decimal("-1"))) for _ in range(200)))
        assert ledger.head == before  # the in-memory head did not move
        assert ledger.balance("t1") == Decimal(100)
    result = verify(path)
    assert result.ok and result.count == before.seq
    # space again: the chain continues from the same head
    async with UsageLedger(path) as ledger:
        receipt = await ledger.append(ev(credits=Decimal("-1")))
        assert receipt.seq == before.seq + 1 and ledger.balance("t1") == Decimal(99)
    assert verify(path).ok


@pytest.mark.parametrize("bad", [
    {"compute_ms": -1.0}, {"compute_ms": float("nan")}, {"bytes_out": 1 << 50}, {"api_calls": 1.5},
    {"units": {"audio_s": -3.0}}, {"units": {"Bad Name": 1.0}}, {"subject": "alice@example.com"},
    {"credits": Decimal("5")}, {"tenant_id": ""},
])
async def test_absurd_events_are_refused_and_ledger_unchanged(tmp_path: Path, bad: dict[str, object]) -> None:
    path = tmp_path / "ledger.db"
    async with UsageLedger(path) as ledger:
        await ledger.append(ev())
        fields = {"tenant_id": "t1", "subject": "key:abc", "action": "echo", **bad}
        with pytest.raises(ValidationError):
            await ledger.append(UsageEvent(**fields))  # type: ignore[arg-type]
        assert ledger.head.seq == 1
    assert verify(path).count == 1


async def test_clock_going_backwards_keeps_ledger_monotonic(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with UsageLedger(path) as ledger:
        for ts in (1_800_000_000.0, 1_700_000_000.0, 1_800_000_001.0):
            await ledger.append(ev(ts=ts))
    stamps = [r[0] for r in sqlite3.connect(path).execute("SELECT ts_us FROM events ORDER BY seq")]
    assert stamps == [1_800_000_000_000_000, 1_800_000_000_000_000, 1_800_000_001_000_000]
    assert verify(path).ok


async def test_the_writer_stamps_with_its_injected_clock(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    now = [1_700_000_000.5]
    async with UsageLedger(path, clock=lambda: now[0]) as ledger:
        await ledger.append(ev())  # no ts of its own: stamped by the writer's clock
        await ledger.top_up("t1", "5", "admin:ops")
        now[0] = 1_600_000_000.0  # the wall clock jumps back a few years
        await ledger.open_account("t2", "admin:ops")
        await ledger.append(ev())
        now[0] = 1_700_000_002.25
        await ledger.append(ev())
    rows = sqlite3.connect(path).execute("SELECT ts_us FROM events ORDER BY seq").fetchall()
    assert [r for (r,) in rows] == [1_700_000_000_500_000] * 4 + [1_700_000_002_250_000]
    assert verify(path).ok


async def test_replayed_event_id_is_refused_alone(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with UsageLedger(path) as ledger:
        first = ev()
        await ledger.append(first)
        results = await asyncio.gather(ledger.append(ev()), ledger.append(first), ledger.append(ev()),
                                       return_exceptions=True)
    assert isinstance(results[1], ValidationError)  # billed once, not twice
    assert [type(r).__name__ for r in results].count("Receipt") == 2
    assert verify(path).ok and verify(path).count == 3


async def test_credits_top_up_debit_and_rebuild_at_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with UsageLedger(path) as ledger:
        assert ledger.balance("t1") is None  # postpaid until its first top-up
        receipt = await ledger.top_up("t1", "10.5", "admin:ops")
        assert receipt.seq == 1 and ledger.balance("t1") == Decimal("10.5")
        await ledger.append(ev(credits=Decimal("-0.05")))
        with pytest.raises(ValidationError):
            await ledger.top_up("t1", "-5", "admin:ops")
        with pytest.raises(ValidationError):
            await ledger.top_up("t1", "abc", "admin:ops")
        await ledger.open_account("t2", "admin:ops")
        assert ledger.balance("t2") == 0
    # debit and usage are one row: the balance is exactly the sum of the entries
    rows = sqlite3.connect(path).execute("SELECT kind, credits FROM events ORDER BY seq").fetchall()
    assert rows == [("top_up", "10.5"), ("usage", "-0.05"), ("account", "0")]
    async with UsageLedger(path) as ledger:
        assert ledger.balance("t1") == Decimal("10.45") and ledger.balance("t2") == 0
    assert verify(path).ok


async def test_a_second_writer_process_chains_onto_the_true_head(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with UsageLedger(path) as daemon_side:
        await daemon_side.append(ev())
        async with UsageLedger(path) as cli_side:  # `credits top-up` while the daemon runs
            await cli_side.top_up("t1", "5", "admin:cli")
        receipt = await daemon_side.append(ev(credits=Decimal("-1")))
        assert receipt.seq == 3 and daemon_side.balance("t1") == Decimal(4)
    assert verify(path).ok


async def test_tampered_balance_cache_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with UsageLedger(path) as ledger:
        await ledger.top_up("t1", "5", "admin:cli")
    tamper(path, "UPDATE credit_balances SET balance = '500'")
    result = verify(path)
    assert not result.ok and "balance" in result.reason


def test_verify_missing_file(tmp_path: Path) -> None:
    result = verify(tmp_path / "nope.db")
    assert not result.ok and "no ledger" in result.reason
    assert not os.path.exists(tmp_path / "nope.db")


async def test_a_spliced_entry_fails_ledger_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rewrite entry 7 with a hash of its own, and entry 8's link to it: entry 8's hash covers its link."""
    from daemon.cli.main import main as cli_main
    from daemon.metering.ledger.chain import SELECT, entry_hash
    from daemon.metering.ledger.rows import LedgerRow

    path = tmp_path / "ledger.db"
    await fill(path, 12)
    conn = sqlite3.connect(path)
    row = LedgerRow._make(conn.execute(f"{SELECT} WHERE seq = 7").fetchone())
    conn.close()
    forged = row._replace(compute_ms=0.0)
    forged_hash = entry_hash(forged.prev_hash, forged.hashed)  # entry 7 on its own verifies
    tamper(path, "UPDATE events SET compute_ms = 0.0, hash = ? WHERE seq = 7", forged_hash)
    tamper(path, "UPDATE events SET prev_hash = ? WHERE seq = 8", forged_hash)  # and 8 links to it
    assert cli_main(["ledger", "verify", "--state-dir", str(tmp_path)]) == 1
    assert "seq 8" in capsys.readouterr().err
    result = verify(path)
    assert not result.ok and result.first_bad_seq == 8 and "altered" in result.reason
