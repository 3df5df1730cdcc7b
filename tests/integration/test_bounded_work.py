"""A slow module makes callers wait or retry, never makes the hub hold unbounded work.

The hub's echo module serves 64 calls at once; ``[modules] queue_depth`` bounds how many more
may wait for it, and ``default_ttl_s`` bounds how long a call that names no TTL may wait and run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.hubproc import HubProcess, write_config

ECHO_SLOTS = 64  # EchoModule.concurrency


@pytest.fixture(scope="module")
def small_queue_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    state: Path = tmp_path_factory.mktemp("bounded")
    config = write_config(state / "hub.toml", modules=("echo",))
    config.write_text(config.read_text() + "queue_depth = 4\ndefault_ttl_s = 1.5\n")
    process = HubProcess(state, config).start()
    yield process
    process.stop()


async def call(session: aiohttp.ClientSession, hub: HubProcess, body: dict) -> tuple[int, dict, dict]:
    async with session.post(f"{hub.url}/v1/call", json=body, headers={"X-API-Key": hub.admin_key}) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


async def test_past_the_queue_depth_a_call_is_refused_with_retry_after(small_queue_hub: HubProcess) -> None:
    hub = small_queue_hub
    slow = {"action": "echo.stream", "payload": {"steps": 1, "delay_ms": 3000}, "ttl": 30}
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(call(session, hub, slow) for _ in range(ECHO_SLOTS + 4 + 6)))
    refused = [(body, headers) for status, body, headers in answers if status == 503]
    served = [status for status, _, _ in answers if status == 200]
    assert len(served) == ECHO_SLOTS + 4, [a[:2] for a in answers if a[0] != 200][:3]
    assert len(refused) == 6
    for body, headers in refused:
        assert body["error"]["code"] == "UNAVAILABLE"
        assert "queue" in body["error"]["message"]
        assert int(headers["Retry-After"]) >= 1


async def test_a_call_without_a_ttl_gets_the_default_one(small_queue_hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as session:
        status, body, _ = await call(session, small_queue_hub,
                                     {"action": "echo.stream", "payload": {"steps": 1, "delay_ms": 4000}})
        assert status == 504, body
        assert body["error"]["code"] == "DEADLINE_EXCEEDED"
        # a call that names a longer TTL is not cut by the default
        status, body, _ = await call(session, small_queue_hub,
                                     {"action": "echo.stream", "payload": {"steps": 1, "delay_ms": 2000}, "ttl": 10})
        assert status == 200, body
