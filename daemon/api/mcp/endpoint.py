"""The Model Context Protocol door: ``POST /mcp`` (Streamable HTTP), tools = capabilities.

Mounted on ``HttpApi``, so it is served by the HTTP/1.1 and the HTTP/3 door alike.  Two
protocol revisions, told apart per request (``versions.py``):

* **2026-07-28** (a request carrying ``MCP-Protocol-Version`` that is not a handshake
  revision): no session; every request carries ``params._meta`` with the protocol version
  and client capabilities, ``MCP-Protocol-Version`` / ``Mcp-Method`` / ``Mcp-Name`` must
  match the body, ``server/discover`` says what is served; unknown versions get -32022
  naming the versions this hub speaks.
* **2025-11-25** (and 2025-06-18 / 2025-03-26): ``initialize`` negotiates the version
  and opens a session (``Mcp-Session-Id``); later requests must carry it (missing: 400,
  unknown: 404); ``GET`` opens the session's SSE stream; ``DELETE`` ends the session.

Methods: ``tools/list``, ``tools/call``, ``ping`` (+ ``server/discover`` / ``initialize``).
One JSON-RPC message per POST (a batch is 400); notifications are answered 202.
Credentials are checked before anything else is read (401 + ``WWW-Authenticate`` naming
the RFC 9728 metadata at ``/.well-known/oauth-protected-resource``, under ``http.public_url``
or a trusted Host: ``security.py``); a browser ``Origin``
that is not loopback or listed in ``http.allowed_origins`` is 403.  A streaming capability
called with a ``progressToken`` answers over SSE: ``notifications/progress``, then the result.

Errors keep the hub's codes (``tools.py``): a capability the caller may not see or that does
not exist is JSON-RPC -32602 (``data`` is the contract body); every other HubError from a call
is a tool result with ``isError`` and the contract body as ``structuredContent``.  The mapping
reads only the HubError class attributes (``http_status``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from daemon.api.http_api import ApiRequest, ApiResponse, HttpApi, encode, error_response
from daemon.api.mcp import tools, versions
from daemon.api.mcp.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    SSE,
    Rpc,
    RpcError,
    decode_message,
    error_reply,
    message,
    request_parts,
)
from daemon.api.mcp.security import normalize_hosts, normalize_origins, origin_refused, public_base
from daemon.api.mcp.sessions import Session, SessionTable
from daemon.api.mcp.versions import INSTRUCTIONS, MODERN_VERSIONS, SERVER_INFO, SESSION_HEADER, VERSION_HEADER
from daemon.core.envelope import CallResult, Principal, trace_id_var
from daemon.core.errors import HubError, NotFound
from daemon.core.i18n import t
from daemon.runtime.config import HttpConfig

log = logging.getLogger("democratic_ai.mcp")

SSE_KEEPALIVE_S = 15.0
_SSE_HEADERS = {"content-type": SSE, "cache-control": "no-cache, no-transform"}


class McpEndpoint:
    """``/mcp`` and its protected-resource metadata, mounted on an ``HttpApi``; owns the 2025 sessions.

    It has a door's lifecycle (the hub starts and closes it with the doors) but no socket of its own.
    ``clock`` (monotonic seconds) times the sessions' idleness.
    """

    def __init__(self, api: HttpApi, config: HttpConfig, *, max_sessions: int = 1024,
                 max_sessions_per_tenant: int = 64, session_idle_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.pipeline = api.pipeline
        self.allowed_origins = normalize_origins(config.allowed_origins)
        self.public_url = config.public_url
        self.allowed_hosts = normalize_hosts(config.allowed_hosts)
        self.sessions = SessionTable(max_sessions=max_sessions, max_per_tenant=max_sessions_per_tenant,
                                     idle_s=session_idle_s, clock=clock)
        self.port = 0
        self._closing = asyncio.Event()
        api.add("/mcp", POST=self.post, GET=self.get, DELETE=self.delete)
        api.add("/.well-known/oauth-protected-resource", GET=self.resource_metadata)
        api.add("/.well-known/oauth-protected-resource/mcp", GET=self.resource_metadata)

    # -- lifecycle (a door without a socket) ------------------------------------------
    async def start(self) -> None:
        """Nothing to open: the routes were mounted on the HttpApi at construction."""
        return None

    async def stop_accepting(self) -> None:
        """Nothing to stop: the HTTP doors stop accepting for /mcp."""
        return None

    async def close(self) -> None:
        """End every session, which closes their GET streams."""
        self._closing.set()
        self.sessions.close()

    # -- the gate every /mcp request passes first ---------------------------------------
    async def _admit(self, request: ApiRequest) -> Principal | ApiResponse:
        """Origin, then credentials: before the body is even parsed."""
        refused = origin_refused(request, self.allowed_origins)
        if refused is not None:
            return refused
        try:
            return await self.pipeline.authenticate(request.credentials, ip=request.remote,
                                                    user_agent=request.header("user-agent"))
        except HubError as exc:
            response = error_response(exc, trace_id_var.get())
            if exc.http_status == 401:
                base = public_base(request, self.public_url, self.allowed_hosts)
                # an untrusted Host gets the bare challenge: its name is never reflected into a URL
                response.headers["www-authenticate"] = "Bearer" if base is None else (
                    f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"')
            return response

    async def resource_metadata(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """RFC 9728: what this resource is and how to present a token for it.

        No ``authorization_servers``: the hub serves no OAuth authorization server (no
        RFC 8414 metadata, no authorize or token endpoint); its tokens come from
        ``/v1/auth/token`` and API keys from its operators.
        """
        base = public_base(request, self.public_url, self.allowed_hosts)
        if base is None:
            raise NotFound(t("errors.endpoint.no_resource_metadata_host"))
        return ApiResponse.json({
            "resource": f"{base}/mcp",
            "bearer_methods_supported": ["header"],
            "resource_name": "democratic-ai hub",
            "scopes_supported": [],
        })

    # -- POST: one JSON-RPC message ---------------------------------------------------------
    async def post(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """One JSON-RPC request (answered) or notification (202)."""
        admitted = await self._admit(request)
        if isinstance(admitted, ApiResponse):
            return admitted
        principal = admitted
        modern = versions.is_modern(request.header(VERSION_HEADER))
        try:
            decoded = await decode_message(request)
            if "id" not in decoded:
                return self._notification(decoded, request, principal, modern)
            rpc_id, method, params = request_parts(decoded)
        except RpcError as exc:
            return error_reply(None, exc, modern=True)
        try:
            if method == "initialize":
                return self._initialize(rpc_id, params, principal)
            if modern:
                version = versions.modern_version(method, params, request)
            else:
                self._session(request, principal, required=True)
                version = versions.legacy_version(request.header(VERSION_HEADER))
            rpc = Rpc(rpc_id, method, params, request, principal, modern=modern, version=version)
            return await self._dispatch(rpc)
        except RpcError as exc:
            return error_reply(rpc_id, exc, modern=modern)

    def _notification(self, decoded: dict[str, Any], request: ApiRequest, principal: Principal,
                      modern: bool) -> ApiResponse:
        method = decoded.get("method")
        if method is None and ("result" in decoded or "error" in decoded):
            return ApiResponse(202, {})  # a response to a request this hub never sends: accepted, dropped
        if not isinstance(method, str) or not method.startswith("notifications/"):
            # a request without an id is not a notification: it would silently never be answered
            raise RpcError(INVALID_REQUEST, f"the request {method!r} needs an `id`", http_status=400)
        if modern:
            return ApiResponse(202, {})
        session = self._session(request, principal, required=False)
        if session is not None and method == "notifications/initialized":
            session.initialized = True
        if session is not None and method == "notifications/cancelled":
            params = decoded.get("params")
            request_id = params.get("requestId") if isinstance(params, dict) else None
            task = session.calls.get(request_id) if isinstance(request_id, str | int) else None
            if task is not None:
                task.cancel()  # the call is cancelled in the pipeline: queued work never runs
        return ApiResponse(202, {})

    def _initialize(self, rpc_id: str | int, params: dict[str, Any], principal: Principal) -> ApiResponse:
        version = versions.negotiate(params.get("protocolVersion"))
        session = self.sessions.open(principal.subject, version, tenant=principal.tenant_id)
        result = {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS,
        }
        return ApiResponse(200, {"content-type": "application/json", SESSION_HEADER: session.id},
                           encode(message(rpc_id, result)))

    def _session(self, request: ApiRequest, principal: Principal, *, required: bool) -> Session | None:
        """The request's session, marked used; 400 when ``required`` and absent, 404 when unknown."""
        session_id = request.header(SESSION_HEADER)
        if not session_id:
            if required:
                raise RpcError(INVALID_REQUEST, "Bad Request: no Mcp-Session-Id: send initialize first",
                               http_status=400)
            return None
        session = self.sessions.use(session_id, principal.subject)  # another caller's id reads as unknown
        if session is None:
            raise RpcError(INVALID_REQUEST, "Not Found: no such session (it ended or expired)", http_status=404)
        return session

    # -- GET / DELETE: the 2025 session ------------------------------------------------------
    async def get(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """The 2025 session's stream for server-initiated messages (this hub sends none yet; keepalives)."""
        admitted = await self._admit(request)
        if isinstance(admitted, ApiResponse):
            return admitted
        version = request.header(VERSION_HEADER)
        if versions.is_modern(version) or not request.header(SESSION_HEADER):
            return ApiResponse(405, {"allow": "POST, DELETE", "content-type": "application/json"},
                               encode({"error": {"code": "METHOD_NOT_ALLOWED", "details": {"allow": ["POST"]},
                                                 "message": "GET /mcp opens a session's stream: initialize first",
                                                 "trace_id": trace_id_var.get()}}))
        try:
            session = self._session(request, admitted, required=True)
            assert session is not None
            if SSE not in request.header("accept"):
                raise RpcError(INVALID_REQUEST, "Accept must allow text/event-stream", http_status=406)
            if session.listening:
                raise RpcError(INVALID_REQUEST, "this session's stream is already open", http_status=409)
        except RpcError as exc:
            return error_reply(None, exc, modern=False)
        return ApiResponse(200, dict(_SSE_HEADERS), stream=self._listen(session))

    async def _listen(self, session: Session) -> AsyncGenerator[bytes, None]:
        session.listening = True
        try:
            yield b": stream open\n\n"
            while not session.closed.is_set():
                try:
                    async with asyncio.timeout(SSE_KEEPALIVE_S):
                        await session.closed.wait()
                except TimeoutError:
                    yield b": keepalive\n\n"
        finally:
            session.listening = False

    async def delete(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """End the caller's session (its GET stream closes)."""
        admitted = await self._admit(request)
        if isinstance(admitted, ApiResponse):
            return admitted
        try:
            session = self._session(request, admitted, required=True)
        except RpcError as exc:
            return error_reply(None, exc, modern=False)
        assert session is not None
        self.sessions.end(session.id)
        return ApiResponse(200, {})

    # -- methods ---------------------------------------------------------------------------------
    async def _dispatch(self, rpc: Rpc) -> ApiResponse:
        if rpc.method == "tools/call":
            return await self._tools_call(rpc)
        if rpc.method == "tools/list":
            result = await self._tools_list(rpc)
        elif rpc.method == "ping":
            result = {}
        elif rpc.method == "server/discover" and rpc.modern:
            result = {
                "supportedVersions": list(MODERN_VERSIONS),
                "capabilities": {"tools": {"listChanged": False}},
                "instructions": INSTRUCTIONS,
                "ttlMs": 0,
                "cacheScope": "public",
            }
        else:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {rpc.method}")
        return self._result(rpc, result)

    def _result(self, rpc: Rpc, result: dict[str, Any]) -> ApiResponse:
        if rpc.modern:
            result.setdefault("resultType", "complete")
            result.setdefault("_meta", {})[versions.SERVER_INFO_KEY] = SERVER_INFO
        return ApiResponse(200, {"content-type": "application/json"}, encode(message(rpc.id, result)))

    async def _tools_list(self, rpc: Rpc) -> dict[str, Any]:
        try:
            capabilities = await self.pipeline.callable_capabilities(rpc.principal)
        except HubError as exc:
            raise RpcError(INTERNAL_ERROR, exc.render(), exc.to_body(trace_id_var.get())) from None
        result: dict[str, Any] = {"tools": [tools.tool(c) for c in capabilities]}
        if rpc.modern:
            result.update(ttlMs=0, cacheScope="private")
        return result

    async def _tools_call(self, rpc: Rpc) -> ApiResponse:
        session = None if rpc.modern else self._session(rpc.request, rpc.principal, required=False)
        task = asyncio.current_task()
        if session is None or task is None:
            return await self._run_tool(rpc)
        session.calls[rpc.id] = task
        try:
            return await self._run_tool(rpc)
        finally:
            session.calls.pop(rpc.id, None)

    async def _run_tool(self, rpc: Rpc) -> ApiResponse:
        call = tools.call_request(rpc)
        credentials = rpc.request.credentials
        ua = rpc.request.header("user-agent")
        token = rpc.meta.get("progressToken")
        wants_progress = isinstance(token, str | int) and not isinstance(token, bool) \
            and SSE in rpc.request.header("accept")
        if not wants_progress:
            try:
                result = await self.pipeline.call(call, credentials, ip=rpc.request.remote, user_agent=ua)
            except HubError as exc:
                return self._call_failed(rpc, exc)
            reply = tools.tool_reply(rpc, result)
            if reply is not None:
                return ApiResponse(200, {"content-type": "application/json"}, reply)
            return self._result(rpc, tools.tool_result(rpc, result))
        assert isinstance(token, str | int)
        parts = self.pipeline.stream(call, credentials, ip=rpc.request.remote, user_agent=ua)
        try:
            first = await anext(parts)
        except HubError as exc:
            await parts.aclose()
            return self._call_failed(rpc, exc)
        except BaseException:
            await parts.aclose()
            raise
        if isinstance(first, CallResult):
            await parts.aclose()
            return self._result(rpc, tools.tool_result(rpc, first))
        return ApiResponse(200, dict(_SSE_HEADERS), stream=tools.ToolStream(rpc, token, first, parts))

    def _call_failed(self, rpc: Rpc, exc: HubError) -> ApiResponse:
        answer = tools.call_error(rpc, exc)
        if "error" in answer:
            return error_reply(rpc.id, RpcError(**answer["error"]), modern=rpc.modern)
        return ApiResponse(200, {"content-type": "application/json"}, encode(answer))
