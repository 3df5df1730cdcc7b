"""The HTTP/1.1 fast path: plain requests straight to ``HttpApi`` on httptools; anything unusual to aiohttp.

aiohttp's own request handling costs about as much CPU as the hub's whole per-call budget.  This
protocol serves the common shape itself (``http1_wire.py`` says which, and encodes the answers'
heads), parsed by httptools (llhttp, strict).  The moment a request is anything else the
connection becomes aiohttp's: its per-connection handler is made from the runner's server, set
as the transport's protocol and fed every byte from that request's first one.  aiohttp therefore
stays the one answer to every edge case, including the contract's error bodies for what its
parser refuses.

Invariants:
- one request at a time per connection, answered in order; pipelined bytes wait in the buffer
  and reading pauses past ``PIPELINE_BYTES``;
- a hand-off happens only between requests (none in flight), never after a byte of a response;
- the request's ``ApiRequest`` is what the aiohttp door builds for the same bytes (lower-case
  names, ``request.path``, ``dict(request.query)``, peer IP, ``secure``), and the answer has the
  status line and headers aiohttp writes for the same ``ApiResponse`` (Content-Length, Date,
  Server, ``Connection: close`` when closing; chunked for a stream);
- a peer that hangs up cancels its request's task (aiohttp's ``handler_cancellation``);
- an idle connection closes after aiohttp's keep-alive time, measured from the end of its last
  answer (one timer per idle period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import cast

from aiohttp.tcp_helpers import tcp_keepalive

from daemon.api.http_api import ApiRequest, ApiResponse, HttpApi, error_response
from daemon.core.envelope import new_trace_id
from daemon.core.errors import InternalError
from daemon.core.i18n import t
from daemon.doors.http1_wire import (
    EMPTY_BODY_STATUSES,
    KEEPALIVE_S,
    LAST_CHUNK,
    HeadEncoder,
    RequestReader,
    chunk,
)

log = logging.getLogger("democratic_ai.http")

#: pipelined bytes held while a request is served; reading pauses past it
PIPELINE_BYTES = 256 * 1024


class Http1Server:
    """What the fast connections of one listening socket share: the API, the hand-off, limits, the heads.

    ``connection`` is the protocol factory for ``loop.create_server``; ``shutdown`` ends them all.
    """

    def __init__(self, api: HttpApi, handoff: Callable[[], asyncio.Protocol], *, max_body_bytes: int,
                 max_field_bytes: int, secure: bool, alt_svc: Callable[[], str],
                 handed_off_paths: frozenset[str] = frozenset(), keepalive_s: float = KEEPALIVE_S) -> None:
        self.api = api
        #: a fresh aiohttp RequestHandler (the runner's server called): takes over a connection
        self.handoff = handoff
        self.max_body_bytes = max_body_bytes
        #: aiohttp's max_field_size: a header's name and value together may not pass it
        self.max_field_bytes = max_field_bytes
        self.secure = secure
        #: the answers' heads (asks ``alt_svc`` per answer: the HTTP/3 door may come and go)
        self.heads = HeadEncoder(alt_svc)
        #: paths aiohttp routes itself (the WebSocket routes): always handed off, upgrade or not
        self.handed_off_paths = handed_off_paths
        self.keepalive_s = keepalive_s
        #: connections still served here (a handed-off one is aiohttp's server's)
        self.connections: set[FastConnection] = set()
        self.closing = False

    def connection(self) -> FastConnection:
        """A protocol for one accepted connection."""
        return FastConnection(self)

    async def shutdown(self, grace_s: float) -> None:
        """Close idle connections now; answers in flight get ``grace_s`` (and ``Connection: close``), then abort."""
        self.closing = True
        tasks = [task for conn in list(self.connections) if (task := conn.close_when_idle()) is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        for conn in list(self.connections):
            conn.abort()  # still answering (the closed idle ones flush what they hold and go on their own)


class FastConnection(asyncio.Protocol):
    """One client connection until it closes or is handed to aiohttp; also the httptools callback target."""

    def __init__(self, server: Http1Server) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._reader: RequestReader | None = None
        self._buffer = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._idle_deadline = 0.0
        self._gone = False

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Note the peer, keep the socket alive as aiohttp does, start the idle clock."""
        self._transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        server = self._server
        self._reader = RequestReader(
            remote=str(peer[0]) if isinstance(peer, tuple | list) else str(peer or ""), secure=server.secure,
            max_body_bytes=server.max_body_bytes, max_field_bytes=server.max_field_bytes,
            handed_off_paths=server.handed_off_paths)
        tcp_keepalive(transport)  # as aiohttp's handler does for every connection
        self._server.connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        """Buffer; start the next request when none is in flight, else pause reading past PIPELINE_BYTES."""
        self._buffer += data
        if self._task is None:
            self._advance()
        elif len(self._buffer) > PIPELINE_BYTES and not self._reading_paused:
            self._set_reading(paused=True)

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel the request in flight (the caller hung up) and stop the idle clock."""
        self._gone = True
        self._server.connections.discard(self)
        if self._reader is not None:
            self._reader.close()  # its parser holds it: break the cycle
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if self._task is not None:
            self._task.cancel()  # the caller hung up: its call ends in the pipeline too
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        """The transport's buffer is full: a stream waits before its next chunk, the next request too."""
        self._writing_paused = True

    def resume_writing(self) -> None:
        """Wake what waits on ``_drain``."""
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- framing ------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Start the next request in the buffer once it is whole, or hand the connection off."""
        reader = self._reader
        assert reader is not None
        request = reader.read(self._buffer)
        if request is not None:
            self._task = self._loop.create_task(self._serve(request, reader.keep_alive))
        elif reader.handed_off:
            self._hand_off()

    def _hand_off(self) -> None:
        """aiohttp's connection from here: its handler, fed every byte from the current request's first."""
        transport = self._transport
        assert transport is not None and self._task is None
        self._server.connections.discard(self)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if self._reader is not None:
            self._reader.close()
        self._gone = True
        if self._server.closing:
            transport.close()
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        handler = self._server.handoff()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(data)
        if self._reading_paused:
            transport.resume_reading()

    # -- answers --------------------------------------------------------------------------------
    async def _serve(self, request: ApiRequest, keep_alive: bool) -> None:
        """Answer ``request`` as this request's task; then the next one, or close.

        One coroutine for the whole answer (no helper awaited): each wake-up of the call (the
        ledger's receipt) resumes every frame between the task and the pipeline.
        """
        server = self._server
        try:
            try:
                response = await server.api.handle(request)
            except Exception:  # HttpApi.handle maps every error itself; this is a bug, and must not end the door
                log.exception("unhandled error", extra={"path": request.path})
                response = error_response(InternalError(t("errors.http_api.hub_failed_handle_request")),
                                          request.trace_id)
            keep_alive = keep_alive and not server.closing
            try:
                if response.stream is None:
                    self._write_plain(response, keep_alive)
                else:
                    await self._write_stream(response, keep_alive)
                if self._writing_paused:
                    await self._drain()
            except ConnectionError:
                keep_alive = False
            except Exception:  # a stream that broke after its head went out: the connection is unusable, as aiohttp
                log.exception("error while answering", extra={"path": request.path})
                keep_alive = False
        except asyncio.CancelledError:
            # the peer hung up, the door is shutting down, or the request's own task was cancelled (MCP's
            # notifications/cancelled): as aiohttp, no answer follows and the connection ends
            if not self._gone and self._transport is not None:
                self._transport.close()
            raise
        self._task = None
        self._finished(keep_alive)

    def _finished(self, keep_alive: bool) -> None:
        transport = self._transport
        if self._gone or transport is None:
            return
        if not keep_alive or self._server.closing or transport.is_closing():
            transport.close()
            return
        self._arm_idle()
        if self._reading_paused:
            self._set_reading(paused=False)
        if self._buffer:
            self._advance()

    def _write_plain(self, response: ApiResponse, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        status = response.status
        empty = status in EMPTY_BODY_STATUSES
        body = b"" if empty else response.body
        head = self._server.heads.head(status, response.headers, None if empty else len(body), chunked=False,
                                       keep_alive=keep_alive)
        if head is None:
            self._write_refusal()
            raise ConnectionError("a header of the answer cannot be written")
        if transport.is_closing():
            return
        if len(body) < 16384:
            transport.write(head + body)  # one write, one syscall
        else:
            transport.write(head)  # no copy of a large body
            transport.write(body)

    async def _write_stream(self, response: ApiResponse, keep_alive: bool) -> None:
        transport = self._transport
        stream = response.stream
        assert transport is not None and stream is not None
        try:
            empty = response.status in EMPTY_BODY_STATUSES
            head = self._server.heads.head(response.status, response.headers, None, chunked=not empty,
                                           keep_alive=keep_alive)
            if head is None:
                self._write_refusal()
                raise ConnectionError("a header of the answer cannot be written")
            transport.write(head)
            if empty:
                return
            async for part in stream:
                if transport.is_closing():
                    raise ConnectionResetError("the peer is gone")
                if part:  # an empty chunk would end the body
                    transport.write(chunk(part))
                if self._writing_paused:
                    await self._drain()
            transport.write(LAST_CHUNK)
        finally:
            await stream.aclose()

    def _write_refusal(self) -> None:
        """What aiohttp answers when writing the head fails: the contract's INTERNAL body, then close."""
        log.error("an answer carries a header with CR or LF: answered INTERNAL instead")
        response = error_response(InternalError(t("errors.http_api.hub_failed_handle_request")), new_trace_id())
        head = self._server.heads.head(response.status, response.headers, len(response.body), chunked=False,
                                       keep_alive=False)
        if head is not None and self._transport is not None and not self._transport.is_closing():
            self._transport.write(head + response.body)

    async def _drain(self) -> None:
        if not self._writing_paused or self._gone:
            return
        self._drained = self._loop.create_future()
        try:
            await self._drained
        finally:
            self._drained = None
        if self._gone:
            raise ConnectionResetError("the peer is gone")

    # -- idle and shutdown -------------------------------------------------------------------------
    def _arm_idle(self) -> None:
        self._idle_deadline = self._loop.time() + self._server.keepalive_s
        if self._idle_handle is None:
            self._idle_handle = self._loop.call_at(self._idle_deadline, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_handle = None
        if self._task is not None or self._gone:
            return  # busy: armed again when its answer is out
        if self._loop.time() < self._idle_deadline:
            self._idle_handle = self._loop.call_at(self._idle_deadline, self._idle_check)
            return
        if self._transport is not None:
            self._transport.close()

    def _set_reading(self, *, paused: bool) -> None:
        assert self._transport is not None
        self._reading_paused = paused
        with contextlib.suppress(RuntimeError):  # a closing transport
            if paused:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def close_when_idle(self) -> asyncio.Task[None] | None:
        """Close now when no request is in flight; else the task whose answer ends with ``Connection: close``."""
        if self._task is None and self._transport is not None:
            self._transport.close()
        return self._task

    def abort(self) -> None:
        """End the connection now if a request is still in flight, cancelling it (the shutdown grace is over)."""
        if self._task is None or self._transport is None:
            return
        self._task.cancel()
        self._transport.abort()

