"""kill -9 under load, several times: every acknowledged call is billed exactly once.

A real hub subprocess serves echo calls from concurrent clients.  Three ways to crash it:
the hub alone (its writer reads EOF, commits what it holds and exits), the ledger writer
alone mid-batch (the hub starts a new one and replays what the dead one did not answer),
and both together.  Each call carries its own X-Trace-Id, which the ledger stores, so the
test can match answers to entries; ``ledger verify`` must pass at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.support.cli import cli_ok, run_cli
from tests.support.hubproc import HubProcess, write_config

KILLS = 4
CLIENTS = 12


def ledger_writers(state_dir: Path) -> list[int]:
    """pids of ledger writer processes working on this state dir."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "daemon.metering.ledger.process" in cmdline and str(state_dir) in cmdline:
            found.append(int(pid))
    return found


async def load(url: str, key: str, acked: dict[str, dict], refused: set[str], stop: asyncio.Event,
               rate_limited_key: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        n = 0
        while not stop.is_set():
            n += 1
            trace_id = uuid.uuid4().hex
            # one call in five is refused before execution: bad input or a rate-limited key
            bad = n % 5 == 0
            body = {"action": "text.summarize", "payload": {"text": 42}} if bad and n % 10 == 0 else \
                {"action": "echo", "payload": {"n": n}}
            headers = {"X-API-Key": rate_limited_key if bad and n % 10 == 5 else key, "X-Trace-Id": trace_id}
            try:
                async with session.post(f"{url}/v1/call", json=body, headers=headers) as resp:
                    answer = await resp.json()
                    if resp.status == 200:
                        acked[trace_id] = answer["receipt"]
                    elif resp.status in (400, 429):
                        refused.add(trace_id)
                    elif resp.status == 503:
                        await asyncio.sleep(0.01)  # the writer is coming back: an unacknowledged call
            except (TimeoutError, aiohttp.ClientError, ValueError):
                await asyncio.sleep(0.01)  # the hub is dead or dying: an unacknowledged call


async def ready_again(hub: HubProcess, dead_writer: int) -> None:
    """Wait until /ready says 200 with a new ledger writer (the old one gone)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{hub.url}/ready") as resp:
                    if resp.status == 200 and dead_writer not in ledger_writers(hub.state_dir):
                        return
            await asyncio.sleep(0.05)
    raise AssertionError(f"the hub never became ready again after its writer {dead_writer} was killed")


async def crash_under_load(tmp_path: Path, crash: Callable[[HubProcess], object]) -> tuple[dict[str, dict], set[str]]:
    """Serve load, ``crash`` the hub KILLS times at random moments (each must leave it serving again)."""
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml")).start()
    limited = cli_ok(tmp_path, "key", "create", "--tenant", "default", "--rate", "3/min").splitlines()[0]
    acked: dict[str, dict] = {}
    refused: set[str] = set()
    rng = random.Random(20261123)
    try:
        for _ in range(KILLS):
            stop = asyncio.Event()
            clients = [asyncio.create_task(load(hub.url, hub.admin_key, acked, refused, stop, limited))
                       for _ in range(CLIENTS)]
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            awaitable = crash(hub)  # mid-load
            if asyncio.iscoroutine(awaitable):
                await awaitable
            stop.set()
            await asyncio.gather(*clients)
    finally:
        assert hub.stop() == 0
    return acked, refused


def assert_billed_exactly_once(state_dir: Path, acked: dict[str, dict], refused: set[str]) -> None:
    assert len(acked) > 50, "the load produced too few acknowledged calls to prove anything"
    assert refused, "the load produced no refused calls"
    conn = sqlite3.connect(f"file:{state_dir / 'ledger.db'}?mode=ro", uri=True)
    with contextlib.closing(conn):
        rows = conn.execute("SELECT trace_id, seq, hash FROM events WHERE kind = 'usage'").fetchall()
    by_trace: dict[str, list[tuple[int, str]]] = {}
    for trace_id, seq, digest in rows:
        by_trace.setdefault(trace_id, []).append((seq, digest))
    for trace_id, receipt in acked.items():
        assert by_trace.get(trace_id) == [(receipt["seq"], receipt["hash"])], f"acked call {trace_id} not billed once"
    assert all(len(entries) == 1 for entries in by_trace.values()), "a call was billed twice"
    assert not refused & by_trace.keys(), "a refused call was billed"
    verify = run_cli(state_dir, "ledger", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_acknowledged_calls_survive_kill_9_of_the_hub_exactly_once(tmp_path: Path) -> None:
    def kill_hub(hub: HubProcess) -> None:
        hub.kill()  # SIGKILL: its writer reads EOF, commits what it holds and exits
        hub.start()

    acked, refused = await crash_under_load(tmp_path, kill_hub)
    assert_billed_exactly_once(tmp_path, acked, refused)


async def test_acknowledged_calls_survive_kill_9_of_the_ledger_writer_mid_batch(tmp_path: Path) -> None:
    async def kill_writer(hub: HubProcess) -> None:
        (writer,) = ledger_writers(tmp_path)
        os.kill(writer, signal.SIGKILL)  # the hub lives on and must bring a writer back by itself
        await ready_again(hub, writer)

    acked, refused = await crash_under_load(tmp_path, kill_writer)
    assert_billed_exactly_once(tmp_path, acked, refused)


async def test_acknowledged_calls_survive_kill_9_of_the_hub_and_its_writer_together(tmp_path: Path) -> None:
    def kill_both(hub: HubProcess) -> None:
        (writer,) = ledger_writers(tmp_path)
        assert hub.process is not None
        os.kill(writer, signal.SIGKILL)
        os.kill(hub.process.pid, signal.SIGKILL)
        hub.kill()  # reaps it
        hub.start()

    acked, refused = await crash_under_load(tmp_path, kill_both)
    assert_billed_exactly_once(tmp_path, acked, refused)
