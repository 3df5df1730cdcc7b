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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import web

from daemon.metering.billing import current_period
from daemon.metering.central import CENTRAL_FILE, CentralReader
from daemon.metering.ledger.chain import verify
from daemon.metering.ledger.reader import ledger_head, rows_after
from daemon.metering.ledger.totals import read_totals
from federation.identity import FleetKey, NodeIdentity, install_certificate
from federation.sync.batch import seal_batch
from tests.federation.test_fleet_loopback import free_port
from tests.support.cli import cli_ok
from tests.support.hubproc import HubProcess, write_config

TENANT_ID = str(uuid.uuid4())
WAIT_S = 60.0


@dataclass
class Hub:
    name: str
    node_id: str
    identity: NodeIdentity
    port: int
    process: HubProcess
    key: str = ""

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.node_id}"

    @property
    def ledger(self) -> Path:
        return self.process.state_dir / "ledger.db"


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


def enrol(tmp: Path, name: str, fleet: FleetKey, *, role: str, modules: tuple[str, ...], extra: str = "") -> Hub:
    state = tmp / name
    identity = NodeIdentity.load_or_create(state)
    cert = fleet.sign_node(identity.public_key, name, role=role, now=time.time())
    install_certificate(state, cert.to_text(), identity)
    cli_ok(state, "tenant", "create", "acme", "--id", TENANT_ID)
    key = cli_ok(state, "key", "create", "--tenant", "acme", "--role", "user").splitlines()[-1].strip()
    port = free_port()
    config = write_config(state / "hub.toml", modules=modules, extra=(
        f'[node]\nname = "{name}"\n[p2p]\nlisten = "/ip4/127.0.0.1/tcp/{port}"\nadvert_interval_s = 0.5\n'
        f"[billing]\nrole = \"{'central' if role == 'central' else 'site'}\"\nsync_interval_s = 0.2\n"
        "batch_max = 40\n" + extra))
    return Hub(name, identity.peer_id, identity, port, HubProcess(state, config), key)


def point_at_centre(hub: Hub, central: Hub, *, bootstrap: list[str], central_url: str = "") -> None:
    text = hub.process.config_path.read_text()
    text = text.replace("[billing]\n", f'[billing]\ncentral = "{central.node_id}"\n'
                                       + (f'central_url = "{central_url}"\n' if central_url else ""))
    text = text.replace("advert_interval_s = 0.5\n", f"advert_interval_s = 0.5\nbootstrap = {json.dumps(bootstrap)}\n")
    hub.process.config_path.write_text(text)


async def calls(hub: Hub, count: int, action: str = "echo", payload: Any = None) -> int:
    """``count`` calls through ``hub``'s HTTP door; how many were answered (a hub may be down)."""
    answered = 0
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            try:
                async with session.post(f"{hub.process.url}/v1/call", headers={"X-API-Key": hub.key},
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
    state_file = site.process.state_dir / "sync" / "outbox.json"
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
            f"{centre.process.url}/v1/sync/batch", data=body, headers={"Content-Type": "application/msgpack"}) as resp:
        return resp.status, await resp.json()


async def test_usage_reaches_the_centre_exactly_once_through_outages_kills_and_a_hostile_relay(
        tmp_path: Path, relay: Relay) -> None:
    fleet = FleetKey.generate("billing")
    centre = enrol(tmp_path, "centre", fleet, role="central", modules=("echo",))
    north = enrol(tmp_path, "north", fleet, role="site", modules=("echo",))
    south = enrol(tmp_path, "south", fleet, role="site", modules=("echo", "text.summarize"))
    hubs = [centre, north, south]
    try:
        centre.process.start()
        relay.target = centre.process.url
        point_at_centre(north, centre, bootstrap=[centre.addr, south.addr])
        point_at_centre(south, centre, bootstrap=[centre.addr], central_url=f"http://127.0.0.1:{relay.port}")
        south.process.start()
        north.process.start()

        # load on both sites; north also uses what only south serves (settled between them later)
        assert await calls(north, 60) == 60 and await calls(south, 60) == 60
        await until(lambda: _summarize_reachable(north), "north to learn south's text.summarize")
        forwarded = await calls(north, 5, "text.summarize", {"text": "One. Two sentences here. Three."})
        assert forwarded == 5

        # the centre stops for a while; the sites keep serving and billing
        centre.process.stop()
        assert await calls(north, 40) == 40 and await calls(south, 40) == 40
        centre.process.start()
        relay.target = centre.process.url  # its HTTP door came back on another port

        # the centre killed mid-sync, under load
        load = asyncio.gather(calls(north, 80), calls(south, 80))
        await asyncio.sleep(0.6)
        centre.process.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        centre.process.process.wait()  # type: ignore[union-attr]
        await load
        centre.process.start()
        relay.target = centre.process.url

        # a site killed mid-sync, then back
        load = asyncio.gather(calls(north, 40), calls(south, 40))
        await asyncio.sleep(0.4)
        north.process.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        north.process.process.wait()  # type: ignore[union-attr]
        await load
        north.process.start()
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
        central = CentralReader(centre.process.state_dir / CENTRAL_FILE)
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
            hub.process.stop()


def _sync_report(hubs: list[Hub]) -> str:
    lines = ["the sites never caught up:"]
    for hub in hubs:
        outbox = hub.process.state_dir / "sync" / "outbox.json"
        lines.append(f"{hub.name}: head {ledger_head(hub.ledger)} outbox "
                     f"{outbox.read_text() if outbox.exists() else '-'}")
        lines.append(hub.process.log()[-2500:])
    return "\n".join(lines)


def _sealed_with_cert(site: Hub, rows: list[list[Any]]) -> bytes:
    from federation.identity import load_certificate

    cert = load_certificate(site.process.state_dir / "fleet" / "node.cert")
    return seal_batch(site.identity, rows, time.time(), cert=cert)


def _summarize_reachable(hub: Hub) -> bool:
    path = hub.process.state_dir / "peers.json"
    try:
        peers = json.loads(path.read_text()) if path.exists() else []
    except ValueError:
        return False
    return any("text.summarize" in p.get("capabilities", []) for p in peers)


_ = msgpack  # the sealed batches are msgpack; imported for readers following the wire format
