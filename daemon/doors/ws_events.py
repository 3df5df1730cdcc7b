"""``/v1/events``: the console's live feed over a WebSocket (aiohttp), server to browser only.

The upgrade is authenticated like any /v1 request (X-API-Key, Bearer, or the console's cookie)
and needs console:read; a refusal is the contract's JSON body and no socket opens, as is the
65th watcher (503).  The credential is checked again every ``recheck_s``: a revoked key or an
ended session closes the socket with 1008.  Frames come from the console's bus; a reader that
lets ``QUEUE_SIZE`` frames pile up is closed with 4008 ("slow reader") instead of being
buffered for.  The socket's send buffers are kept small so a stuck reader shows as a full
queue soon, not after megabytes.  What the client sends is read (4 KiB at most) and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from aiohttp import WSCloseCode, web

from daemon.api.http_api import ApiRequest, ApiResponse, error_response
from daemon.console.events import Subscription
from daemon.console.routes import Console
from daemon.core.envelope import new_trace_id
from daemon.core.errors import HubError, NotFound
from daemon.core.i18n import language_var, t

log = logging.getLogger("democratic_ai.http")

SLOW_READER = 4008
MAX_CLIENT_FRAME = 4096
#: kernel send buffer and transport high-water mark of a feed socket
SEND_BUFFER = 32 * 1024


class EventSockets:
    """Serves ``/v1/events``; ``sockets`` is the door's set of open sockets (closed with 1001 at shutdown)."""

    def __init__(self, sockets: set[web.WebSocketResponse], *, console: Console | None = None,
                 recheck_s: float = 5.0, close_timeout_s: float = 5.0) -> None:
        self.sockets = sockets
        self.recheck_s = recheck_s
        self.close_timeout_s = close_timeout_s
        #: the hub's console; None: the route answers NOT_FOUND
        self.console = console

    @property
    def watching(self) -> int:
        """Feed sockets open now."""
        return len(self.console.bus) if self.console is not None else 0

    async def serve(self, request: web.Request, write: Callable[[ApiResponse], web.StreamResponse]
                    ) -> web.StreamResponse:
        """Authenticate, subscribe, then send frames until either side ends it."""
        api_request = ApiRequest("GET", request.path, request.headers, b"", dict(request.query),
                                 request.remote or "", "http", request.secure)
        # refusals and close reasons in the watcher's language (the tasks below copy this context)
        token = language_var.set(api_request.language)
        try:
            return await self._serve(request, api_request, write)
        finally:
            language_var.reset(token)

    async def _serve(self, request: web.Request, api_request: ApiRequest,
                     write: Callable[[ApiResponse], web.StreamResponse]) -> web.StreamResponse:
        console = self.console
        try:
            if console is None:
                raise NotFound(t("errors.console.off"))
            subscription, api_request = await console.watcher(api_request)
        except HubError as exc:
            return write(error_response(exc, new_trace_id()))
        ws = web.WebSocketResponse(heartbeat=15, max_msg_size=MAX_CLIENT_FRAME)
        try:
            await ws.prepare(request)
        except BaseException:
            console.bus.unsubscribe(subscription)
            raise
        _small_buffers(request)
        self.sockets.add(ws)
        tasks = {asyncio.create_task(coro) for coro in
                 (self._read(ws), self._write(ws, subscription), subscription.ended(),
                  self._recheck(console, api_request))}
        code: int = WSCloseCode.OK
        reason = b""
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            failed = [task.result() for task in done if task.exception() is None and task.result()]
            if subscription.overflowed:
                code, reason = SLOW_READER, b"slow reader"
            elif failed:
                code, reason = WSCloseCode.POLICY_VIOLATION, close_reason(str(failed[0]))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            console.bus.unsubscribe(subscription)
            self.sockets.discard(ws)
            await self._close(ws, request, code, reason)
        return ws

    async def _close(self, ws: web.WebSocketResponse, request: web.Request, code: int, reason: bytes) -> None:
        """Close with ``code``; a peer that reads nothing cannot hold the close up: the connection is cut."""
        if ws.closed:
            return
        try:
            async with asyncio.timeout(self.close_timeout_s):
                await ws.close(code=code, message=reason)
        except (TimeoutError, ConnectionError):
            if request.transport is not None:
                request.transport.abort()

    @staticmethod
    async def _read(ws: web.WebSocketResponse) -> None:
        """Drain what the client sends (pings, anything): read and ignored, up to its close."""
        async for _ in ws:
            pass

    @staticmethod
    async def _write(ws: web.WebSocketResponse, subscription: Subscription) -> None:
        while (text := await subscription.next()) is not None:
            await ws.send_str(text)

    async def _recheck(self, console: Console, request: ApiRequest) -> str:
        """Returns why the watcher may no longer watch (its credential or role no longer holds)."""
        while True:
            await asyncio.sleep(self.recheck_s)
            try:
                await console.recheck(request)
            except HubError as exc:
                return f"{exc.code}: {exc.text.render(language_var.get())}"


def close_reason(text: str, limit: int = 123) -> bytes:
    """``text`` as a close frame's reason: at most ``limit`` bytes of UTF-8, never a character cut in two."""
    return text.encode()[:limit].decode(errors="ignore").encode()


def _small_buffers(request: web.Request) -> None:
    """Keep a feed socket's send buffers small: a reader that stops shows up as a full queue early."""
    transport = request.transport
    if transport is None:
        return
    with contextlib.suppress(OSError, AttributeError, NotImplementedError):
        transport.set_write_buffer_limits(high=SEND_BUFFER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
