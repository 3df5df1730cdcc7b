"""Bad input at each door gets that protocol's own error, and the hub goes on serving everyone else.

Each story sends something broken, checks the answer, then makes a good call that must succeed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import Any

import aiohttp
import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from tests.support.doorclients import Hub, call, h3_client, mcp_message
from tests.support.hubproc import HubProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def doors(hub: HubProcess) -> Hub:
    return Hub(hub.endpoints, hub.state_dir)


async def good_call_works(door: str, hub: Hub, key: str) -> None:
    outcome = await call(door, hub, "echo", {"still": "serving"}, key=key)
    assert (outcome.code, outcome.result) == (None, {"still": "serving"})


async def test_garbage_on_the_udp_port_is_ignored(doors: Hub, hub: HubProcess) -> None:
    host, port = doors.hostport("http3")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in (b"", b"\x00", os.urandom(40), b"\xc0" + os.urandom(1300), b"\x40" + os.urandom(200)):
            sock.sendto(datagram, (host, port))
    async with h3_client(doors) as client:
        response = await client.request("GET", "localhost", "/health")
    assert (response.status, response.json()) == (200, {"status": "ok"})
    await good_call_works("h3", doors, hub.admin_key)


async def test_an_h3_body_over_the_limit_is_413(doors: Hub, hub: HubProcess) -> None:
    async with h3_client(doors) as client:
        response = await client.request("POST", "localhost", "/v1/call",
                                        {"x-api-key": hub.admin_key, "content-type": "application/json"},
                                        b"{" + b" " * (9 * 1024 * 1024) + b"}")
    assert response.status == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    await good_call_works("h3", doors, hub.admin_key)


async def test_a_truncated_protobuf_is_invalid_argument(doors: Hub, hub: HubProcess) -> None:
    host, port = doors.hostport("grpc")
    whole = mcp_message("echo", {"a": "b" * 50}).SerializeToString()
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        raw_call = channel.unary_unary("/democratic_ai.v2.Hub/Call", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await raw_call(whole[: len(whole) // 2], metadata=(("x-api-key", hub.admin_key),), timeout=30)
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid democratic_ai.v2.MCPMessage" in (failed.value.details() or "")
    await good_call_works("grpc", doors, hub.admin_key)


def _h2_exchange(host: str, port: int, headers: list[tuple[str, str]], body: bytes) -> dict[str, str]:
    """One HTTP/2 request with h2 (the gRPC client will not send a wrong content type); the response headers."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    with socket.create_connection((host, port), timeout=30) as sock:
        conn.initiate_connection()
        conn.send_headers(1, headers)
        conn.send_data(1, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        seen: dict[str, str] = {}
        while True:
            data = sock.recv(65536)
            if not data:
                return seen
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    seen.update({str(k): str(v) for k, v in event.headers})
                if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return seen
            sock.sendall(conn.data_to_send())


async def test_a_grpc_call_with_a_wrong_content_type_is_refused(doors: Hub, hub: HubProcess) -> None:
    host, port = doors.hostport("grpc")
    headers = [(":method", "POST"), (":scheme", "http"), (":path", "/democratic_ai.v2.Hub/Call"),
               (":authority", f"{host}:{port}"), ("content-type", "application/json"), ("te", "trailers"),
               ("x-api-key", hub.admin_key)]
    seen = await asyncio.to_thread(_h2_exchange, host, port, headers, b'{"action": "echo"}')
    assert seen.get(":status") == "415" or seen.get("grpc-status") not in (None, "0"), seen
    await good_call_works("grpc", doors, hub.admin_key)


async def post_mcp(hub: Hub, body: Any, key: str, **headers: str) -> tuple[int, Any, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{hub.http}/mcp", data=raw, headers={
                "X-API-Key": key, "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream", **headers}) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None, {k.lower(): v for k, v in resp.headers.items()}


@pytest.mark.parametrize(("story", "body", "headers", "status", "code"), [
    ("not JSON", b"{nope", {}, 400, -32700),
    ("a batch array", [{"jsonrpc": "2.0", "id": 1, "method": "ping"}], {}, 400, -32600),
    ("a request with its id missing", {"jsonrpc": "2.0", "method": "tools/list"}, {}, 400, -32600),
    ("a call before initialize", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {}, 400, -32600),
    ("an unknown session", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
     {"Mcp-Session-Id": "no-such-session"}, 404, -32600),
    ("an unknown method (2026-07-28)",
     {"jsonrpc": "2.0", "id": 1, "method": "resources/teleport", "params": {"_meta": {
         "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}},
     {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "resources/teleport"}, 404, -32601),
    ("a 2026 request without its _meta envelope", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
     {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}, 400, -32602),
    ("headers that contradict the body",
     {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
         "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}},
     {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}, 400, -32020),
    ("a protocol version nobody speaks",
     {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
         "io.modelcontextprotocol/protocolVersion": "2099-01-01", "io.modelcontextprotocol/clientCapabilities": {}}}},
     {"MCP-Protocol-Version": "2099-01-01", "Mcp-Method": "tools/list"}, 400, -32022),
])
async def test_bad_json_rpc_gets_a_json_rpc_error(story: str, body: Any, headers: dict[str, str], status: int,
                                                  code: int, doors: Hub, hub: HubProcess) -> None:
    got_status, reply, _ = await post_mcp(doors, body, hub.admin_key, **headers)
    assert (got_status, reply["jsonrpc"], reply["error"]["code"]) == (status, "2.0", code), story
    await good_call_works("mcp-discover", doors, hub.admin_key)


async def test_an_unknown_method_in_a_session_is_method_not_found(doors: Hub, hub: HubProcess) -> None:
    status, reply, headers = await post_mcp(doors, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
        hub.admin_key)
    assert status == 200 and reply["result"]["protocolVersion"] == "2025-11-25"
    session = headers["mcp-session-id"]
    in_session = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    status, reply, _ = await post_mcp(doors, {"jsonrpc": "2.0", "id": 2, "method": "prompts/teleport"},
                                      hub.admin_key, **in_session)
    assert (status, reply["id"], reply["error"]["code"]) == (200, 2, -32601)
    await good_call_works("mcp-initialize", doors, hub.admin_key)
