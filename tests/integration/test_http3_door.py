"""An HTTP/3 client's view: the same routes and bodies as HTTP/1.1, TLS 1.3 with the hub's own cert, limits."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator

import aiohttp
import pytest
from aioquic.asyncio.client import connect

from daemon.cli.clients.h3 import H3ClientProtocol, h3_configuration
from daemon.runtime.tls import default_paths
from tests.support.doorclients import Hub, h3_client
from tests.support.hubproc import HubProcess, write_config


@pytest.fixture(scope="module")
def doors(hub: HubProcess) -> Hub:
    return Hub(hub.endpoints, hub.state_dir)


async def test_the_http_door_advertises_http3(doors: Hub) -> None:
    _, port = doors.hostport("http3")
    async with aiohttp.ClientSession() as session, session.get(f"{doors.http}/health") as resp:
        assert resp.headers["Alt-Svc"].startswith(f'h3=":{port}"')


def test_a_self_signed_pair_was_made_in_the_state_dir(doors: Hub) -> None:
    cert, key = default_paths(doors.state_dir)
    assert cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/capabilities", b""), ("GET", "/health", b""), ("GET", "/no/such/route", b""),
    ("POST", "/v1/call", b'{"action": 7}'), ("DELETE", "/v1/call", b"")])
async def test_routes_answer_as_over_http11(method: str, path: str, body: bytes, doors: Hub,
                                            hub: HubProcess) -> None:
    headers = {"x-api-key": hub.admin_key, "content-type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{doors.http}{path}", data=body, headers=headers) as resp:
            expected = (resp.status, resp.headers["Content-Type"], await resp.json())
    async with h3_client(doors) as client:
        response = await client.request(method, "localhost", path, headers, body)
    got = (response.status, response.headers["content-type"], response.json())
    for answer in (expected, got):
        if isinstance(answer[2], dict) and "error" in answer[2]:
            answer[2]["error"]["trace_id"] = "-"
    assert got == expected


@pytest.fixture(scope="module")
def small_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    state = tmp_path_factory.mktemp("h3limits")
    config = write_config(state / "hub.toml")
    config.write_text(config.read_text().replace('[http3]\n', '[http3]\nmax_connections = 2\n'
                                                              'max_streams_per_connection = 8\n'))
    process = HubProcess(state, config).start()
    yield process
    process.stop()


async def test_one_client_cannot_take_every_connection(small_hub: HubProcess) -> None:
    doors = Hub(small_hub.endpoints, small_hub.state_dir)
    host, port = doors.hostport("http3")
    configuration = h3_configuration(default_paths(doors.state_dir)[0])
    async with h3_client(doors) as first, h3_client(doors) as second:
        assert first._quic._remote_max_streams_bidi == 8
        for client in (first, second):
            assert (await client.request("GET", "localhost", "/health")).status == 200
        with pytest.raises(ConnectionError):
            async with connect(host, port, configuration=configuration, create_protocol=H3ClientProtocol):
                pass
    async with h3_client(doors) as again:  # a slot frees when a connection ends
        response = await again.request("GET", "localhost", "/ready")
    assert response.status == 200 and json.loads(response.body)["ready"] is True
