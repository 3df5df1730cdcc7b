"""Action names are short and plain, on every path a name enters: a call and a module's registration."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.support.hubproc import HubProcess
from tests.support.remote_modules import RemoteProc


async def call(hub: HubProcess, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session, \
            session.post(f"{hub.url}/v1/call", json=body) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("action", ["x" * 129, "e" * 100_000, "Echo", "echo/../admin", "echo\u0000", "ech o",
                                    "\u00e9cho", ".echo"])
async def test_a_call_with_an_overlong_or_odd_action_name_is_a_validation_error(hub: HubProcess, action: str) -> None:
    status, body = await call(hub, {"action": action, "payload": {}})
    assert status == 400, body
    assert body["error"]["code"] == "VALIDATION_ERROR" and body["error"]["details"]["pointer"] == "/action"
    assert action not in body["error"]["message"]  # the name is not echoed back


async def test_the_longest_plain_name_is_just_an_unknown_capability(hub: HubProcess) -> None:
    status, body = await call(hub, {"action": "a" * 128, "payload": {}})
    assert (status, body["error"]["code"]) == (404, "CAPABILITY_NOT_FOUND")


async def test_a_module_registering_an_odd_action_name_is_refused_naming_it(hub: HubProcess) -> None:
    module = RemoteProc(hub.url, hub.admin_key, "odd-names", "--actions", "fine.one,Not Fine")
    try:
        answer = await module.line()
    finally:
        module.kill()
    assert answer.startswith("refused ") and '"VALIDATION_ERROR"' in answer, answer
    assert '"/capabilities/1/action"' in answer
