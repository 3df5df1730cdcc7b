"""Usage reaches the central billing node exactly once, through outages, kills and a hostile network.

A fleet of real hubs on loopback: a central node and two sites serving one tenant (the same
tenant id on every hub). Site ``north`` syncs over the fleet's libp2p link; site ``south`` over
HTTPS through a relay in this test that sends every batch twice and replays the batch before it
after each one (duplicated and reordered). Under load, the centre is stopped and restarted, then
killed with SIGKILL mid-sync; ``north`` is killed with SIGKILL mid-sync too. Forged, replayed and
altered batches are sent to the centre directly. After healing, the centre's totals for the
tenant equal the sum of every site's ledger, exactly; every chain verifies at both ends; and the
calls ``south`` served for ``north`` settle: both sides agree.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemon.metering.billing import current_period
from daemon.metering.central import CENTRAL_FILE, CentralReader
from daemon.metering.ledger.chain import verify
from daemon.metering.ledger.reader import ledger_head, rows_after
from daemon.metering.ledger.totals import read_totals
from federation.fleet import FleetKey
from federation.sync.batch import seal_batch
from tests.support.cli import cli_ok
from tests.support.fleet import FleetMember, enrol, free_port

TENANT_ID = str(uuid.uuid4())
WAIT_S = 60.0


Hub = FleetMember
#: in each hub's state dir: the API key of the tenant's user this test calls as
TENANT_KEY_FILE = "acme.key"


class Relay:
    """An HTTP relay between a site and the centre that duplicates every batch and replays the one before."""

    def __init__(self) -> None:
        self.target = ""
        self.port = free_port()
        self.forwarded = 0
        self._previous: bytes | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    async def _serve(self) -> None:
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/v1/sync/batch", self._relay)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()

    async def _relay(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with aiohttp.ClientSession() as session:
            status, answer = await self._post(session, body)  # the batch itself
            await self._post(session, body)  # duplicated
            if self._previous is not None:
                await self._post(session, self._previous)  # and the one before, late: reordered
        self._previous = body
        self.forwarded += 1
        return web.Response(status=status, body=answer, content_type="application/json")

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> tuple[int, bytes]:
        try:
            async with session.post(f"{self.target}/v1/sync/batch", data=body,
                                    headers={"Content-Type": "application/msgpack"}) as resp:
                return resp.status, await resp.read()
        except aiohttp.ClientError:
            return 503, b'{"error": {"code": "UNAVAILABLE", "message": "the centre is down", "details": {}}}'

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


def enrol_for_billing(tmp: Path, name: str, fleet: FleetKey, modules: tuple[str, ...], *,
                      central: Hub | None = None, bootstrap: tuple[str, ...] = (), central_url: str = "") -> Hub:
    """The central node (``central`` None) or a site syncing to ``central``, with the tenant and a key of it."""
    if central is None:
        billing = '[billing]\nrole = "central"\n'
    else:
        billing = f'[billing]\ncentral = "{central.node_id}"\n' + (f'central_url = "{central_url}"\n'
                                                                   if central_url else "")
    hub = enrol(tmp, name, fleet, modules, role="site" if central else "central", bootstrap=bootstrap,
                extra=billing + "sync_interval_s = 0.2\nbatch_max = 40\n")
    cli_ok(hub.hub.state_dir, "tenant", "create", "acme", "--id", TENANT_ID)
    key = cli_ok(hub.hub.state_dir, "key", "create", "--tenant", "acme", "--role", "user").splitlines()[-1]
    (hub.hub.state_dir / TENANT_KEY_FILE).write_text(key)
    return hub


async def calls(hub: Hub, count: int, action: str = "echo", payload: Any = None) -> int:
    """``count`` calls through ``hub``'s HTTP door; how many were answered (a hub may be down)."""
    answered = 0
    key = (hub.hub.state_dir / TENANT_KEY_FILE).read_text()
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            try:
                async with session.post(f"{hub.hub.url}/v1/call", headers={"X-API-Key": key},
                                        json={"action": action, "payload": payload or {"i": i}}) as resp:
                    if resp.status == 200:
                        answered += 1
            except aiohttp.ClientError:
                pass
    return answered


def site_calls(hub: Hub) -> int:
    start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    return read_totals(hub.ledger, TENANT_ID, start, end).api_calls


def synced(site: Hub) -> bool:
    state_file = site.hub.state_dir / "sync" / "outbox.json"
    if not state_file.exists():
        return False
    head_seq, _ = ledger_head(site.ledger)
    return head_seq > 0 and json.loads(state_file.read_text()).get("acked_seq") == head_seq


async def until(check: Any, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = Relay()
    relay.start()
    yield relay
    relay.stop()


async def post_batch(centre: Hub, body: bytes) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
            f"{centre.hub.url}/v1/sync/batch", data=body, headers={"Content-Type": "application/msgpack"}) as resp:
        return resp.status, await resp.json()


