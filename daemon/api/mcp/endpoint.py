"""The Model Context Protocol door: ``POST /mcp`` (Streamable HTTP), tools = capabilities.

Mounted on ``HttpApi``, so it is served by the HTTP/1.1 and the HTTP/3 door alike.  Two
protocol revisions, told apart per request:

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
the RFC 9728 metadata at ``/.well-known/oauth-protected-resource``); a browser ``Origin``
that is not loopback or listed in ``http.allowed_origins`` is 403.  A streaming capability
called with a ``progressToken`` answers over SSE: ``notifications/progress``, then the result.

Errors keep the hub's codes: a capability the caller may not see or that does not exist
is JSON-RPC -32602 (``data`` is the contract body); every other HubError from a call is a
tool result with ``isError`` and the contract body as ``structuredContent``.  The mapping
reads only the HubError class attributes (``http_status``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from daemon import __version__
from daemon.api.http_api import ApiRequest, ApiResponse, HttpApi, encode, error_response
from daemon.core.envelope import CallRequest, CallResult, Principal, ProgressPart
from daemon.core.errors import HubError, PermissionDenied
from daemon.runtime.config import HttpConfig
from daemon.runtime.logs import trace_id_var

log = logging.getLogger("democratic_ai.mcp")

MODERN_VERSIONS = ("2026-07-28",)
HANDSHAKE_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")  # newest first
DEFAULT_LEGACY_VERSION = "2025-03-26"  # a request without MCP-Protocol-Version (streamable-http rule)
SERVER_INFO = {"name": "democratic-ai", "version": __version__}
INSTRUCTIONS = "Each tool is a capability of this democratic-ai hub; its arguments are the capability's payload."

PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
TTL_KEY = "democratic-ai/ttl"  # params._meta: the call's TTL in seconds
PRIORITY_KEY = "democratic-ai/priority"

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION = -32020, -32022
#: HTTP status of a JSON-RPC error on the 2026-07-28 path (its transport's table); handshake-era errors ride 200
MODERN_ERROR_STATUS = {PARSE_ERROR: 400, INVALID_REQUEST: 400, INVALID_PARAMS: 400, HEADER_MISMATCH: 400,
                       UNSUPPORTED_PROTOCOL_VERSION: 400, METHOD_NOT_FOUND: 404}

SSE = "text/event-stream"
SESSION_HEADER = "mcp-session-id"
SSE_KEEPALIVE_S = 15.0
_LOOPBACK_ORIGIN = re.compile(r"^https?://(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d+)?$", re.I)
_B64_SENTINEL = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")


class RpcError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, code: int, message: str, data: Any = None, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.http_status = http_status


@dataclass(slots=True)
class Session:
    id: str
    subject: str
    version: str
    last_seen: float
    initialized: bool = False
    listening: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: tools/call requests in flight, by JSON-RPC id: notifications/cancelled cancels them
    calls: dict[str | int, asyncio.Task[Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Rpc:
    """One decoded JSON-RPC request and where it came from."""

    id: str | int
    method: str
    params: dict[str, Any]
    request: ApiRequest
    principal: Principal
    modern: bool
    version: str

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.params.get("_meta")
        return meta if isinstance(meta, dict) else {}


def _message(rpc_id: Any, result: dict[str, Any] | None = None, error: RpcError | None = None) -> dict[str, Any]:
    if error is not None:
        body: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.data is not None:
            body["data"] = error.data
        return {"jsonrpc": "2.0", "id": rpc_id, "error": body}
    return {"jsonrpc": "2.0", "id": rpc_id, "result": result}


def _sse_event(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + encode(message) + b"\n\n"


def decode_header_value(value: str | None) -> str | None:
    """``=?base64?…?=`` header values (non-ASCII names) decoded; anything else verbatim."""
    if value is None:
        return None
    match = _B64_SENTINEL.fullmatch(value)
    if match is None:
        return value
    try:
        return base64.b64decode(match.group("payload"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


class _ToolStream:
    """SSE body of a streamed tools/call: progress notifications, then the response; ``aclose`` ends the call."""

    def __init__(self, endpoint: McpEndpoint, rpc: _Rpc, token: str | int, first: ProgressPart | CallResult,
                 parts: AsyncIterator[ProgressPart | CallResult]) -> None:
        self._endpoint = endpoint
        self._rpc = rpc
        self._token = token
        self._pending: ProgressPart | CallResult | None = first
        self._parts = parts
        self._done = False

    def __aiter__(self) -> _ToolStream:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        part = self._pending
        self._pending = None
        try:
            if part is None:
                part = await anext(self._parts)
        except StopAsyncIteration:
            self._done = True
            raise
        except HubError as exc:
            self._done = True
            return _sse_event(self._endpoint.call_error(self._rpc, exc))
        if isinstance(part, CallResult):
            self._done = True
            return _sse_event(_message(self._rpc.id, self._endpoint.tool_result(self._rpc, part)))
        params: dict[str, Any] = {"progressToken": self._token, "progress": part.progress, "total": 1.0}
        if part.message:
            params["message"] = part.message
        return _sse_event({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    async def aclose(self) -> None:
        self._done = True
        await self._parts.aclose()  # type: ignore[attr-defined]


class McpEndpoint:
    """``/mcp`` and its protected-resource metadata, mounted on an ``HttpApi``; owns the 2025 sessions.

    It has a door's lifecycle (the hub starts and closes it with the doors) but no socket of its own.
    """

    def __init__(self, api: HttpApi, config: HttpConfig, *, max_sessions: int = 1024,
                 session_idle_s: float = 3600.0) -> None:
        self.api = api
        self.pipeline = api.pipeline
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in config.allowed_origins)
        self.max_sessions = max_sessions
        self.session_idle_s = session_idle_s
        self.sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self.port = 0
        self._closing = asyncio.Event()
        api.add("/mcp", POST=self.post, GET=self.get, DELETE=self.delete)
        api.add("/.well-known/oauth-protected-resource", GET=self.resource_metadata)
        api.add("/.well-known/oauth-protected-resource/mcp", GET=self.resource_metadata)

    # -- lifecycle (a door without a socket) ------------------------------------------
    async def start(self) -> None:
        return None

    async def stop_accepting(self) -> None:
        return None

    async def close(self) -> None:
        self._closing.set()
        for session in self.sessions.values():
            session.closed.set()
        self.sessions.clear()

    # -- the gate every /mcp request passes first ---------------------------------------
    def _origin_refused(self, request: ApiRequest) -> ApiResponse | None:
        origin = request.header("origin")
        if not origin:
            return None
        if _LOOPBACK_ORIGIN.match(origin) or origin.rstrip("/").lower() in self.allowed_origins:
            return None
        exc = PermissionDenied(f"origin {origin!r} may not use /mcp", {"origin": origin})
        return error_response(exc, trace_id_var.get())

    def _base_url(self, request: ApiRequest) -> str:
        scheme = "https" if request.door == "http3" else "http"
        return f"{scheme}://{request.header('host', 'localhost')}"

    async def _admit(self, request: ApiRequest) -> Principal | ApiResponse:
        """Origin, then credentials: before the body is even parsed."""
        refused = self._origin_refused(request)
        if refused is not None:
            return refused
        try:
            return await self.pipeline.authenticate(request.credentials, ip=request.remote,
                                                    user_agent=request.header("user-agent"))
        except HubError as exc:
            response = error_response(exc, trace_id_var.get())
            if exc.http_status == 401:
                metadata = f"{self._base_url(request)}/.well-known/oauth-protected-resource/mcp"
                response.headers["www-authenticate"] = f'Bearer resource_metadata="{metadata}"'
            return response

    async def resource_metadata(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """RFC 9728: what this resource is and how to present a token for it."""
        base = self._base_url(request)
        return ApiResponse.json({
            "resource": f"{base}/mcp",
            "authorization_servers": [base],
            "bearer_methods_supported": ["header"],
            "resource_name": "democratic-ai hub",
            "scopes_supported": [],
        })

    # -- POST: one JSON-RPC message ---------------------------------------------------------
    async def post(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        admitted = await self._admit(request)
        if isinstance(admitted, ApiResponse):
            return admitted
        principal = admitted
        version_header = request.header("mcp-protocol-version")
        modern = bool(version_header) and version_header not in HANDSHAKE_VERSIONS
        try:
            message = self._decode(request)
            if "id" not in message:
                return self._notification(message, request, principal, modern)
            rpc_id = message["id"]
            if isinstance(rpc_id, bool) or not isinstance(rpc_id, str | int):
                raise RpcError(INVALID_REQUEST, "`id` must be a string or an integer", http_status=400)
            method = message.get("method")
            if not isinstance(method, str):
                raise RpcError(INVALID_REQUEST, "a request needs a `method` (this endpoint takes no responses)",
                               http_status=400)
            params = message.get("params", {})
            if not isinstance(params, dict):
                raise RpcError(INVALID_PARAMS, "`params` must be an object", http_status=400)
        except RpcError as exc:
            return self._reply(None, exc, modern=True)
        try:
            if method == "initialize":
                return self._initialize(rpc_id, params, principal)
            if modern:
                rpc = self._modern(rpc_id, method, params, request, principal)
            else:
                rpc = self._legacy(rpc_id, method, params, request, principal)
            return await self._dispatch(rpc)
        except RpcError as exc:
            return self._reply(rpc_id, exc, modern=modern)

    def _decode(self, request: ApiRequest) -> dict[str, Any]:
        content_type = request.header("content-type").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise RpcError(INVALID_REQUEST, "Content-Type must be application/json", http_status=415)
        accept = request.header("accept")
        if accept and not any(t in accept for t in ("application/json", SSE, "*/*", "application/*")):
            raise RpcError(INVALID_REQUEST, "Accept must allow application/json and text/event-stream",
                           http_status=406)
        try:
            message = json.loads(request.body)
        except (ValueError, RecursionError):
            raise RpcError(PARSE_ERROR, "Parse error: the body is not JSON", http_status=400) from None
        if isinstance(message, list):
            raise RpcError(INVALID_REQUEST, "batches are not supported: send one JSON-RPC message per POST",
                           http_status=400)
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise RpcError(INVALID_REQUEST, "the body must be one JSON-RPC 2.0 message object", http_status=400)
        return message

    def _notification(self, message: dict[str, Any], request: ApiRequest, principal: Principal,
                      modern: bool) -> ApiResponse:
        method = message.get("method")
        if method is None and ("result" in message or "error" in message):
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
            params = message.get("params")
            request_id = params.get("requestId") if isinstance(params, dict) else None
            task = session.calls.get(request_id) if isinstance(request_id, str | int) else None
            if task is not None:
                task.cancel()  # the call is cancelled in the pipeline: queued work never runs
        return ApiResponse(202, {})

    def _reply(self, rpc_id: Any, exc: RpcError, *, modern: bool) -> ApiResponse:
        status = exc.http_status or (MODERN_ERROR_STATUS.get(exc.code, 200) if modern else 200)
        return ApiResponse(status, {"content-type": "application/json"}, encode(_message(rpc_id, error=exc)))

    # -- the two eras ------------------------------------------------------------------------
    def _initialize(self, rpc_id: str | int, params: dict[str, Any], principal: Principal) -> ApiResponse:
        asked = params.get("protocolVersion")
        version = asked if asked in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[0]
        session = self._open_session(principal, version)
        result = {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS,
        }
        return ApiResponse(200, {"content-type": "application/json", SESSION_HEADER: session.id},
                           encode(_message(rpc_id, result)))

    def _modern(self, rpc_id: str | int, method: str, params: dict[str, Any], request: ApiRequest,
                principal: Principal) -> _Rpc:
        """The 2026-07-28 ladder: envelope present, headers match the body, version served."""
        meta = params.get("_meta")
        if not isinstance(meta, dict) or PROTOCOL_VERSION_KEY not in meta or CLIENT_CAPABILITIES_KEY not in meta:
            raise RpcError(INVALID_PARAMS, f"params._meta must carry {PROTOCOL_VERSION_KEY!r} and "
                                           f"{CLIENT_CAPABILITIES_KEY!r}")
        version = meta[PROTOCOL_VERSION_KEY]
        if request.header("mcp-protocol-version") != version:
            raise RpcError(HEADER_MISMATCH, "MCP-Protocol-Version does not match params._meta's protocol version")
        if request.header("mcp-method") != method:
            raise RpcError(HEADER_MISMATCH, "Mcp-Method does not match the request's method")
        if method == "tools/call" and params.get("name") is not None:
            if decode_header_value(request.headers.get("mcp-name")) != params.get("name"):
                raise RpcError(HEADER_MISMATCH, "Mcp-Name does not match params.name")
        if version not in MODERN_VERSIONS:
            raise RpcError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                           {"supported": [*MODERN_VERSIONS, *HANDSHAKE_VERSIONS], "requested": version})
        return _Rpc(rpc_id, method, params, request, principal, modern=True, version=version)

    def _legacy(self, rpc_id: str | int, method: str, params: dict[str, Any], request: ApiRequest,
                principal: Principal) -> _Rpc:
        session = self._session(request, principal, required=True)
        assert session is not None
        version = request.header("mcp-protocol-version") or DEFAULT_LEGACY_VERSION
        return _Rpc(rpc_id, method, params, request, principal, modern=False, version=version)

    # -- sessions (2025 revisions) -----------------------------------------------------------
    def _open_session(self, principal: Principal, version: str) -> Session:
        now = time.monotonic()
        while self.sessions:
            oldest = next(iter(self.sessions.values()))
            if len(self.sessions) < self.max_sessions and now - oldest.last_seen < self.session_idle_s:
                break
            self._end_session(oldest.id)
        session = Session(secrets.token_urlsafe(24), principal.subject, version, now)
        self.sessions[session.id] = session
        return session

    def _session(self, request: ApiRequest, principal: Principal, *, required: bool) -> Session | None:
        session_id = request.header(SESSION_HEADER)
        if not session_id:
            if required:
                raise RpcError(INVALID_REQUEST, "Bad Request: no Mcp-Session-Id: send initialize first",
                               http_status=400)
            return None
        session = self.sessions.get(session_id)
        if session is None or session.subject != principal.subject:  # another caller's id reads as unknown
            raise RpcError(INVALID_REQUEST, "Not Found: no such session (it ended or expired)", http_status=404)
        session.last_seen = time.monotonic()
        self.sessions.move_to_end(session_id)
        return session

    def _end_session(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            session.closed.set()

    async def get(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """The 2025 session's stream for server-initiated messages (this hub sends none yet; keepalives)."""
        admitted = await self._admit(request)
        if isinstance(admitted, ApiResponse):
            return admitted
        version = request.header("mcp-protocol-version")
        if (version and version not in HANDSHAKE_VERSIONS) or not request.header(SESSION_HEADER):
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
            return self._reply(None, exc, modern=False)
        return ApiResponse(200, {"content-type": SSE, "cache-control": "no-cache, no-transform"},
                           stream=self._listen(session))

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
        admitted = await self._admit(request)
        if isinstance(admitted, ApiResponse):
            return admitted
        try:
            session = self._session(request, admitted, required=True)
        except RpcError as exc:
            return self._reply(None, exc, modern=False)
        assert session is not None
        self._end_session(session.id)
        return ApiResponse(200, {})

    # -- methods ---------------------------------------------------------------------------------
    async def _dispatch(self, rpc: _Rpc) -> ApiResponse:
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

    def _result(self, rpc: _Rpc, result: dict[str, Any]) -> ApiResponse:
        if rpc.modern:
            result.setdefault("resultType", "complete")
            result.setdefault("_meta", {})[SERVER_INFO_KEY] = SERVER_INFO
        return ApiResponse(200, {"content-type": "application/json"}, encode(_message(rpc.id, result)))

    async def _tools_list(self, rpc: _Rpc) -> dict[str, Any]:
        try:
            capabilities = await self.pipeline.callable_capabilities(rpc.principal)
        except HubError as exc:
            raise RpcError(-32603, exc.message, exc.to_body(trace_id_var.get())) from None
        result: dict[str, Any] = {"tools": [_tool(c) for c in capabilities]}
        if rpc.modern:
            result.update(ttlMs=0, cacheScope="private")
        return result

    def _call_request(self, rpc: _Rpc) -> CallRequest:
        name = rpc.params.get("name")
        if not isinstance(name, str) or not name:
            raise RpcError(INVALID_PARAMS, "tools/call needs params.name")
        arguments = rpc.params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "params.arguments must be an object")
        ttl = rpc.meta.get(TTL_KEY)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
            raise RpcError(INVALID_PARAMS, f"params._meta[{TTL_KEY!r}] must be a positive number of seconds")
        priority = rpc.meta.get(PRIORITY_KEY, 5)
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
            raise RpcError(INVALID_PARAMS, f"params._meta[{PRIORITY_KEY!r}] must be an integer 0-9")
        return CallRequest(action=name, payload=arguments, priority=priority,
                           ttl=float(ttl) if ttl is not None else None, door="mcp",
                           trace_id=trace_id_var.get(), bytes_in=len(rpc.request.body))

    async def _tools_call(self, rpc: _Rpc) -> ApiResponse:
        session = None if rpc.modern else self._session(rpc.request, rpc.principal, required=False)
        task = asyncio.current_task()
        if session is None or task is None:
            return await self._run_tool(rpc)
        session.calls[rpc.id] = task
        try:
            return await self._run_tool(rpc)
        finally:
            session.calls.pop(rpc.id, None)

    async def _run_tool(self, rpc: _Rpc) -> ApiResponse:
        call = self._call_request(rpc)
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
            return self._result(rpc, self.tool_result(rpc, result))
        assert isinstance(token, str | int)
        parts = self.pipeline.stream(call, credentials, ip=rpc.request.remote, user_agent=ua)
        try:
            first = await anext(parts)
        except HubError as exc:
            await parts.aclose()  # type: ignore[attr-defined]
            return self._call_failed(rpc, exc)
        except BaseException:
            await parts.aclose()  # type: ignore[attr-defined]
            raise
        if isinstance(first, CallResult):
            await parts.aclose()  # type: ignore[attr-defined]
            return self._result(rpc, self.tool_result(rpc, first))
        return ApiResponse(200, {"content-type": SSE, "cache-control": "no-cache, no-transform"},
                           stream=_ToolStream(self, rpc, token, first, parts))

    def _call_failed(self, rpc: _Rpc, exc: HubError) -> ApiResponse:
        message = self.call_error(rpc, exc)
        if "error" in message:
            return self._reply(rpc.id, RpcError(**message["error"]), modern=rpc.modern)
        return ApiResponse(200, {"content-type": "application/json"}, encode(message))

    # -- encoding ------------------------------------------------------------------------------------
    def tool_result(self, rpc: _Rpc, result: CallResult) -> dict[str, Any]:
        text = result.result_json.decode()
        structured = result.result if isinstance(result.result, dict) else {"result": result.result}
        out: dict[str, Any] = {"content": [{"type": "text", "text": text}], "structuredContent": structured,
                               "isError": False}
        if rpc.modern:
            out["resultType"] = "complete"
        return out

    def call_error(self, rpc: _Rpc, exc: HubError) -> dict[str, Any]:
        """A HubError from a tools/call as the JSON-RPC message that answers it."""
        body = exc.to_body(trace_id_var.get())
        if exc.http_status in (403, 404):
            # not a tool this caller has: the protocol's "unknown tool"
            error = RpcError(INVALID_PARAMS, f"Unknown tool: {rpc.params.get('name')}", body["error"])
            return _message(rpc.id, error=error)
        result: dict[str, Any] = {
            "content": [{"type": "text", "text": f"{exc.code}: {exc.message}"}],
            "structuredContent": body,
            "isError": True,
        }
        if rpc.modern:
            result["resultType"] = "complete"
        return _message(rpc.id, result)


def _object_schema(schema: Any) -> dict[str, Any]:
    if isinstance(schema, dict) and schema.get("type") == "object":
        return schema
    return {"type": "object"}


def _tool(capability: dict[str, Any]) -> dict[str, Any]:
    # MCP wants object schemas; a non-object result travels as {"result": ...} (see tool_result)
    return {
        "name": capability["action"],
        "description": capability.get("description") or capability["action"],
        "inputSchema": _object_schema(capability.get("input_schema")),
        "outputSchema": _object_schema(capability.get("output_schema")),
    }
