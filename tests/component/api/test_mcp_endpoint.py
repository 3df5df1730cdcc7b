"""McpEndpoint without a transport: JSON-RPC over ApiRequest, sessions on a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from daemon.api.http_api import ApiResponse
from daemon.api.mcp.sessions import SessionTable
from tests.support.fakes import (
    KEY,
    VIEWER_KEY,
    FakeClock,
    InProcessHub,
    api_request,
    body_json,
    in_process_hub,
    principal,
)

ACCEPT = {"accept": "application/json, text/event-stream"}
MODERN = "2026-07-28"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[InProcessHub]:
    async with in_process_hub(tmp_path, allowed_origins=("https://app.example/",), max_sessions=3,
                              session_idle_s=60.0) as parts:
        yield parts


def rpc(method: str, params: dict[str, Any] | None = None, rpc_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params or {}}


async def post(hub: InProcessHub, body: Any, *, session: str | None = None, key: str | None = KEY,
               headers: dict[str, str] | None = None) -> ApiResponse:
    extra = {**ACCEPT, **(headers or {})}
    if session is not None:
        extra |= {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
    return await hub.api.handle(api_request("POST", "/mcp", body, key=key, headers=extra))


async def initialize(hub: InProcessHub, key: str = KEY, version: str = "2025-11-25") -> str:
    response = await post(hub, rpc("initialize", {"protocolVersion": version, "capabilities": {},
                                                  "clientInfo": {"name": "t", "version": "0"}}), key=key)
    assert response.status == 200, response.body
    return response.headers["mcp-session-id"]


async def test_initialize_opens_a_session_and_negotiates_the_version(hub: InProcessHub) -> None:
    response = await post(hub, rpc("initialize", {"protocolVersion": "2025-06-18"}))
    assert response.status == 200
    assert response.headers["mcp-session-id"] in hub.mcp.sessions
    result = body_json(response)["result"]
    assert result["protocolVersion"] == "2025-06-18"
    assert result["serverInfo"]["name"] == "democratic-ai"
    unknown = body_json(await post(hub, rpc("initialize", {"protocolVersion": "1999-01-01"})))
    assert unknown["result"]["protocolVersion"] == "2025-11-25"  # the newest handshake revision


async def test_tools_list_lists_echo(hub: InProcessHub) -> None:
    session = await initialize(hub)
    response = await post(hub, rpc("tools/list"), session=session)
    assert response.status == 200
    tools = {t["name"]: t for t in body_json(response)["result"]["tools"]}
    assert tools["echo"]["description"] == "Returns its payload unchanged."
    assert tools["echo"]["inputSchema"] == {"type": "object"}


async def test_a_caller_without_module_use_sees_no_tools(hub: InProcessHub) -> None:
    session = await initialize(hub, key=VIEWER_KEY)
    response = await post(hub, rpc("tools/list"), session=session, key=VIEWER_KEY)
    assert body_json(response)["result"]["tools"] == []


async def test_tools_call_returns_the_echo_result(hub: InProcessHub) -> None:
    session = await initialize(hub)
    response = await post(hub, rpc("tools/call", {"name": "echo", "arguments": {"x": 1}}, rpc_id=7),
                          session=session)
    assert response.status == 200
    message = body_json(response)
    assert message["id"] == 7
    assert message["result"] == {"content": [{"type": "text", "text": '{"x":1}'}], "structuredContent": {"x": 1},
                                 "isError": False}
    assert [r.action for r in hub.gate.recorded] == ["echo"]


async def test_an_unknown_tool_is_invalid_params_carrying_the_hub_code(hub: InProcessHub) -> None:
    session = await initialize(hub)
    response = await post(hub, rpc("tools/call", {"name": "no.such"}), session=session)
    assert response.status == 200  # handshake-era errors ride 200
    error = body_json(response)["error"]
    assert (error["code"], error["data"]["code"]) == (-32602, "CAPABILITY_NOT_FOUND")


async def test_a_streamed_tool_call_with_a_progress_token_answers_over_sse(hub: InProcessHub) -> None:
    session = await initialize(hub)
    params = {"name": "echo.stream", "arguments": {"steps": 2}, "_meta": {"progressToken": "p1"}}
    response = await post(hub, rpc("tools/call", params), session=session)
    assert response.status == 200 and response.headers["content-type"] == "text/event-stream"
    assert response.stream is not None
    events = [chunk async for chunk in response.stream]
    await response.stream.aclose()
    assert all(e.startswith(b"event: message\ndata: ") and e.endswith(b"\n\n") for e in events)
    assert [e.count(b"notifications/progress") for e in events] == [1, 1, 0]
    assert b'"structuredContent":{"steps":2}' in events[-1]


async def test_a_foreign_browser_origin_is_refused_before_anything_else(hub: InProcessHub) -> None:
    refused = await post(hub, rpc("initialize"), headers={"origin": "http://evil.example"})
    assert refused.status == 403
    assert body_json(refused)["error"]["code"] == "PERMISSION_DENIED"
    for origin in ("http://localhost:3000", "http://127.0.0.1", "https://APP.example"):
        assert (await post(hub, rpc("initialize"), headers={"origin": origin})).status == 200, origin


async def challenge_and_metadata(hub: InProcessHub, host: str) -> tuple[str, ApiResponse]:
    response = await post(hub, rpc("initialize"), key=None, headers={"host": host})
    assert response.status == 401
    metadata = await hub.api.handle(api_request("GET", "/.well-known/oauth-protected-resource/mcp", key=None,
                                                headers={"host": host}))
    return response.headers["www-authenticate"], metadata


async def test_without_credentials_a_loopback_caller_is_told_where_the_metadata_is(hub: InProcessHub) -> None:
    challenge, metadata = await challenge_and_metadata(hub, "127.0.0.1:8080")
    assert challenge == 'Bearer resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"'
    assert body_json(metadata) == {"resource": "http://127.0.0.1:8080/mcp", "bearer_methods_supported": ["header"],
                                   "resource_name": "democratic-ai hub", "scopes_supported": []}


async def test_a_host_the_hub_does_not_trust_is_never_reflected(hub: InProcessHub) -> None:
    challenge, metadata = await challenge_and_metadata(hub, "evil.example")
    assert challenge == "Bearer"
    assert (metadata.status, body_json(metadata)["error"]["code"]) == (404, "NOT_FOUND")
    assert b"evil" not in metadata.body


async def test_the_configured_public_url_names_the_hub_whatever_the_host(tmp_path: Path) -> None:
    async with in_process_hub(tmp_path, public_url="https://hub.example:9443/") as hub:
        challenge, metadata = await challenge_and_metadata(hub, "evil.example")
    assert challenge == 'Bearer resource_metadata="https://hub.example:9443/.well-known/oauth-protected-resource/mcp"'
    assert body_json(metadata)["resource"] == "https://hub.example:9443/mcp"


async def test_an_allowed_host_names_the_hub_on_any_port(tmp_path: Path) -> None:
    async with in_process_hub(tmp_path, allowed_hosts=("hub.lan",)) as hub:
        _, metadata = await challenge_and_metadata(hub, "hub.lan:8080")
        _, other = await challenge_and_metadata(hub, "hub.lan.evil.example")
    assert body_json(metadata)["resource"] == "http://hub.lan:8080/mcp"
    assert other.status == 404


async def test_a_session_is_required_known_and_owned(hub: InProcessHub) -> None:
    assert (await post(hub, rpc("tools/list"))).status == 400
    assert (await post(hub, rpc("tools/list"), session="nope")).status == 404
    theirs = await initialize(hub, key=VIEWER_KEY)
    assert (await post(hub, rpc("tools/list"), session=theirs)).status == 404  # another caller's id


async def test_a_session_idle_past_its_limit_is_ended_when_the_next_one_opens(hub: InProcessHub) -> None:
    idle = await initialize(hub)
    kept = await initialize(hub)
    hub.clock.advance(50)
    assert (await post(hub, rpc("ping"), session=kept)).status == 200  # used: its idle time starts again
    hub.clock.advance(20)  # idle: 70 s > 60 s; kept: 20 s
    await initialize(hub)
    assert (await post(hub, rpc("ping"), session=idle)).status == 404
    assert (await post(hub, rpc("ping"), session=kept)).status == 200


OTHER_TENANT_KEY = "dai_other_tenant_key"


def other_tenant(hub: InProcessHub, key: str = OTHER_TENANT_KEY, tenant: str = "t2") -> str:
    hub.auth.keys[key] = replace(principal(f"key:{tenant}"), tenant_id=tenant, tenant_name=tenant)
    return key


async def test_a_tenant_at_its_cap_ends_its_own_oldest_session_never_another_tenants(tmp_path: Path) -> None:
    async with in_process_hub(tmp_path, max_sessions=10, max_sessions_per_tenant=2) as hub:
        theirs = await initialize(hub, key=other_tenant(hub))
        first, second = await initialize(hub), await initialize(hub)
        hub.clock.advance(1)
        assert (await post(hub, rpc("ping"), session=first)).status == 200
        third = await initialize(hub)  # t1 holds 2: its least recently used (second) goes
        assert [s in hub.mcp.sessions for s in (theirs, first, second, third)] == [True, True, False, True]
        assert hub.mcp.sessions.held_by("t1") == 2 and hub.mcp.sessions.held_by("t2") == 1


async def test_a_full_table_refuses_a_new_session_instead_of_evicting_others(tmp_path: Path) -> None:
    async with in_process_hub(tmp_path, max_sessions=3, max_sessions_per_tenant=2, session_idle_s=60.0) as hub:
        held = [await initialize(hub), await initialize(hub), await initialize(hub, key=other_tenant(hub))]
        late = other_tenant(hub, "dai_late_key", "t3")
        refused = await post(hub, rpc("initialize", {"protocolVersion": "2025-11-25"}), key=late)
        assert (refused.status, body_json(refused)["error"]["code"]) == (503, "UNAVAILABLE")
        assert refused.headers["retry-after"] == "60"
        assert all(s in hub.mcp.sessions for s in held)
        hub.clock.advance(60)  # every session idle: the next initialize ends them and opens
        assert await initialize(hub, key=late) in hub.mcp.sessions


async def test_delete_ends_the_session(hub: InProcessHub) -> None:
    session = await initialize(hub)
    headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
    response = await hub.api.handle(api_request("DELETE", "/mcp", headers=headers))
    assert response.status == 200
    assert (await post(hub, rpc("ping"), session=session)).status == 404


async def test_notifications_are_accepted_and_initialized_marks_the_session(hub: InProcessHub) -> None:
    session = await initialize(hub)
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await post(hub, note, session=session)).status == 202
    assert next(iter(hub.mcp.sessions)).initialized


@pytest.mark.parametrize(("raw", "status", "code"), [
    (b"[]", 400, -32600), (b"{not json", 400, -32700), (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', 400, -32600),
    (b'{"jsonrpc":"2.0","method":"tools/list"}', 400, -32600)])
async def test_malformed_messages_are_refused_with_their_code(hub: InProcessHub, raw: bytes, status: int,
                                                              code: int) -> None:
    response = await hub.api.handle(api_request("POST", "/mcp", raw=raw, headers=ACCEPT))
    assert (response.status, body_json(response)["error"]["code"]) == (status, code)


def modern(method: str, params: dict[str, Any] | None = None, version: str = MODERN) -> tuple[dict[str, Any],
                                                                                             dict[str, str]]:
    meta = {"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}}
    return rpc(method, {**(params or {}), "_meta": meta}), {"mcp-protocol-version": version, "mcp-method": method}


async def test_the_sessionless_revision_lists_and_calls_tools(hub: InProcessHub) -> None:
    body, headers = modern("tools/list")
    listed = body_json(await post(hub, body, headers=headers))["result"]
    assert listed["resultType"] == "complete" and listed["cacheScope"] == "private"
    assert listed["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "democratic-ai"
    body, headers = modern("tools/call", {"name": "echo", "arguments": {"y": 2}})
    called = await post(hub, body, headers={**headers, "mcp-name": "=?base64?ZWNobw==?="})  # "echo"
    assert body_json(called)["result"]["structuredContent"] == {"y": 2}
    assert len(hub.mcp.sessions) == 0


async def test_the_sessionless_revision_checks_headers_and_version(hub: InProcessHub) -> None:
    body, headers = modern("tools/list")
    mismatch = await post(hub, body, headers={**headers, "mcp-method": "ping"})
    assert (mismatch.status, body_json(mismatch)["error"]["code"]) == (400, -32020)
    body, headers = modern("tools/list", version="2030-01-01")
    unsupported = await post(hub, body, headers=headers)
    error = body_json(unsupported)["error"]
    assert (unsupported.status, error["code"]) == (400, -32022)
    assert error["data"]["supported"][0] == MODERN
    body, headers = modern("nothing/here")
    assert (await post(hub, body, headers=headers)).status == 404


def test_the_session_table_reads_only_its_injected_clock() -> None:
    clock = FakeClock(0.0)
    table = SessionTable(max_sessions=10, idle_s=5.0, clock=clock)
    old = table.open("key:a", "2025-11-25")
    assert old.last_seen == 0.0
    clock.advance(5.0)  # idle exactly the limit: ended by the next open
    new = table.open("key:a", "2025-11-25")
    assert old.closed.is_set() and old.id not in table and new.id in table
    assert table.use(new.id, "key:b") is None and table.use(new.id, "key:a") is new


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000,
                                 b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "\\ud800"}}'])
async def test_hostile_json_is_a_parse_error_carrying_the_validation_error(raw: bytes, hub: InProcessHub) -> None:
    response = await hub.api.handle(api_request("POST", "/mcp", raw=raw, headers=ACCEPT))
    assert response.status == 400
    error = body_json(response)["error"]
    assert error["code"] == -32700 and error["data"]["error"]["code"] == "VALIDATION_ERROR"
