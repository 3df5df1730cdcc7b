"""A module in another process attaches over WebSocket, serves calls, and leaves."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.cli import cli_ok
from tests.support.hubproc import HubProcess
from tests.support.remote_modules import RemoteProc


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
    remote = await RemoteProc(hub.url, hub.admin_key, "upper-1").attached()
    try:
        caps = await capabilities(hub)
        assert caps["text.upper"]["origin"] == "remote"
        status, body = await call(hub, {"action": "text.upper", "payload": {"text": "edge"}})
        assert status == 200 and (body["result"]["text"], body["result"]["by"]) == ("EDGE", "upper-1")
        assert body["module"] == "upper-1" and body["receipt"]["seq"] > 0
        # the hub validates input against the schema the module registered
        status, body = await call(hub, {"action": "text.upper", "payload": {"text": 5}})
        assert status == 400 and body["error"]["details"]["pointer"] == "/text"
    finally:
        remote.kill()

    async def gone() -> bool:
        return "text.upper" not in await capabilities(hub)

    await wait_until(gone)
    status, body = await call(hub, {"action": "text.upper", "payload": {"text": "edge"}})
    assert status == 404 and body["error"]["code"] == "CAPABILITY_NOT_FOUND"


async def test_calls_in_flight_on_a_module_that_dies_end_unavailable(hub: HubProcess) -> None:
    remote = await RemoteProc(hub.url, hub.admin_key, "sleepy-1").attached()
    try:
        pending = asyncio.create_task(call(hub, {"action": "remote.sleep", "payload": {"seconds": 30}}))
        assert (await remote.line()).startswith("call remote.sleep")
        remote.kill()
        status, body = await asyncio.wait_for(pending, 20)
    finally:
        remote.kill()
    assert status == 503 and body["error"]["code"] == "UNAVAILABLE"


async def test_a_call_dropped_by_a_dying_module_goes_to_another_with_the_action(hub: HubProcess) -> None:
    first = await RemoteProc(hub.url, hub.admin_key, "sleepy-a").attached()
    second = await RemoteProc(hub.url, hub.admin_key, "sleepy-b").attached()
    procs = {"sleepy-a": first, "sleepy-b": second}
    try:
        pending = asyncio.create_task(call(hub, {"action": "remote.sleep", "payload": {"seconds": 1.5}}))
        # each module says when a call reaches it: the one that holds the call is the one cut
        heard = {asyncio.create_task(p.line()): p for p in procs.values()}
        done, _ = await asyncio.wait(heard, return_when=asyncio.FIRST_COMPLETED)
        got_it = done.pop()
        holder = heard[got_it]
        assert got_it.result().startswith("call remote.sleep "), got_it.result()
        survivor = second if holder is first else first
        holder.kill()  # cut while it holds the call
        retried = next(task for task, proc in heard.items() if proc is survivor)
        assert (await retried).startswith("call remote.sleep "), "the survivor never got the retry"
        status, body = await asyncio.wait_for(pending, 20)
    finally:
        for proc in procs.values():
            proc.kill()
    assert status == 200, body
    assert body["module"] == survivor.module_id
    result = body["result"]
    # the survivor answered, and the retry was the first call that ever reached it
    assert (result["by"], result["slept"], result["n"]) == (survivor.module_id, 1.5, 1)


async def queued(hub: HubProcess, module_id: str) -> int:
    """The hub's own queue depth gauge for ``module_id``, as Prometheus scrapes it."""
    async with aiohttp.ClientSession() as session, session.get(f"{hub.url}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(f'democratic_ai_queue_depth{{module="{module_id}"}}'):
                return int(float(line.split()[-1]))
    return 0


async def test_a_queued_high_priority_call_reaches_the_module_before_an_earlier_low_priority_one(
        hub: HubProcess) -> None:
    module = await RemoteProc(hub.url, hub.admin_key, "one-slot", "--concurrency", "1").attached()
    try:
        busy = asyncio.create_task(call(hub, {"action": "remote.hold", "payload": {}}))
        assert (await module.line()).startswith("call remote.hold")  # its one slot is taken
        low = asyncio.create_task(call(hub, {"action": "remote.hold", "payload": {}, "priority": 0}))
        await wait_until(lambda: queued_is(hub, "one-slot", 1))
        high = asyncio.create_task(call(hub, {"action": "remote.hold", "payload": {}, "priority": 9}))
        await wait_until(lambda: queued_is(hub, "one-slot", 2))
        for _ in range(3):
            module.release()
        answers = [await asyncio.wait_for(t, 20) for t in (busy, low, high)]
    finally:
        module.kill()
    assert [status for status, _ in answers] == [200, 200, 200], answers
    order = {name: body["result"]["n"] for name, (_, body) in zip(("busy", "low", "high"), answers, strict=True)}
    assert order == {"busy": 1, "high": 2, "low": 3}


async def queued_is(hub: HubProcess, module_id: str, expected: int) -> bool:
    return await queued(hub, module_id) == expected


async def test_an_attach_without_the_module_create_permission_is_refused(hub: HubProcess) -> None:
    user_key = cli_ok(hub.state_dir, "key", "create", "--tenant", "default", "--role", "user").splitlines()[0]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(f"{hub.url}/v1/modules/attach", headers={"X-API-Key": user_key}):
                pass
    assert refused.value.status == 403
