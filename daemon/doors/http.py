"""The HTTP/1.1 + WebSocket door (aiohttp, with httptools in front).

Plain routes go through ``HttpApi`` (shared with the HTTP/3 door).  With ``[http] fast_path`` (the
default) the listening socket's connections start on ``http1.py``'s httptools protocol, which
serves plain requests itself and hands a connection to aiohttp (the app below) at its first
unusual request; without it aiohttp's own TCPSite serves everything.  Three WebSocket
routes are connection-shaped: ``/v1/ws`` (clients: many calls and their streamed parts
over one socket, served by ``ws_clients.py``), ``/v1/modules/attach`` (remote modules) and
``/v1/events`` (the console's live feed, served by ``ws_events.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from daemon.api.http_api import ApiRequest, ApiResponse, HttpApi, error_response
from daemon.console.routes import Console
from daemon.core.envelope import Credentials, new_trace_id
from daemon.core.errors import (
    HubError,
    InternalError,
    PayloadTooLarge,
    ValidationError,
)
from daemon.core.i18n import pick_language, t
from daemon.core.pipeline import Pipeline
from daemon.doors._compat import answer_parse_errors, bound_sockets
from daemon.doors.http1 import Http1Server
from daemon.doors.ws_clients import ClientSockets
from daemon.doors.ws_events import EventSockets
from daemon.hosting.attachment import Attachment
from daemon.hosting.module_host import ModuleHost
from daemon.runtime.config import HttpConfig, parse_listen
from daemon.runtime.tls import TlsPair, server_context

log = logging.getLogger("democratic_ai.http")

WS_PATHS = ("/v1/ws", "/v1/modules/attach", "/v1/events")
#: one header's value (an API key, a JWT) may be this long; a longer one is VALIDATION_ERROR (400)
MAX_HEADER_BYTES = 16384
#: what open requests get at close before they are cancelled (aiohttp's and the fast path's alike)
SHUTDOWN_GRACE_S = 1.0


class HttpDoor:
    """The aiohttp socket: plain routes to ``HttpApi``, two WebSocket routes handled here; ``port`` once started."""

    def __init__(self, config: HttpConfig, api: HttpApi, pipeline: Pipeline, host: ModuleHost, *,
                 alt_svc: str = "", remote_concurrency: int = 16, attach_recheck_s: float = 1.0,
                 tls: TlsPair | None = None, console: Console | None = None) -> None:
        self.config = config
        #: served over TLS with this pair when set (the hub decides: beyond loopback, or asked for)
        self.tls = tls
        self.api = api
        self.pipeline = pipeline
        self.host = host
        self.alt_svc = alt_svc
        self.remote_concurrency = remote_concurrency
        #: how often an attached module's credential is checked again (the authenticator's own tick)
        self.attach_recheck_s = attach_recheck_s
        self._runner: web.AppRunner | None = None
        #: the fast path's listening socket and its connections (None: aiohttp's TCPSite listens)
        self._listener: asyncio.AbstractServer | None = None
        self._fast: Http1Server | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._clients = ClientSockets(config, pipeline, self._sockets)
        #: the console's live feed (NOT_FOUND without a console)
        self.events = EventSockets(self._sockets, console=console)
        self.port = 0

    def build_app(self) -> web.Application:
        """The aiohttp app: the two WebSocket routes, then every other path and method to ``handle``."""
        # aiohttp enforces the body limit itself (client_max_size) before we read it
        app = web.Application(client_max_size=self.config.max_body_bytes,
                              handler_args={"max_field_size": MAX_HEADER_BYTES})
        app.router.add_get("/v1/ws", self.client_socket)
        app.router.add_get("/v1/modules/attach", self.attach_socket)
        app.router.add_get("/v1/events", self.events_socket)
        # the hot path first, by its exact path: aiohttp finds it in its index without trying the
        # catch-all's pattern (same handler, so every method and answer stays the same)
        app.router.add_route("*", "/v1/call", self.handle)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def start(self) -> None:
        """Bind ``config.listen`` and serve; ``port`` is then the bound port (useful when listen asked for 0)."""
        host, port = parse_listen(self.config.listen)
        # handler_cancellation: a caller that hangs up cancels its call in the pipeline (queued work
        # never runs, a model is not kept busy for nobody); aiohttp leaves it off by default
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False,
                                     handler_cancellation=True,
                                     shutdown_timeout=SHUTDOWN_GRACE_S)
        await self._runner.setup()
        answer_parse_errors(self._runner, self._malformed)
        ssl_context = server_context(self.tls) if self.tls is not None else None
        if self.config.fast_path:
            server = self._runner.server
            assert server is not None
            self._fast = Http1Server(self.api, server, max_body_bytes=self.config.max_body_bytes,
                                     max_field_bytes=MAX_HEADER_BYTES, secure=ssl_context is not None,
                                     alt_svc=lambda: self.alt_svc, handed_off_paths=frozenset(WS_PATHS))
            # aiohttp's TCPSite's own settings (backlog 128), with the fast protocol in front
            self._listener = await asyncio.get_running_loop().create_server(
                self._fast.connection, host, port, reuse_address=True, ssl=ssl_context, backlog=128)
            sockets = list(self._listener.sockets)
        else:
            site = web.TCPSite(self._runner, host, port, reuse_address=True, ssl_context=ssl_context)
            await site.start()
            sockets = bound_sockets(site)
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("http door listening", extra={"listen": f"{host}:{self.port}", "tls": self.tls is not None})

    async def stop_accepting(self) -> None:
        """Close the listening socket; connections already open keep being served."""
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()

    async def close(self) -> None:
        """Close every open WebSocket with 1001 (going away), then end the fast connections and the runner.

        Both give requests in flight ``SHUTDOWN_GRACE_S`` before cancelling them."""
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"hub shutting down")
        if self._listener is not None:
            self._listener.close()
        ends = []
        if self._fast is not None:  # the same 1 s for answers in flight as aiohttp's shutdown_timeout
            ends.append(self._fast.shutdown(SHUTDOWN_GRACE_S))
        if self._runner is not None:
            ends.append(self._runner.cleanup())
            self._runner = None
        await asyncio.gather(*ends)

    # -- plain routes -----------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One plain request through ``HttpApi``; an over-limit body is PAYLOAD_TOO_LARGE, a stream is chunked out."""
        try:
            body = await request.read() if request.can_read_body else b""
        except web.HTTPRequestEntityTooLarge:
            exc = PayloadTooLarge(t("errors.doors_http.body_over_bytes", max_body_bytes=self.config.max_body_bytes),
                                  {"limit": self.config.max_body_bytes})
            return self._write_plain(error_response(exc, "", pick_language(request.headers.get("Accept-Language"))))
        api_request = ApiRequest(
            method=request.method,
            path=request.path,
            headers=request.headers,  # case-insensitive already: no copy
            body=body,
            query=dict(request.query),
            remote=request.remote or "",
            door="http",
            secure=request.secure,
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

    def _malformed(self, status: int, reason: str) -> web.Response:
        """What aiohttp's parser refused before any route ran (a header over its limit, a bad request line).

        The contract's body: VALIDATION_ERROR for the parser's 400s, INTERNAL for a failure in aiohttp itself.
        """
        exc: HubError = (InternalError(t("errors.http_api.hub_failed_handle_request")) if status >= 500 else
                         ValidationError(t("errors.doors_http.request_malformed", reason=reason.strip()[:200]),
                                         {"max_header_bytes": MAX_HEADER_BYTES}))
        return self._write_plain(error_response(exc, new_trace_id()))

    def _write_plain(self, response: ApiResponse) -> web.Response:
        return web.Response(status=response.status, body=response.body, headers=self._headers(response))

    # -- WebSocket for clients ----------------------------------------------------------
    async def client_socket(self, request: web.Request) -> web.StreamResponse:
        """Calls over one socket, authenticated at the upgrade or by its first frame (``ws_clients.py``)."""
        return await self._clients.serve(request, self._write_plain)

    async def events_socket(self, request: web.Request) -> web.StreamResponse:
        """The console's live feed (``ws_events.py``)."""
        return await self.events.serve(request, self._write_plain)

    # -- WebSocket for remote modules -------------------------------------------------------
    async def attach_socket(self, request: web.Request) -> web.StreamResponse:
        """A remote module's socket: its first frame (10 s) registers it; served until it closes.

        Who may attach, whom the module serves and the watch on the attaching credential are
        ``hosting/attachment.py``'s; this moves frames.  A refused knock gets the error body; a
        credential that stops holding closes the socket with 1008 and the reason.
        """
        credentials = Credentials.from_headers(request.headers.get("X-API-Key"), request.headers.get("Authorization"))
        attachment = Attachment(self.host, self.pipeline.auth, credentials, ip=request.remote or "",
                                user_agent=request.headers.get("User-Agent", ""), recheck_s=self.attach_recheck_s,
                                max_concurrency=self.remote_concurrency)
        try:
            await attachment.admit()
        except HubError as exc:
            return self._write_plain(error_response(exc, ""))
        ws = web.WebSocketResponse(heartbeat=15, max_msg_size=self.config.max_body_bytes)
        await ws.prepare(request)
        self._sockets.add(ws)
        watch: asyncio.Task[None] | None = None

        async def send(out: dict[str, Any]) -> None:
            await ws.send_str(json.dumps(out, separators=(",", ":")))

        async def close(exc: HubError) -> None:
            if not ws.closed:
                await send({"type": "error", **exc.to_body("")})
                # a close reason fits in 123 bytes; cut on a character, not inside one
                reason = f"{exc.code}: {exc.message}".encode()[:120].decode(errors="ignore").encode()
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason)

        try:
            first = await ws.receive(timeout=10)
            frame = json.loads(first.data) if first.type is WSMsgType.TEXT else None
            module = attachment.register(frame, send)
            await send({"type": "registered", "module_id": module.module_id})
            watch = asyncio.create_task(attachment.watch(close), name=f"attach-watch-{module.module_id}")
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    with contextlib.suppress(ValueError):
                        reply = json.loads(message.data)
                        if isinstance(reply, dict):
                            module.deliver(reply)
        except (HubError, ValueError, TimeoutError) as exc:
            error = exc if isinstance(exc, HubError) else ValidationError(t("errors.doors_http.bad_registration",
                                                                            exc=exc))
            if not ws.closed:
                await send({"type": "error", **error.to_body("")})
        finally:
            self._sockets.discard(ws)
            attachment.end()
            if watch is not None:
                watch.cancel()  # a watcher that is closing the socket has nothing left worth waiting for
                await asyncio.wait([watch])
            if not ws.closed:
                await ws.close()
        return ws
