"""kill -9 under load, several times: every acknowledged call is billed exactly once.

A real hub subprocess serves echo calls from concurrent clients; it is killed with
SIGKILL at random moments and restarted on the same state dir.  Each call carries its
own X-Trace-Id, which the ledger stores, so the test can match answers to entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import uuid

import aiohttp

from tests.support.cli import cli_ok, run_cli
from tests.support.hubproc import HubProcess, write_config

KILLS = 4
CLIENTS = 12


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
            except (TimeoutError, aiohttp.ClientError, ValueError):
                await asyncio.sleep(0.01)  # the hub is dead or dying: an unacknowledged call


async def test_acknowledged_calls_survive_kill_9_exactly_once(tmp_path) -> None:
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
            hub.kill()  # SIGKILL, mid-load
            stop.set()
            await asyncio.gather(*clients)
            hub.start()
    finally:
        hub.stop()

    assert len(acked) > 50, "the load produced too few acknowledged calls to prove anything"
    assert refused, "the load produced no refused calls"
    conn = sqlite3.connect(f"file:{tmp_path / 'ledger.db'}?mode=ro", uri=True)
    with contextlib.closing(conn):
        rows = conn.execute("SELECT trace_id, seq, hash FROM events WHERE kind = 'usage'").fetchall()
    by_trace: dict[str, list[tuple[int, str]]] = {}
    for trace_id, seq, digest in rows:
        by_trace.setdefault(trace_id, []).append((seq, digest))
    for trace_id, receipt in acked.items():
        assert by_trace.get(trace_id) == [(receipt["seq"], receipt["hash"])], f"acked call {trace_id} not billed once"
    assert not refused & by_trace.keys(), "a refused call was billed"
    verify = run_cli(tmp_path, "ledger", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
