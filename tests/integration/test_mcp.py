"""An MCP client's view of the hub: auth, origins, sessions, tool listing and roles."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.support.cli import cli_ok
from tests.support.doorclients import HttpLog, Hub, find_error, mcp_client
from tests.support.hubproc import ROOT, HubProcess

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


MCP_1X = "mcp>=1.20,<2"


@pytest.fixture(scope="session")
def mcp1_python() -> Path:
    """A venv with the official MCP SDK's 1.x line, cached outside the clone and keyed by its spec.

    It cannot share the project's venv (the project pins mcp 2.x). Failing to build it fails the
    test: a missing 1.x client must not pass as a skip.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "democratic-ai"
    venv = cache / ("mcp-" + hashlib.sha256(MCP_1X.encode()).hexdigest()[:12])
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "-q", MCP_1X], check=True, timeout=600)
        (venv / ".ready").touch()
    return python


@pytest.fixture(scope="module")
def doors(hub: HubProcess) -> Hub:
    return Hub(hub.endpoints, hub.state_dir)


async def test_without_credentials_the_client_is_told_where_to_authenticate(doors: Hub) -> None:
    log = HttpLog()
    with pytest.raises(Exception) as failed:  # the SDK's MCPError, maybe inside an ExceptionGroup
        async with mcp_client(doors, key=None, mode="auto", log=log):
            pass
    assert find_error(failed.value, MCPError) is not None
    status, body, headers = log.errors[-1]
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")
    challenge = headers["www-authenticate"]
    assert challenge.startswith("Bearer resource_metadata=")
    metadata_url = challenge.split('"')[1]
    async with aiohttp.ClientSession() as session, session.get(metadata_url) as resp:
        metadata = await resp.json()
    assert resp.status == 200 and metadata["resource"] == f"{doors.http}/mcp"
    assert metadata["bearer_methods_supported"] == ["header"]


@pytest.mark.parametrize(("origin", "status"), [
    ("http://evil.example", 403), ("http://localhost:3000", 200), ("http://127.0.0.1", 200)])
async def test_a_browser_origin_must_be_loopback_or_allowed(origin: str, status: int, doors: Hub,
                                                           hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{doors.http}/mcp", json=INIT,
                                headers={**ACCEPT, "X-API-Key": hub.admin_key, "Origin": origin}) as resp:
            assert resp.status == status
            if status == 403:
                assert (await resp.json())["error"]["code"] == "PERMISSION_DENIED"


async def test_a_session_lives_from_initialize_to_delete(doors: Hub, hub: HubProcess) -> None:
    key = {"X-API-Key": hub.admin_key}
    async with aiohttp.ClientSession(headers=key) as session:
        async with session.post(f"{doors.http}/mcp", json=INIT, headers=ACCEPT) as resp:
            session_id = resp.headers["Mcp-Session-Id"]
        ids = {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"}
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with session.post(f"{doors.http}/mcp", json=note, headers={**ACCEPT, **ids}) as resp:
            assert resp.status == 202
        async with session.get(f"{doors.http}/mcp", headers={"Accept": "text/event-stream", **ids}) as stream:
            assert stream.status == 200 and stream.content_type == "text/event-stream"
            assert (await stream.content.readline()).startswith(b": stream open")
            async with session.delete(f"{doors.http}/mcp", headers=ids) as resp:
                assert resp.status == 200
            assert await stream.content.read() in (b"", b"\n")  # the session's stream ends with it
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        async with session.post(f"{doors.http}/mcp", json=ping, headers={**ACCEPT, **ids}) as resp:
            assert resp.status == 404
        async with session.get(f"{doors.http}/mcp", headers={"Accept": "text/event-stream"}) as resp:
            assert resp.status == 405 and "POST" in resp.headers["Allow"]


async def test_tools_are_the_capabilities_with_their_schemas(doors: Hub, hub: HubProcess) -> None:
    async with mcp_client(doors, key=hub.admin_key, mode="auto") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"echo", "echo.stream", "text.summarize"} <= set(tools)
    stream = tools["echo.stream"]
    assert stream.input_schema["properties"]["steps"]["type"] == "integer"
    assert stream.output_schema is not None and stream.output_schema["type"] == "object"
    assert stream.description


