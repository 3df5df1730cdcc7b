"""A module in another process attaches over WebSocket, serves calls, and leaves."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest

from tests.support.cli import cli_ok
from tests.support.hubproc import ROOT, HubProcess


def start_remote(hub: HubProcess, module_id: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.remote_module_proc", hub.url, hub.admin_key, module_id],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "attached", line
    return proc


async def call(hub: HubProcess, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
        async with session.post(f"{hub.url}/v1/call", json=body) as resp:
            return resp.status, await resp.json()


async def capabilities(hub: HubProcess) -> dict[str, dict]:
    async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
        async with session.get(f"{hub.url}/v1/capabilities") as resp:
            return {c["action"]: c for c in (await resp.json())["capabilities"]}


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_remote_module_serves_its_capability_and_its_routes_vanish_when_it_leaves(hub: HubProcess) -> None:
    remote = start_remote(hub, "upper-1")
    try:
        caps = await capabilities(hub)
        assert caps["text.upper"]["origin"] == "remote"
        status, body = await call(hub, {"action": "text.upper", "payload": {"text": "edge"}})
        assert status == 200 and body["result"] == {"text": "EDGE", "by": "upper-1"}
        assert body["module"] == "upper-1" and body["receipt"]["seq"] > 0
        # the hub validates input against the schema the module registered
        status, body = await call(hub, {"action": "text.upper", "payload": {"text": 5}})
        assert status == 400 and body["error"]["details"]["pointer"] == "/text"
    finally:
        remote.kill()
        remote.wait()

    async def gone() -> bool:
        return "text.upper" not in await capabilities(hub)

    await wait_until(gone)
    status, body = await call(hub, {"action": "text.upper", "payload": {"text": "edge"}})
    assert status == 404 and body["error"]["code"] == "CAPABILITY_NOT_FOUND"


async def test_calls_in_flight_on_a_module_that_dies_end_unavailable(hub: HubProcess) -> None:
    remote = start_remote(hub, "sleepy-1")
    try:
        pending = asyncio.create_task(call(hub, {"action": "remote.sleep", "payload": {"seconds": 30}}))
        await asyncio.sleep(0.5)
        remote.kill()
        status, body = await asyncio.wait_for(pending, 20)
    finally:
        remote.kill()
        remote.wait()
    assert status == 503 and body["error"]["code"] == "UNAVAILABLE"


async def test_a_call_dropped_by_a_dying_module_goes_to_another_with_the_action(hub: HubProcess) -> None:
    first = start_remote(hub, "sleepy-a")
    second = start_remote(hub, "sleepy-b")
    try:
        pending = asyncio.create_task(call(hub, {"action": "remote.sleep", "payload": {"seconds": 1.5}}))
        await asyncio.sleep(0.4)
        # whichever got the call, kill it: the call must finish on the other one
        status, body = await call(hub, {"action": "text.upper", "payload": {"text": "x"}})
        victim = first if body["module"] == "sleepy-b" else second  # round robin: the other one has the sleep
        victim.kill()
        status, body = await asyncio.wait_for(pending, 20)
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()
    assert status == 200, body
    assert body["result"]["slept"] == 1.5


async def test_an_attach_without_the_module_create_permission_is_refused(hub: HubProcess) -> None:
    user_key = cli_ok(hub.state_dir, "key", "create", "--tenant", "default", "--role", "user").splitlines()[0]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(f"{hub.url}/v1/modules/attach", headers={"X-API-Key": user_key}):
                pass
    assert refused.value.status == 403
