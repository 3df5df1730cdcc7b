"""The shipped ledger writer: its own process behind a pipe, started again when it dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest

from daemon.core.errors import Unavailable, ValidationError
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
    answers = _receipts(child.stdout)
    assert answers[41] == committed  # the entry the dead writer made, not a new one
    assert answers[42][0] == 2  # a replay that never landed is appended
    assert [trace for trace, _ in rows(path)] == ["call-7", "call-8"]


def _frames(data: bytes) -> list[list[Any]]:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    return list(unpacker)


def _receipts(data: bytes) -> dict[int, tuple[int, str]]:
    """Request id -> (seq, hash) from the child's "done" frames (each holds a batch's receipts)."""
    answers = [value for frame in _frames(data) if frame[0] == "done" for value in frame[1]]
    return {answers[i]: (answers[i + 1], answers[i + 2]) for i in range(0, len(answers), 3)}


async def test_the_events_of_one_loop_iteration_cross_the_pipe_in_one_write(tmp_path: Path) -> None:
    async with LedgerProcess(tmp_path / "ledger.db") as ledger:
        process = ledger._process
        assert process is not None and process.stdin is not None
        writes: list[bytes] = []
        write = process.stdin.write

        def counted(data: bytes) -> None:
            writes.append(data)
            write(data)

        process.stdin.write = counted  # type: ignore[method-assign,assignment]
        receipts = await asyncio.gather(*(ledger.append(ev(n)) for n in range(50)))
    assert len(writes) == 1
    assert sorted(r.seq for r in receipts) == list(range(1, 51))  # each caller its own receipt
    assert [trace for trace, _ in rows(tmp_path / "ledger.db")] == [f"call-{n}" for n in range(50)]


def _child(path: Path, data: bytes, config: str = "{}") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "daemon.metering.ledger.process", str(path), config], cwd=ROOT,
                          input=data, capture_output=True, timeout=60, check=True)


def test_a_frame_that_is_not_an_event_is_refused_alone_and_the_writer_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    good = msgpack.unpackb(pack_event(3, ev(3)), raw=False)
    bad_field = [4, *good[1:7], "many", *good[8:]]  # api_calls
    nan_credits = [5, *good[1:-1], "NaN"]
    frames = [pack_event(1, ev(1)), msgpack.packb(bad_field), msgpack.packb(7), msgpack.packb([8, "short"]),
              msgpack.packb(nan_credits), msgpack.packb({"a": 1}), msgpack.packb(["replay"]), pack_event(2, ev(2))]
    child = _child(path, b"".join(frames))
    refused = {frame[0]: frame for frame in _frames(child.stdout) if isinstance(frame[0], int)}
    assert set(refused) == {4, 0, 8, 5}  # the frames without an id are refused as 0
    assert all(frame[1] == 0 and frame[2] == ValidationError.code for frame in refused.values())
    assert set(_receipts(child.stdout)) == {1, 2}
    assert [trace for trace, _ in rows(path)] == ["call-1", "call-2"]
    assert verify(path).ok


def test_a_read_larger_than_batch_max_is_committed_in_batches_each_answered_in_one_frame(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    child = _child(path, b"".join(pack_event(n, ev(n)) for n in range(1, 101)), '{"batch_max": 8}')
    done = [frame for frame in _frames(child.stdout) if frame[0] == "done"]
    assert all(len(frame[1]) <= 3 * 8 for frame in done) and len(done) >= 100 // 8
    receipts = _receipts(child.stdout)
    assert sorted(receipts) == list(range(1, 101))
    assert sorted(seq for seq, _ in receipts.values()) == list(range(1, 101))
    assert [trace for trace, _ in rows(path)] == [f"call-{n}" for n in range(1, 101)]  # in the order sent
    assert verify(path).ok


async def test_receipts_carry_the_balances_after_their_batch(tmp_path: Path) -> None:
    async with LedgerProcess(tmp_path / "ledger.db") as ledger:
        assert ledger.balance("t1") is None
        await ledger.top_up("t1", "10", "admin:ops")
        assert ledger.balance("t1") == Decimal(10)
        await asyncio.gather(*(ledger.append(UsageEvent(tenant_id="t1", subject="key:abc", action="echo",
                                                        credits=Decimal("-0.5"))) for _ in range(4)))
        assert ledger.balance("t1") == Decimal(8)
    assert verify(tmp_path / "ledger.db").ok