async def test_usage_reaches_the_centre_exactly_once_through_outages_kills_and_a_hostile_relay(
        tmp_path: Path, relay: Relay) -> None:
    fleet = FleetKey.generate("billing")
    centre = enrol_for_billing(tmp_path, "centre", fleet, ("echo",))
    south = enrol_for_billing(tmp_path, "south", fleet, ("echo", "text.summarize"), central=centre,
                              bootstrap=(centre.addr,), central_url=f"http://127.0.0.1:{relay.port}")
    north = enrol_for_billing(tmp_path, "north", fleet, ("echo",), central=centre,
                              bootstrap=(centre.addr, south.addr))
    hubs = [centre, north, south]
    try:
        centre.hub.start()
        relay.target = centre.hub.url
        south.hub.start()
        north.hub.start()

        # load on both sites; north also uses what only south serves (settled between them later)
        assert await calls(north, 60) == 60 and await calls(south, 60) == 60
        await until(lambda: _summarize_reachable(north), "north to learn south's text.summarize")
        forwarded = await calls(north, 5, "text.summarize", {"text": "One. Two sentences here. Three."})
        assert forwarded == 5

        # the centre stops for a while; the sites keep serving and billing
        centre.hub.stop()
        assert await calls(north, 40) == 40 and await calls(south, 40) == 40
        centre.hub.start()
        relay.target = centre.hub.url  # its HTTP door came back on another port

        # the centre killed mid-sync, under load
        load = asyncio.gather(calls(north, 80), calls(south, 80))
        await asyncio.sleep(0.6)
        centre.hub.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        centre.hub.process.wait()  # type: ignore[union-attr]
        await load
        centre.hub.start()
        relay.target = centre.hub.url

        # a site killed mid-sync, then back
        load = asyncio.gather(calls(north, 40), calls(south, 40))
        await asyncio.sleep(0.4)
        north.hub.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        north.hub.process.wait()  # type: ignore[union-attr]
        await load
        north.hub.start()
        assert await calls(north, 20) == 20

        # hostile batches, straight at the centre's door
        rows = [list(r) for r in rows_after(south.ledger, 0, 5)]
        forged = bytearray(seal_batch(south.identity, rows, time.time(), cert=None))
        forged[-10] ^= 0xFF
        status, body = await post_batch(centre, bytes(forged))
        assert status in (400, 403), body
        # south's rows replayed under north's key and certificate: they can only land on north's own
        # chain, where they differ from what the centre holds
        status, body = await post_batch(centre, _sealed_with_cert(north, rows))
        assert (status, body["error"]["code"]) == (409, "CONFLICT"), body
        status, body = await post_batch(centre, seal_batch(north.identity, rows, time.time()))  # no certificate
        assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED"), body
        altered = [list(r) for r in rows]
        altered[2][8] = altered[2][8] + 1  # api_calls of one row
        status, body = await post_batch(centre, _sealed_with_cert(south, altered))
        assert (status, body["error"]["code"]) == (409, "CONFLICT"), body

        # heal: every site's ledger acknowledged to its head
        try:
            await until(lambda: synced(north) and synced(south), "both sites to be synced")
        except AssertionError:
            raise AssertionError(_sync_report(hubs)) from None
        central = CentralReader(centre.hub.state_dir / CENTRAL_FILE)
        totals = central.totals(TENANT_ID, current_period(time.time()))
        assert {site: t.api_calls for site, t in totals.items()} == {
            north.node_id: site_calls(north), south.node_id: site_calls(south)}
        assert sum(t.api_calls for t in totals.values()) == site_calls(north) + site_calls(south)
        assert relay.forwarded >= 1  # south really went through the hostile relay

        # every chain verifies, at the sites and at the centre
        for site in (north, south):
            assert verify(site.ledger).ok
        checked = central.verify()
        assert all(s["ok"] for s in checked["sites"].values()), checked

        # what south served for north settles: both sides saw the same calls
        pairs = central.settlement(current_period(time.time()))
        pair = next(p for p in pairs if p["serving_site"] == south.node_id and p["origin_site"] == north.node_id)
        assert pair["balanced"] and pair["billed"]["calls"] == pair["served"]["calls"] == forwarded, pair
    finally:
        for hub in hubs:
            hub.hub.stop()


def _sync_report(hubs: list[Hub]) -> str:
    lines = ["the sites never caught up:"]
    for hub in hubs:
        outbox = hub.hub.state_dir / "sync" / "outbox.json"
        lines.append(f"{hub.name}: head {ledger_head(hub.ledger)} outbox "
                     f"{outbox.read_text() if outbox.exists() else '-'}")
        lines.append(hub.hub.log()[-2500:])
    return "\n".join(lines)


def _sealed_with_cert(site: Hub, rows: list[list[Any]]) -> bytes:
    from federation.fleet import load_certificate

    cert = load_certificate(site.hub.state_dir / "fleet" / "node.cert")
    return seal_batch(site.identity, rows, time.time(), cert=cert)


def _summarize_reachable(hub: Hub) -> bool:
    path = hub.hub.state_dir / "peers.json"
    try:
        peers = json.loads(path.read_text()) if path.exists() else []
    except ValueError:
        return False
    return any("text.summarize" in p.get("capabilities", []) for p in peers)


