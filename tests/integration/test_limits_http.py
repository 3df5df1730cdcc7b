"""Rate limits and prepaid credits as a caller meets them: 429 and 402, never executed, never billed."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import aiohttp

from tests.support.cli import cli_ok
from tests.support.hubproc import HubProcess


async def echo(hub: HubProcess, key: str, trace_id: str = "") -> tuple[int, dict, aiohttp.typedefs.LooseHeaders]:
    headers = {"X-API-Key": key}
    if trace_id:
        headers["X-Trace-Id"] = trace_id
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(f"{hub.url}/v1/call", json={"action": "echo", "payload": {}}) as resp:
            return resp.status, await resp.json(), resp.headers.copy()


def billed(hub: HubProcess, trace_id: str) -> int:
    conn = sqlite3.connect(f"file:{hub.state_dir / 'ledger.db'}?mode=ro", uri=True)
    with contextlib.closing(conn):
        return conn.execute("SELECT count(*) FROM events WHERE trace_id = ?", (trace_id,)).fetchone()[0]


async def test_a_key_over_its_own_rate_is_told_when_to_retry(hub: HubProcess) -> None:
    key = cli_ok(hub.state_dir, "key", "create", "--tenant", "default", "--rate", "2/min").splitlines()[0]
    for _ in range(2):
        status, _, headers = await echo(hub, key)
        assert status == 200
        assert int(headers["RateLimit-Limit"]) >= 2 and "RateLimit-Remaining" in headers
    status, body, headers = await echo(hub, key, trace_id="refused-by-rate")
    assert status == 429 and body["error"]["code"] == "RATE_LIMITED"
    # a sliding window counter: the full window weighs on the next one, so up to two windows
    assert 1 <= int(headers["Retry-After"]) <= 120
    assert headers["RateLimit-Limit"] == "2" and headers["RateLimit-Remaining"] == "0"
    assert "RateLimit-Policy" in headers
    assert billed(hub, "refused-by-rate") == 0


async def test_a_prepaid_tenant_is_stopped_at_zero_credits(hub: HubProcess) -> None:
    cli_ok(hub.state_dir, "tenant", "create", "prepaid-co")
    key = cli_ok(hub.state_dir, "key", "create", "--tenant", "prepaid-co", "--role", "user").splitlines()[0]
    admin = cli_ok(hub.state_dir, "key", "create", "--tenant", "prepaid-co", "--role",
                   "tenant_admin").splitlines()[0]
    cli_ok(hub.state_dir, "credits", "top-up", "--tenant", "prepaid-co", "0.10")  # two calls at the starter's 0.05
    # the running hub picks a CLI top-up up when idle (about a second); the tenant's admin sees when
    async with aiohttp.ClientSession(headers={"X-API-Key": admin}) as session:
        for _ in range(100):
            async with session.get(f"{hub.url}/v1/usage") as resp:
                if (await resp.json())["credits"]["prepaid"]:
                    break
            await asyncio.sleep(0.1)
    answers = await asyncio.gather(*(echo(hub, key, trace_id=f"prepaid-{i}") for i in range(5)))
    codes = sorted(status for status, _, _ in answers)
    assert codes == [200, 200, 402, 402, 402], codes
    refused = [body for status, body, _ in answers if status == 402]
    assert all(body["error"]["code"] == "CREDITS_EXHAUSTED" for body in refused)
    assert sum(billed(hub, f"prepaid-{i}") for i in range(5)) == 2
    assert "balance" in cli_ok(hub.state_dir, "credits", "balance", "--tenant", "prepaid-co")


async def test_a_tenant_created_prepaid_over_http_starts_at_zero_credits(hub: HubProcess) -> None:
    async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
        tenant = {"name": "prepaid-http", "credits_enabled": True}
        async with session.post(f"{hub.url}/v1/tenants", json=tenant) as resp:
            assert resp.status == 201, await resp.text()
    key = cli_ok(hub.state_dir, "key", "create", "--tenant", "prepaid-http", "--role", "user").splitlines()[0]
    status, body, _ = await echo(hub, key)
    assert status == 402 and body["error"]["code"] == "CREDITS_EXHAUSTED"
    cli_ok(hub.state_dir, "credits", "top-up", "--tenant", "prepaid-http", "1")
    for _ in range(40):  # the running hub notices the CLI's top-up within half a second
        status, body, _ = await echo(hub, key)
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert status == 200, body


async def test_refused_calls_are_audited_as_one_counted_row_not_a_row_each(tmp_path) -> None:
    """A caller hammering past its limit cannot fill the audit log: refusals are counted per minute."""
    from tests.support.hubproc import write_config

    own = HubProcess(tmp_path, write_config(tmp_path / "hub.toml", modules=("echo",))).start()
    try:
        key = cli_ok(own.state_dir, "key", "create", "--tenant", "default", "--rate", "2/min").splitlines()[0]
        statuses = [(await echo(own, key))[0] for _ in range(12)]
        assert statuses == [200, 200] + [429] * 10
    finally:
        assert own.stop() == 0  # the tallies of this minute are written at shutdown
    with contextlib.closing(sqlite3.connect(tmp_path / "tenancy.db")) as conn:
        rows = conn.execute("SELECT error, count FROM audit WHERE action = 'call.refused'").fetchall()
    # one row for the minute (two if the calls straddled a minute's end), never ten
    assert {error for error, _ in rows} == {"rate_limited_key_api_calls"} and len(rows) <= 2
    assert sum(count for _, count in rows) == 10
