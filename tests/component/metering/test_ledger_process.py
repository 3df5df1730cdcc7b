"""The shipped ledger writer: its own process behind a pipe, started again when it dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from daemon.core.errors import Unavailable
from daemon.metering.ledger.chain import verify
from daemon.metering.ledger.child import pack_event
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.process import LedgerProcess
from daemon.metering.ledger.writer import UsageLedger
from daemon.runtime.config import LedgerConfig
from tests.support.hubproc import ROOT


def ev(n: int = 0) -> UsageEvent:
    return UsageEvent(tenant_id="t1", subject="key:abc123", action="echo", module="echo", plan="starter",
                      compute_ms=float(n), trace_id=f"call-{n}")


def rows(path: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with contextlib.closing(conn):
        return conn.execute("SELECT trace_id, seq FROM events ORDER BY seq").fetchall()


async def wait_until(condition: object, what: str) -> None:
    for _ in range(600):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_both_writers_commit_with_wal_and_synchronous_full(tmp_path: Path) -> None:
    async with UsageLedger(tmp_path / "thread.db") as in_thread:
        assert in_thread.durability == {"journal_mode": "wal", "synchronous": "FULL"}
    async with LedgerProcess(tmp_path / "process.db") as shipped:
        # what the child's own writer connection reports, not what the hub asked for
        assert shipped.durability == {"journal_mode": "wal", "synchronous": "FULL"}


async def test_receipts_pending_past_the_bound_are_refused_503_with_retry_after(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with LedgerProcess(path, LedgerConfig(max_pending=4)) as ledger:
        outcomes = await asyncio.gather(*(ledger.append(ev(n)) for n in range(20)), return_exceptions=True)
        assert ledger.pending == 0
    refused = [o for o in outcomes if isinstance(o, Unavailable)]
    acked = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(acked) == 4 and len(refused) == 16
    assert all(r.http_status == 503 and r.retry_after for r in refused)
    assert len(rows(path)) == 4  # a refused event was never sent, so never billed


async def test_a_writer_killed_mid_batch_is_replaced_and_every_call_gets_its_one_entry(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with LedgerProcess(path) as ledger:
        first = await ledger.append(ev(0))
        for round_ in range(3):
            pid = ledger.pid
            assert pid is not None
            calls = [asyncio.create_task(ledger.append(ev(1000 * (round_ + 1) + n))) for n in range(100)]
            await asyncio.sleep(0)  # every event is on the pipe; the writer is working on them
            os.kill(pid, signal.SIGKILL)
            receipts = await asyncio.gather(*calls)  # the new writer answers for the dead one
            assert ledger.healthy and ledger.pid not in (None, pid)
            assert len({r.seq for r in receipts}) == 100
        after = await ledger.append(ev(99))
    entries = rows(path)
    traces = [trace for trace, _ in entries]
    assert len(traces) == len(set(traces)) == 302  # each call exactly once, none lost, none twice
    assert entries[0] == ("call-0", first.seq) and entries[-1] == ("call-99", after.seq)
    result = verify(path)
    assert result.ok, result.reason


async def test_calls_while_no_writer_is_up_get_503_and_the_ledger_is_unhealthy(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with LedgerProcess(path) as ledger:
        await ledger.append(ev(0))
        pid = ledger.pid
        assert pid is not None
        blocker = sqlite3.connect(path, isolation_level=None)  # a write lock the new writer must wait for
        blocker.execute("BEGIN IMMEDIATE")
        try:
            os.kill(pid, signal.SIGKILL)
            await wait_until(lambda: not ledger.healthy, "the ledger reported unhealthy")
            with pytest.raises(Unavailable) as caught:
                await ledger.append(ev(1))
            assert caught.value.retry_after
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await wait_until(lambda: ledger.healthy, "a new writer came up")
        receipt = await ledger.append(ev(2))
    assert receipt.seq == 2  # the chain goes on from the last committed entry
    assert verify(path).ok


async def test_a_writer_that_cannot_come_back_in_time_is_reported_lost(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    lost: list[str] = []
    async with LedgerProcess(path, LedgerConfig(restart_within_s=0.5), on_lost=lost.append) as ledger:
        await ledger.append(ev(0))
        pid = ledger.pid
        assert pid is not None
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            os.kill(pid, signal.SIGKILL)
            await wait_until(lambda: lost, "the ledger was reported lost")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert "did not come back within 0.5 s" in lost[0]
        with pytest.raises(Unavailable):
            await ledger.append(ev(1))


def test_a_replayed_event_that_the_dead_writer_committed_is_answered_not_billed_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    event = ev(7)

    async def commit_once() -> tuple[int, str]:
        async with UsageLedger(path) as ledger:  # the writer that committed, then died before answering
            receipt = await ledger.append(event)
        return receipt.seq, receipt.hash

    committed = asyncio.run(commit_once())
    child = subprocess.run(
        [sys.executable, "-m", "daemon.metering.ledger.process", str(path), "{}"], cwd=ROOT,
        input=pack_event(41, event, replay=True) + pack_event(42, ev(8), replay=True),
        capture_output=True, timeout=60, check=True)
    answers = {frame[0]: frame for frame in _frames(child.stdout)}
    assert tuple(answers[41][2:4]) == committed  # the entry the dead writer made, not a new one
    assert answers[42][1] == 1 and answers[42][2] == 2  # a replay that never landed is appended
    assert [trace for trace, _ in rows(path)] == ["call-7", "call-8"]


def _frames(data: bytes) -> list[list[object]]:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    return [frame for frame in unpacker if isinstance(frame[0], int)]


async def test_the_events_of_one_loop_iteration_cross_the_pipe_in_one_write(tmp_path: Path) -> None:
    async with LedgerProcess(tmp_path / "ledger.db") as ledger:
        process = ledger._process
        assert process is not None and process.stdin is not None
        writes: list[bytes] = []
        write = process.stdin.write

        def counted(data: bytes) -> None:
            writes.append(data)
            write(data)

        process.stdin.write = counted  # type: ignore[method-assign]
        receipts = await asyncio.gather(*(ledger.append(ev(n)) for n in range(50)))
    assert len(writes) == 1
    assert sorted(r.seq for r in receipts) == list(range(1, 51))  # each caller its own receipt
    assert [trace for trace, _ in rows(tmp_path / "ledger.db")] == [f"call-{n}" for n in range(50)]