async def test_the_2x_client_session_over_streamable_http_handshakes(doors: Hub, hub: HubProcess) -> None:
    import httpx2

    http = httpx2.AsyncClient(headers={"X-API-Key": hub.admin_key})
    async with http, streamable_http_client(f"{doors.http}/mcp", http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.protocol_version == "2025-11-25"
            result = await session.call_tool("echo", {"via": "ClientSession"})
    assert result.structured_content == {"via": "ClientSession"}


async def test_the_official_1x_sdk_client_initializes_lists_and_calls(mcp1_python: Path, doors: Hub,
                                                                     hub: HubProcess) -> None:
    """Most deployed MCP clients still run the SDK's 1.x API: it runs here from its own venv."""
    done = await asyncio.to_thread(
        # -I (isolated): the script's own folder never shadows a stdlib module on sys.path
        subprocess.run, [str(mcp1_python), "-I", str(ROOT / "tests" / "support" / "mcp1_client.py"),
                         f"{doors.http}/mcp", hub.admin_key], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["sdk"].startswith("1.")
    assert seen["protocol"] in {"2025-11-25", "2025-06-18", "2025-03-26"}
    assert "echo" in seen["tools"]
    assert seen["result"] == {"via": "1.x"} and not seen["is_error"]


async def test_a_role_that_may_not_call_sees_no_tools(doors: Hub, hub: HubProcess) -> None:
    viewer = cli_ok(hub.state_dir, "key", "create", "--tenant", "default", "--role", "viewer").splitlines()[-1]
    async with mcp_client(doors, key=viewer, mode="auto") as client:
        assert (await client.list_tools()).tools == []
        with pytest.raises(Exception) as failed:
            await client.call_tool("echo", {})
    error = find_error(failed.value, MCPError)
    assert error is not None and error.error.code == -32602
    assert error.error.data["code"] == "PERMISSION_DENIED"


async def test_notifications_cancelled_stops_the_call_in_the_pipeline(doors: Hub, hub: HubProcess) -> None:
    import asyncio

    from tests.support.doorclients import metric

    key = {"X-API-Key": hub.admin_key}
    before = await metric(doors, "democratic_ai_requests_total", action="echo.stream", code="CANCELLED", door="mcp")
    async with aiohttp.ClientSession(headers=key) as session:
        async with session.post(f"{doors.http}/mcp", json=INIT, headers=ACCEPT) as resp:
            ids = {"Mcp-Session-Id": resp.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
        slow = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "echo.stream", "arguments": {"steps": 3, "delay_ms": 3000}}}

        async def call() -> int:
            async with session.post(f"{doors.http}/mcp", json=slow, headers={**ACCEPT, **ids}) as resp:
                await resp.read()
                return resp.status

        pending = asyncio.create_task(call())
        for _ in range(100):  # until the call is running in the hub
            if await metric(doors, "democratic_ai_in_flight", module="echo") >= 1:
                break
            await asyncio.sleep(0.05)
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
        async with session.post(f"{doors.http}/mcp", json=cancel, headers={**ACCEPT, **ids}) as resp:
            assert resp.status == 202
        # the server drops the request: no answer comes (the connection ends), long before 9 s
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(pending, 5)
        ping = {"jsonrpc": "2.0", "id": 8, "method": "ping"}
        async with session.post(f"{doors.http}/mcp", json=ping, headers={**ACCEPT, **ids}) as resp:
            assert resp.status == 200
    for _ in range(50):
        after = await metric(doors, "democratic_ai_requests_total", action="echo.stream", code="CANCELLED",
                             door="mcp")
        if after == before + 1:
            break
        await asyncio.sleep(0.1)
    assert after == before + 1
