"""The HTTPS fallback of the sync on loopback: a batch POSTed to a stand-in centre, its answers and errors read back.

The centre here is a small aiohttp app in the test (the hub's own door serves the route in the
end-to-end test): a real ``SyncReceiver`` behind ``POST /v1/sync/batch``, or canned answers.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from daemon.core.errors import Conflict, HubError, PermissionDenied, Unavailable
from daemon.metering.ledger.chain import GENESIS, chain_rows
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.rows import LedgerHead
from federation.fleet import FleetKey, FleetTrust
from federation.identity import NodeIdentity
from federation.sealing import ReplayGuard
from federation.sync.batch import seal_batch
from federation.sync.http import CONTENT_TYPE, SYNC_PATH, batch_url, post_batch
from federation.sync.receiver import SyncReceiver

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def centre() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a centre answering ``SYNC_PATH`` with a handler; its base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post(SYNC_PATH, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/"

    yield start
    for runner in runners:
        await runner.cleanup()


def rows(count: int) -> list[Any]:
    events = [UsageEvent(tenant_id="t-1", subject="user:1", action="echo.say") for _ in range(count)]
    return list(chain_rows(events, LedgerHead(0, GENESIS, 0), now_us=1))


def answering(status: int, body: bytes, content_type: str = "application/json") -> Handler:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, body=body, content_type=content_type)
    return handler


def test_the_batch_url_is_the_centres_door_and_the_sync_path() -> None:
    assert batch_url("https://billing.example:8443/") == "https://billing.example:8443/v1/sync/batch"
    assert batch_url("https://billing.example") == "https://billing.example/v1/sync/batch"


async def test_a_batch_posted_to_the_centre_is_opened_ingested_and_acked(centre: Any) -> None:
    fleet = FleetKey.generate("acme")
    site = NodeIdentity.generate()
    cert = fleet.sign_node(site.public_key, "paris", now=time.time())
    central = fleet.sign_node(NodeIdentity.generate().public_key, "billing", "central", now=time.time())
    ingested: list[tuple[str, str, int]] = []

    async def ingest(node: str, name: str, batch: list[list[Any]]) -> int:
        ingested.append((node, name, len(batch)))
        return int(batch[-1][0])

    receiver = SyncReceiver(trust=FleetTrust(own=central), guard=ReplayGuard(), ingest=ingest)
    seen: list[str] = []

    async def door(request: web.Request) -> web.Response:
        seen.append(request.content_type)
        try:
            acked = await receiver.receive(await request.read())
        except HubError as exc:
            return web.json_response(exc.to_body(), status=exc.http_status)
        return web.json_response({"acked": acked})

    url = await centre(door)
    sealed = seal_batch(site, rows(3), time.time(), cert=cert)
    assert await post_batch(url, sealed) == 3
    assert ingested == [(site.peer_id, "paris", 3)] and seen == [CONTENT_TYPE]
    # the same bytes again: the centre's answer is its error body, read back as the same error
    with pytest.raises(PermissionDenied) as refused:
        await post_batch(url, sealed)
    assert refused.value.details == {"reason": "replay"}


async def test_the_centres_error_body_comes_back_as_its_error(centre: Any) -> None:
    body = Conflict("row 7 differs from the row held", {"site": "n", "seq": 7}).to_body()
    url = await centre(answering(409, json.dumps(body).encode()))
    with pytest.raises(Conflict) as refused:
        await post_batch(url, b"sealed")
    assert refused.value.message == "row 7 differs from the row held"
    assert refused.value.details == {"site": "n", "seq": 7}


@pytest.mark.parametrize(("status", "body"), [
    (502, b"<html>bad gateway</html>"),
    (200, b'{"ok": true}'),
    (200, b'{"acked": "12"}'),
    (200, b"x" * (128 << 10)),
])
async def test_an_answer_that_is_neither_an_ack_nor_an_error_is_unavailable(centre: Any, status: int,
                                                                            body: bytes) -> None:
    url = await centre(answering(status, body))
    with pytest.raises(Unavailable):
        await post_batch(url, b"sealed")


async def test_a_centre_that_is_down_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: the connection is refused
        with pytest.raises(Unavailable, match="cannot be reached"):
            await post_batch(f"http://127.0.0.1:{port}", b"sealed", timeout_s=5)
