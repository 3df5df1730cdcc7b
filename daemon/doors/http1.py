"""The HTTP/1.1 fast path: plain requests straight to ``HttpApi`` on httptools; anything unusual to aiohttp.

aiohttp's own request handling costs about as much CPU as the hub's whole per-call budget.  This
protocol serves the common shape itself, parsed by httptools (llhttp, strict):
GET/POST/PUT/PATCH/DELETE over HTTP/1.1, an ASCII origin-form target without ``#`` and a path without ``%``, a Host,
no duplicate header, no Upgrade/Transfer-Encoding/Expect/Content-Encoding, a Content-Length body
(or none) within ``max_body_bytes``, a head within aiohttp's own limits with room to spare.  The
moment a request is anything else (a WebSocket upgrade, a chunked or over-limit body, HTTP/1.0,
HEAD, bytes that are not HTTP, a parse error, a WebSocket path) the connection becomes aiohttp's:
its per-connection handler is made from the runner's server, set as the transport's protocol and
fed every byte from that request's first one.  aiohttp therefore stays the one answer to every
edge case, including the contract's error bodies for what its parser refuses.

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
import inspect
import logging
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

import httptools
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_keepalive
from yarl import URL

from daemon.api.http_api import ApiRequest, ApiResponse, HttpApi, error_response
from daemon.core.envelope import new_trace_id
from daemon.core.errors import InternalError
from daemon.core.i18n import t

log = logging.getLogger("democratic_ai.http")

FAST_METHODS = frozenset({b"GET", b"POST", b"PUT", b"PATCH", b"DELETE"})
#: a request head that is not complete within this many bytes is aiohttp's to refuse or serve
MAX_HEAD_BYTES = 64 * 1024
#: aiohttp refuses a request line over 8190 bytes and more than 128 headers: well below both stays here
MAX_URL_BYTES = 8000
MAX_HEADERS = 100
#: headers that change how the body is read or what the connection becomes: aiohttp's business
HANDED_OFF_HEADERS = frozenset({"upgrade", "transfer-encoding", "expect", "content-encoding",
                                "sec-websocket-key1"})
#: pipelined bytes held while a request is served; reading pauses past it
PIPELINE_BYTES = 256 * 1024
#: aiohttp's own RequestHandler default (3630 s in 3.14): an idle keep-alive connection closes after it
KEEPALIVE_S: float = inspect.signature(web.RequestHandler).parameters["keepalive_timeout"].default
#: statuses whose answers carry no body and no Content-Length (aiohttp: EMPTY_BODY_STATUS_CODES)
EMPTY_BODY_STATUSES = frozenset({204, 304, *range(100, 200)})
REASONS = {status.value: status.phrase for status in HTTPStatus}


class Http1Server:
    """What the fast connections of one listening socket share: the API, the hand-off, limits, the date.

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
        self.alt_svc = alt_svc
        #: paths aiohttp routes itself (the WebSocket routes): always handed off, upgrade or not
        self.handed_off_paths = handed_off_paths
        self.keepalive_s = keepalive_s
        #: connections still served here (a handed-off one is aiohttp's server's)
        self.connections: set[FastConnection] = set()
        self.closing = False
        self._date_second = -1
        self._date = ""

    def connection(self) -> FastConnection:
        """A protocol for one accepted connection."""
        return FastConnection(self)

    def date(self) -> str:
        """The Date header's value, formatted once a second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True)
        return self._date

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
        self._parser: httptools.HttpRequestParser | None = None
        self._buffer = bytearray()
        #: where the search for the end of the current head resumes (bytes already searched)
        self._scanned = 0
        self._remote = ""
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._idle_deadline = 0.0
        self._gone = False
        # the request being read, filled by httptools' callbacks
        self._method = ""
        self._url = b""
        self._path = ""
        self._query = ""
        self._headers: dict[str, str] = {}
        self._refused = False
        self._keep_alive = True
        self._complete = False
        self._head_bytes = 0  # > 0 once the head is parsed and the body is awaited
        self._body_bytes = 0

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Note the peer, keep the socket alive as aiohttp does, start the idle clock."""
        self._transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._parser = httptools.HttpRequestParser(self)
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple | list) else str(peer or "")
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
        self._parser = None  # the parser holds this object: break the cycle
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

    # -- httptools callbacks ----------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        """httptools: the request target (possibly in pieces)."""
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header; a duplicate or an oversized one refuses the fast path."""
        headers = self._headers
        key = name.decode("latin-1").lower()
        if key in headers or len(name) + len(value) > self._server.max_field_bytes:
            self._refused = True
            return
        # as aiohttp: trailing whitespace dropped, UTF-8 with surrogates for what is not
        headers[key] = value.rstrip(b" \t").decode("utf-8", "surrogateescape")

    def on_headers_complete(self) -> None:
        """httptools: the head is read; keep-alive is known now."""
        assert self._parser is not None
        # asked here: after the message completes llhttp forgets what the Connection header said
        self._keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        """httptools: the whole request (head and body) is read."""
        self._complete = True

    # -- framing ------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Start the next request in the buffer once it is whole, or hand the connection off."""
        buffer = self._buffer
        if self._head_bytes == 0:
            end = buffer.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if end < 0:
                self._scanned = len(buffer)
                if self._scanned > MAX_HEAD_BYTES or (buffer and not _could_start_request(buffer)):
                    self._hand_off()
                return
            self._scanned = 0
            if not self._read_head(bytes(buffer[:end + 4])):
                self._hand_off()
                return
        total = self._head_bytes + self._body_bytes
        if len(buffer) < total:
            return
        body = bytes(buffer[self._head_bytes:total])
        if body and not self._feed(body):
            self._hand_off()
            return
        if not self._complete:
            self._hand_off()
            return
        request = self._request(body)
        del buffer[:total]
        self._head_bytes = self._body_bytes = 0
        self._task = self._loop.create_task(self._serve(request, self._keep_alive))

    def _feed(self, data: bytes) -> bool:
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return False
        return not self._refused

    def _read_head(self, head: bytes) -> bool:
        """Parse one head; False when aiohttp should have the request (and the connection)."""
        self._url = b""
        self._headers = {}
        self._refused = self._complete = False
        if not self._feed(head):
            return False
        assert self._parser is not None
        method = self._parser.get_method()
        headers = self._headers
        if (method not in FAST_METHODS or self._parser.get_http_version() != "1.1" or len(headers) > MAX_HEADERS
                or not HANDED_OFF_HEADERS.isdisjoint(headers)):
            return False
        self._method = method.decode("ascii")
        url = self._url
        if len(url) > MAX_URL_BYTES or not url.startswith(b"/") or b"#" in url or not url.isascii():
            return False
        path, _, query = url.decode("ascii").partition("?")
        # no "%" in the path, so decoding it cannot differ from yarl's (a query is yarl's to parse anyway)
        if "%" in path or path in self._server.handed_off_paths or "host" not in headers:
            return False
        length = headers.get("content-length")
        if length is None:
            self._body_bytes = 0
        elif length.isdigit() and int(length) <= self._server.max_body_bytes:
            self._body_bytes = int(length)
        else:
            return False
        self._path, self._query = path, query
        self._head_bytes = len(head)
        return True

    def _request(self, body: bytes) -> ApiRequest:
        """The ``ApiRequest`` the aiohttp door builds for the same bytes."""
        query = self._query
        return ApiRequest(
            method=self._method,
            path=self._path,
            headers=self._headers,
            body=body,
            # as dict(aiohttp's request.query): yarl's parsing, blank values kept, the first of a name wins
            query=dict(URL.build(query_string=query, encoded=True).query) if query else {},
            remote=self._remote,
            door="http",
            secure=self._server.secure,
        )

    def _hand_off(self) -> None:
        """aiohttp's connection from here: its handler, fed every byte from the current request's first."""
        transport = self._transport
        assert transport is not None and self._task is None
        self._server.connections.discard(self)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self._parser = None
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
        try:
            keep_alive = await self._answer(request, keep_alive)
        except asyncio.CancelledError:
            # the peer hung up, the door is shutting down, or the request's own task was cancelled (MCP's
            # notifications/cancelled): as aiohttp, no answer follows and the connection ends
            if not self._gone and self._transport is not None:
                self._transport.close()
            raise
        self._task = None
        self._finished(keep_alive)

    async def _answer(self, request: ApiRequest, keep_alive: bool) -> bool:
        """Answer ``request``; whether the connection may serve another."""
        try:
            response = await self._server.api.handle(request)
        except Exception:  # HttpApi.handle maps every error itself; this is a bug, and must not end the door
            log.exception("unhandled error", extra={"path": request.path})
            response = error_response(InternalError(t("errors.http_api.hub_failed_handle_request")),
                                      request.trace_id)
        keep_alive = keep_alive and not self._server.closing
        try:
            if response.stream is None:
                self._write_plain(response, keep_alive)
            else:
                await self._write_stream(response, keep_alive)
            if self._writing_paused:
                await self._drain()
        except ConnectionError:
            return False
        except Exception:  # a stream that broke after its head went out: the connection is unusable, as aiohttp
            log.exception("error while answering", extra={"path": request.path})
            return False
        return keep_alive

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
        head = self._head(response, None if empty else len(body), chunked=False, keep_alive=keep_alive)
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
            head = self._head(response, None, chunked=not empty, keep_alive=keep_alive)
            if head is None:
                self._write_refusal()
                raise ConnectionError("a header of the answer cannot be written")
            transport.write(head)
            if empty:
                return
            async for chunk in stream:
                if transport.is_closing():
                    raise ConnectionResetError("the peer is gone")
                if chunk:  # an empty chunk would end the body
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if self._writing_paused:
                    await self._drain()
            transport.write(b"0\r\n\r\n")
        finally:
            await stream.aclose()

    def _head(self, response: ApiResponse, length: int | None, *, chunked: bool, keep_alive: bool) -> bytes | None:
        """The status line and headers, in aiohttp's order; None when a header would break the framing."""
        status = response.status
        headers = response.headers
        alt_svc = self._server.alt_svc()
        if alt_svc:
            headers = {**headers, "alt-svc": alt_svc}
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if lines.count("\r") != len(headers) or lines.count("\n") != len(headers):
            return None  # aiohttp refuses a CR or LF inside a header: the handler's error, a 500
        if chunked:
            lines += "Transfer-Encoding: chunked\r\n"
        elif length is not None:
            lines += f"Content-Length: {length}\r\n"
        if "content-type" not in headers and (chunked or length):
            lines += "Content-Type: application/octet-stream\r\n"
        lines += f"Date: {self._server.date()}\r\nServer: {SERVER_SOFTWARE}\r\n"
        if not keep_alive:
            lines += "Connection: close\r\n"
        return f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n{lines}\r\n".encode()

    def _write_refusal(self) -> None:
        """What aiohttp answers when writing the head fails: the contract's INTERNAL body, then close."""
        log.error("an answer carries a header with CR or LF: answered INTERNAL instead")
        response = error_response(InternalError(t("errors.http_api.hub_failed_handle_request")), new_trace_id())
        head = self._head(response, len(response.body), chunked=False, keep_alive=False)
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


def _could_start_request(buffer: bytearray) -> bool:
    """Whether the bytes so far can begin a request this door serves (a method's capitals, then a space).

    Anything else (a stray CRLF, TLS on the plain port, garbage) goes to aiohttp at once, so its
    parser answers now rather than when a head that never comes passes ``MAX_HEAD_BYTES``.
    """
    for index, byte in enumerate(buffer[:8]):
        if byte == 0x20:
            return index > 0
        if not 0x41 <= byte <= 0x5A:
            return False
    return len(buffer) < 8

