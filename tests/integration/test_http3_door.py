"""An HTTP/3 client's view: the same routes and bodies as HTTP/1.1, TLS 1.3 with the hub's own cert, limits."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Iterator

import aiohttp
import pytest
from aioquic.asyncio.client import connect
from aioquic.quic.logger import QuicLogger
from cryptography import x509

from daemon.cli.clients.h3 import H3ClientProtocol, h3_configuration, iter_chunks
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


async def test_a_new_client_proves_its_address_with_a_retry_before_the_hub_keeps_state(doors: Hub) -> None:
    host, port = doors.hostport("http3")
    configuration = h3_configuration(default_paths(doors.state_dir)[0])
    configuration.quic_logger = QuicLogger()
    async with connect(host, port, configuration=configuration, create_protocol=H3ClientProtocol) as client:
        assert isinstance(client, H3ClientProtocol)
        assert (await client.request("GET", "localhost", "/health")).status == 200
    events = [e for trace in configuration.quic_logger.to_dict()["traces"] for e in trace["events"]]
    received = [e["data"]["header"]["packet_type"] for e in events if e["name"] == "transport:packet_received"]
    assert received[0] == "retry"  # the hub's first answer is a Retry, not its handshake


def test_the_self_signed_certificate_is_a_leaf_valid_for_a_year(doors: Hub) -> None:
    cert = x509.load_pem_x509_certificate(default_paths(doors.state_dir)[0].read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 366


@pytest.fixture(scope="module")
def tight_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    state = tmp_path_factory.mktemp("h3buffer")
    config = write_config(state / "hub.toml", modules=("echo",))
    config.write_text(config.read_text()
                      .replace('[http]\n', '[http]\nmax_body_bytes = 32768\n')
                      .replace('[http3]\n', '[http3]\nmax_buffered_bytes = 65536\n'))
    process = HubProcess(state, config).start()
    yield process
    process.stop()


async def test_one_connection_cannot_make_the_hub_hold_more_than_its_buffer_cap(tight_hub: HubProcess) -> None:
    doors = Hub(tight_hub.endpoints, tight_hub.state_dir)
    headers = {"x-api-key": tight_hub.admin_key, "content-type": "application/json"}
    # each body is under max_body_bytes; three held open at once are over the connection's 64 KiB
    body = json.dumps({"action": "echo", "payload": {"n": 1}}).encode() + b" " * 30_000
    async with h3_client(doors) as client:
        streams = [client.begin("POST", "localhost", "/v1/call", headers, body, end_stream=False) for _ in range(3)]
        heads = {future: stream_id for stream_id, future in streams}
        done, _ = await asyncio.wait(heads, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1, "no stream was refused"
        (refused,) = done
        response = refused.result()
        response.body = b"".join([chunk async for chunk in iter_chunks(response)])
        assert response.status == 503 and response.json()["error"]["code"] == "UNAVAILABLE"
        assert response.headers["retry-after"]
        # the others were held, not dropped: finishing them gets their answers
        answered = []
        for future, stream_id in heads.items():
            if future is not refused:
                client.send_body(stream_id, b"", end_stream=True)
                head = await asyncio.wait_for(future, 30)
                head.body = b"".join([chunk async for chunk in iter_chunks(head)])
                answered.append((head.status, head.json()["result"]))
        assert answered == [(200, {"n": 1}), (200, {"n": 1})]
        # and with those calls over, the connection may send as much again
        again = await client.request("POST", "localhost", "/v1/call", headers, body)
    assert again.status == 200
