"""The HTTP/1.1 + WebSocket door (aiohttp).

Plain routes go through ``HttpApi`` (shared with the HTTP/3 door).  Two WebSocket
routes live here because they are connection-shaped: ``/v1/ws`` (clients: many calls
and their streamed parts over one socket) and ``/v1/modules/attach`` (remote modules).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from daemon.api.http_api import ApiRequest, ApiResponse, HttpApi, error_response, parse_call
from daemon.core.envelope import CallResult, Credentials, ProgressPart
from daemon.core.errors import HubError, PayloadTooLarge, ValidationError
from daemon.core.pipeline import Pipeline
from daemon.doors._compat import bound_sockets
from daemon.hosting.module_host import ModuleHost
from daemon.hosting.remote_module import RemoteModule
from daemon.runtime.config import HttpConfig, parse_listen

log = logging.getLogger("democratic_ai.http")

ATTACH_PERMISSION = "module:create"
WS_PATHS = ("/v1/ws", "/v1/modules/attach")


class HttpDoor:
    """The aiohttp socket: plain routes to ``HttpApi``, two WebSocket routes handled here; ``port`` once started."""

    def __init__(self, config: HttpConfig, api: HttpApi, pipeline: Pipeline, host: ModuleHost, *,
                 alt_svc: str = "", remote_concurrency: int = 16) -> None:
        self.config = config
        self.api = api
        self.pipeline = pipeline
        self.host = host
        self.alt_svc = alt_svc
        self.remote_concurrency = remote_concurrency
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.port = 0

    def build_app(self) -> web.Application:
        """The aiohttp app: the two WebSocket routes, then every other path and method to ``handle``."""
        # aiohttp enforces the body limit itself (client_max_size) before we read it
        app = web.Application(client_max_size=self.config.max_body_bytes, handler_args={"max_field_size": 16384})
        app.router.add_get("/v1/ws", self.client_socket)
        app.router.add_get("/v1/modules/attach", self.attach_socket)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def start(self) -> None:
        """Bind ``config.listen`` and serve; ``port`` is then the bound port (useful when listen asked for 0)."""
        host, port = parse_listen(self.config.listen)
        # handler_cancellation: a caller that hangs up cancels its call in the pipeline (queued work
        # never runs, a model is not kept busy for nobody); aiohttp leaves it off by default
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False,
                                     handler_cancellation=True,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        sockets = bound_sockets(site)
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("http door listening", extra={"listen": f"{host}:{self.port}"})

    async def stop_accepting(self) -> None:
        """Close the listening socket; connections already open keep being served."""
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()

    async def close(self) -> None:
        """Close every open WebSocket with 1001 (going away), then stop the runner (1 s for open requests)."""
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"hub shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- plain routes -----------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One plain request through ``HttpApi``; an over-limit body is PAYLOAD_TOO_LARGE, a stream is chunked out."""
        try:
            body = await request.read() if request.can_read_body else b""
        except web.HTTPRequestEntityTooLarge:
            exc = PayloadTooLarge(f"the body is over {self.config.max_body_bytes} bytes",
                                  {"limit": self.config.max_body_bytes})
            return self._write_plain(error_response(exc, ""))
        api_request = ApiRequest(
            method=request.method,
            path=request.path,
            headers=request.headers,  # case-insensitive already: no copy
            body=body,
            query=dict(request.query),
            remote=request.remote or "",
            door="http",
        )
        response = await self.api.handle(api_request)
        if response.stream is None:
            return self._write_plain(response)
        stream_response = web.StreamResponse(status=response.status, headers=self._headers(response))
        try:
            await stream_response.prepare(request)
            async for chunk in response.stream:
                await stream_response.write(chunk)
            await stream_response.write_eof()
        finally:
            await response.stream.aclose()
        return stream_response

    def _headers(self, response: ApiResponse) -> dict[str, str]:
        headers = dict(response.headers)
        if self.alt_svc:
            headers["alt-svc"] = self.alt_svc
        return headers

    def _write_plain(self, response: ApiResponse) -> web.Response:
        return web.Response(status=response.status, body=response.body, headers=self._headers(response))

    # -- WebSocket for clients ----------------------------------------------------------
    async def client_socket(self, request: web.Request) -> web.StreamResponse:
        """Calls over one socket: {"id", "action", "payload", "stream"?, ...} -> parts/result/error frames.

        Credentials come from the upgrade request's headers, or from a first frame
        ``{"type": "auth", "api_key" | "token": ...}`` for clients that cannot set headers.
        """
        credentials = Credentials.from_headers(request.headers.get("X-API-Key"), request.headers.get("Authorization"))
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=self.config.max_body_bytes)
        await ws.prepare(request)
        self._sockets.add(ws)
        send_lock = asyncio.Lock()

        async def send(frame: dict[str, Any]) -> None:
            async with send_lock:
                if not ws.closed:
                    await ws.send_str(json.dumps(frame, separators=(",", ":")))

        try:
            async with asyncio.TaskGroup() as calls:
                async for message in ws:
                    if message.type is not WSMsgType.TEXT:
                        if message.type is WSMsgType.BINARY:
                            await send(_frame_error(None, ValidationError("frames must be JSON text"), ""))
                        continue
                    try:
                        frame = json.loads(message.data)
                    except ValueError:
                        await send(_frame_error(None, ValidationError("the frame is not valid JSON"), ""))
                        continue
                    if isinstance(frame, dict) and frame.get("type") == "auth":
                        credentials = Credentials(api_key=frame.get("api_key"), bearer=frame.get("token"))
                        await send({"type": "auth", "ok": True})
                        continue
                    calls.create_task(self._ws_call(frame, credentials, request, send, len(message.data)))
        finally:
            self._sockets.discard(ws)
        return ws

    async def _ws_call(self, frame: Any, credentials: Credentials, request: web.Request,
                       send: Any, size: int) -> None:
        call_id = frame.get("id") if isinstance(frame, dict) else None
        trace_id = ApiRequest("GET", "", {k.lower(): v for k, v in request.headers.items()}).trace_id
        try:
            call = parse_call(frame, "ws", trace_id, size)
            ua = request.headers.get("User-Agent", "")
            ip = request.remote or ""
            if frame.get("stream"):
                async for part in self.pipeline.stream(call, credentials, ip=ip, user_agent=ua):
                    await send(_part_frame(part, call_id))
            else:
                await send(_part_frame(await self.pipeline.call(call, credentials, ip=ip, user_agent=ua), call_id))
        except HubError as exc:
            await send(_frame_error(call_id, exc, trace_id))

    # -- WebSocket for remote modules -------------------------------------------------------
    async def attach_socket(self, request: web.Request) -> web.StreamResponse:
        """A remote module's socket: needs module:create; its first frame (10 s) registers it; served until it closes.

        A taken module id is PERMISSION_DENIED; on close the module is detached and its calls end ModuleGone.
        """
        ip = request.remote or ""
        ua = request.headers.get("User-Agent", "")
        credentials = Credentials.from_headers(request.headers.get("X-API-Key"), request.headers.get("Authorization"))
        try:
            principal = await self.pipeline.authenticate(credentials, ip=ip, user_agent=ua)
            self.pipeline.auth.authorize(principal, ATTACH_PERMISSION)
        except HubError as exc:
            return self._write_plain(error_response(exc, ""))
        ws = web.WebSocketResponse(heartbeat=15, max_msg_size=self.config.max_body_bytes)
        await ws.prepare(request)
        self._sockets.add(ws)
        module: RemoteModule | None = None
        try:
            first = await ws.receive(timeout=10)
            frame = json.loads(first.data) if first.type is WSMsgType.TEXT else None

            async def send(out: dict[str, Any]) -> None:
                await ws.send_str(json.dumps(out, separators=(",", ":")))

            module = self.host.attach(frame, send, owner=principal.subject, max_concurrency=self.remote_concurrency)
            await send({"type": "registered", "module_id": module.module_id})
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    with contextlib.suppress(ValueError):
                        reply = json.loads(message.data)
                        if isinstance(reply, dict):
                            module.deliver(reply)
        except (HubError, ValueError, TimeoutError) as exc:
            error = exc if isinstance(exc, HubError) else ValidationError(f"bad registration: {exc}")
            if not ws.closed:
                await ws.send_str(json.dumps({"type": "error", **error.to_body("")}))
        finally:
            self._sockets.discard(ws)
            if module is not None:
                self.host.detach(module)
            if not ws.closed:
                await ws.close()
        return ws


def _part_frame(part: ProgressPart | CallResult, call_id: Any) -> dict[str, Any]:
    # "id" is the client's call id; the hub's message id travels as "message_id"
    frame = {"type": "result", **part.to_dict()} if isinstance(part, CallResult) else part.to_dict()
    return {**frame, "id": call_id, "message_id": part.id}


def _frame_error(call_id: Any, exc: HubError, trace_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "error", **exc.to_body(trace_id)}
