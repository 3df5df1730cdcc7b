"""Safe on the LAN: a door that leaves loopback speaks TLS; plain text there is the operator's explicit choice.

The hub listens on 0.0.0.0 (beyond loopback) and the clients reach it on 127.0.0.1: the
traffic stays on this machine, the hub's decision is the one it makes for the LAN.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from daemon.cli.clients.grpc import open_channel
from daemon.runtime.tls import default_paths
from proto import mcp_v2_pb2_grpc as pb_grpc
from tests.support.cli import run_cli
from tests.support.doorclients import Hub, h3_client, mcp_message
from tests.support.hubproc import HubProcess, write_config

METRICS_TOKEN = "scrape-me-4f2a"


def lan_config(path: Path, *, http: str = "", grpc_keys: str = "") -> Path:
    """The test config with the HTTP and gRPC doors on 0.0.0.0, and extra keys in their sections."""
    config = write_config(path, modules=("echo",))
    text = config.read_text()
    text = text.replace('[http]\nlisten = "127.0.0.1:0"\n', f'[http]\nlisten = "0.0.0.0:0"\n{http}')
    text = text.replace('[grpc]\nlisten = "127.0.0.1:0"\n', f'[grpc]\nlisten = "0.0.0.0:0"\n{grpc_keys}')
    config.write_text(text)
    return config


@pytest.fixture(scope="module")
def lan_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    state = tmp_path_factory.mktemp("lan")
    config = lan_config(state / "hub.toml", http=f'metrics_token = "{METRICS_TOKEN}"\n')
    process = HubProcess(state, config).start()
    yield process
    process.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_endpoints_name_tls_schemes_and_the_hubs_own_certificate(lan_hub: HubProcess) -> None:
    assert lan_hub.endpoints["http"].startswith("https://127.0.0.1:")
    assert lan_hub.endpoints["grpc"].startswith("grpcs://127.0.0.1:")
    assert Path(lan_hub.endpoints["ca_file"]) == default_paths(lan_hub.state_dir)[0].resolve()


async def test_an_https_client_that_trusts_the_hubs_certificate_calls_over_tls(lan_hub: HubProcess) -> None:
    headers = {"X-API-Key": lan_hub.admin_key}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=lan_hub.client_ssl()),
                                     headers=headers) as session:
        async with session.post(f"{lan_hub.url}/v1/call", json={"action": "echo", "payload": {"pin": 1234}}) as resp:
            assert resp.status == 200
            assert (await resp.json())["result"] == {"pin": 1234}
        async with session.ws_connect(lan_hub.url.replace("https", "wss", 1) + "/v1/ws") as ws:
            await ws.send_json({"id": "w1", "action": "echo", "payload": {"over": "wss"}})
            frame = json.loads((await ws.receive()).data)
            assert frame["type"] == "result" and frame["result"] == {"over": "wss"}


async def test_a_plain_text_client_gets_nothing_from_the_tls_door(lan_hub: HubProcess) -> None:
    plain = f"http://127.0.0.1:{_port(lan_hub.url)}"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{plain}/health") as resp:
                await resp.read()


async def test_a_client_that_does_not_trust_the_certificate_is_stopped_by_verification(lan_hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as session:  # the system's CAs only: the hub's own cert is unknown
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with session.get(f"{lan_hub.url}/health") as resp:
                await resp.read()


async def test_grpc_beyond_loopback_is_served_over_tls_and_plain_text_is_refused(lan_hub: HubProcess) -> None:
    url = lan_hub.endpoints["grpc"]
    metadata = (("x-api-key", lan_hub.admin_key),)
    async with open_channel(url, Path(lan_hub.endpoints["ca_file"])) as channel:
        reply = await pb_grpc.HubStub(channel).Call(mcp_message("echo", {"over": "tls"}), metadata=metadata,
                                                    timeout=30)
        assert reply.module == "echo"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{_port(url)}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.HubStub(channel).Call(mcp_message("echo", {}), metadata=metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("via", ["http", "ws", "grpc"])
def test_democratic_ai_call_trusts_the_hubs_own_certificate(lan_hub: HubProcess, via: str) -> None:
    done = run_cli(lan_hub.state_dir, "call", "echo", "--payload", '{"n": 7}', "--via", via,
                   "--key", lan_hub.admin_key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["result"] == {"n": 7}


async def test_metrics_need_the_bearer_token_when_one_is_configured(lan_hub: HubProcess) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=lan_hub.client_ssl())) as session:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": lan_hub.admin_key}):
            async with session.get(f"{lan_hub.url}/metrics", headers=headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "UNAUTHENTICATED"
        async with session.get(f"{lan_hub.url}/metrics",
                               headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as resp:
            assert resp.status == 200
            assert "democratic_ai" in await resp.text()
    async with h3_client(Hub(lan_hub.endpoints, lan_hub.state_dir)) as client:  # the same rule over HTTP/3
        refused = await client.request("GET", "localhost", "/metrics")
        allowed = await client.request("GET", "localhost", "/metrics", {"authorization": f"Bearer {METRICS_TOKEN}"})
    assert refused.status == 401 and refused.json()["error"]["code"] == "UNAUTHENTICATED"
    assert allowed.status == 200


@pytest.mark.parametrize("section", ["http", "grpc"])
def test_plain_text_beyond_loopback_is_refused_at_start_naming_the_key(tmp_path: Path, section: str) -> None:
    keys = 'tls = "off"\n'
    config = lan_config(tmp_path / "hub.toml", **({"http": keys} if section == "http" else {"grpc_keys": keys}))
    done = run_cli(tmp_path, "serve", "--config", str(config), timeout=30)
    assert done.returncode == 2
    assert f"{section}.allow_plaintext" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


async def test_plain_text_beyond_loopback_is_served_when_the_operator_allows_it(tmp_path: Path) -> None:
    config = lan_config(tmp_path / "hub.toml", http='tls = "off"\nallow_plaintext = true\n',
                        grpc_keys="allow_plaintext = true\n")
    hub = HubProcess(tmp_path, config).start()
    try:
        assert hub.url.startswith("http://127.0.0.1:") and hub.endpoints["grpc"].startswith("grpc://")
        async with aiohttp.ClientSession() as session, session.get(f"{hub.url}/health") as resp:
            assert resp.status == 200
    finally:
        assert hub.stop() == 0
