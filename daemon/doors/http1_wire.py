"""The HTTP/1.1 fast path's wire rules: which requests it serves, and the bytes of its answers' heads.

The fast path serves GET/POST/PUT/PATCH/DELETE over HTTP/1.1, an ASCII origin-form target without
``#`` and a path without ``%``, a Host, no duplicate header, no Upgrade/Transfer-Encoding/Expect/
Content-Encoding, a Content-Length body (or none) within ``max_body_bytes``, a head within
aiohttp's own limits with room to spare.  Anything else (a WebSocket upgrade, a chunked or
over-limit body, HTTP/1.0, HEAD, bytes that are not HTTP, a parse error, a WebSocket path) is
aiohttp's.

Sans-IO: no sockets, no loop.  ``http1.py``'s connection protocol asks ``RequestReader`` for the
next whole request in its buffer (or to hand the connection to aiohttp, the one answer to every
edge case), and ``HeadEncoder`` for the status line and headers aiohttp would write for the same
``ApiResponse``.  The constant parts of a head (status lines, ``Server``, the ``Date`` of the
current second) are encoded once, not per answer: the encoder runs for every call.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus

import httptools
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from yarl import URL

from daemon.api.http_api import ApiRequest

FAST_METHODS = frozenset({b"GET", b"POST", b"PUT", b"PATCH", b"DELETE"})
#: a request head that is not complete within this many bytes is aiohttp's to refuse or serve
MAX_HEAD_BYTES = 64 * 1024
#: aiohttp refuses a request line over 8190 bytes and more than 128 headers: well below both stays here
MAX_URL_BYTES = 8000
MAX_HEADERS = 100
#: headers that change how the body is read or what the connection becomes: aiohttp's business
HANDED_OFF_HEADERS = frozenset({"upgrade", "transfer-encoding", "expect", "content-encoding",
                                "sec-websocket-key1"})
#: aiohttp's own RequestHandler default (3630 s in 3.14): an idle keep-alive connection closes after it
KEEPALIVE_S: float = inspect.signature(web.RequestHandler).parameters["keepalive_timeout"].default
#: statuses whose answers carry no body and no Content-Length (aiohttp: EMPTY_BODY_STATUS_CODES)
EMPTY_BODY_STATUSES = frozenset({204, 304, *range(100, 200)})
REASONS = {status.value: status.phrase for status in HTTPStatus}
#: "HTTP/1.1 200 OK\r\n" and the others, encoded once (a status outside HTTPStatus is built when met)
_STATUS_LINES = {status: f"HTTP/1.1 {status} {reason}\r\n".encode() for status, reason in REASONS.items()}
_SERVER = f"Server: {SERVER_SOFTWARE}\r\n".encode()
_CLOSE = b"Connection: close\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_OCTET_STREAM = b"Content-Type: application/octet-stream\r\n"
#: the chunk that ends a chunked body
LAST_CHUNK = b"0\r\n\r\n"


def fast_head(method: bytes, version: str | None, headers: Mapping[str, str]) -> bool:
    """Whether a parsed head's method, version and header names stay on the fast path."""
    return (method in FAST_METHODS and version == "1.1" and len(headers) <= MAX_HEADERS
            and HANDED_OFF_HEADERS.isdisjoint(headers) and "host" in headers)


def split_target(url: bytes, handed_off_paths: frozenset[str]) -> tuple[str, str] | None:
    """The request target as ``(path, query)``, or None when aiohttp should parse it.

    Only an ASCII origin-form target without ``#`` and a path without ``%``: decoding such a path
    cannot differ from yarl's (a query is yarl's to parse anyway, see ``http1.py``).
    """
    if len(url) > MAX_URL_BYTES or not url.startswith(b"/") or b"#" in url or not url.isascii():
        return None
    path, _, query = url.decode("ascii").partition("?")
    if "%" in path or path in handed_off_paths:
        return None
    return path, query


def body_length(length: str | None, max_body_bytes: int) -> int | None:
    """The Content-Length header as a body size (0 without one); None when it is not one this path reads."""
    if length is None:
        return 0
    if length.isdigit() and (size := int(length)) <= max_body_bytes:
        return size
    return None


def could_start_request(buffer: bytearray) -> bool:
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


class RequestReader:
    """One connection's requests, read from its buffer; also the httptools callback target.

    ``read`` returns the next whole request, or None: then ``handed_off`` says whether the
    request is aiohttp's (the connection with it) or not whole yet.  ``close`` breaks the cycle
    between the parser and this object.
    """

    def __init__(self, *, remote: str, secure: bool, max_body_bytes: int, max_field_bytes: int,
                 handed_off_paths: frozenset[str]) -> None:
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._remote = remote
        self._secure = secure
        self._max_body_bytes = max_body_bytes
        #: aiohttp's max_field_size: a header's name and value together may not pass it
        self._max_field_bytes = max_field_bytes
        #: paths aiohttp routes itself (the WebSocket routes): always handed off, upgrade or not
        self._handed_off_paths = handed_off_paths
        self.handed_off = False
        #: whether the connection may serve another request after the one ``read`` returned
        self.keep_alive = True
        #: where the search for the end of the current head resumes (bytes already searched)
        self._scanned = 0
        self._head_bytes = 0  # > 0 once the head is parsed and the body is awaited
        self._body_bytes = 0
        # the request being read, filled by httptools' callbacks
        self._method = ""
        self._url = b""
        self._path = ""
        self._query = ""
        self._headers: dict[str, str] = {}
        self._refused = False
        self._complete = False

    def close(self) -> None:
        """Drop the parser (it holds this object)."""
        self._parser = None

    def read(self, buffer: bytearray) -> ApiRequest | None:
        """The next whole request, its bytes removed from ``buffer``; None: see ``handed_off``."""
        if self._head_bytes == 0:
            end = buffer.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if end < 0:
                self._scanned = len(buffer)
                if self._scanned > MAX_HEAD_BYTES or (buffer and not could_start_request(buffer)):
                    self.handed_off = True
                return None
            self._scanned = 0
            if not self._read_head(bytes(buffer[:end + 4])):
                self.handed_off = True
                return None
        total = self._head_bytes + self._body_bytes
        if len(buffer) < total:
            return None
        body = bytes(buffer[self._head_bytes:total])
        if (body and not self._feed(body)) or not self._complete:
            self.handed_off = True
            return None
        del buffer[:total]
        self._head_bytes = self._body_bytes = 0
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
            secure=self._secure,
        )

    def _read_head(self, head: bytes) -> bool:
        """Parse one head; False when aiohttp should have the request (and the connection)."""
        self._url = b""
        headers: dict[str, str] = {}
        self._headers = headers
        self._refused = self._complete = False
        if not self._feed(head):
            return False
        parser = self._parser
        assert parser is not None
        method = parser.get_method()
        if not fast_head(method, parser.get_http_version(), headers):
            return False
        target = split_target(self._url, self._handed_off_paths)
        length = body_length(headers.get("content-length"), self._max_body_bytes)
        if target is None or length is None:
            return False
        self._method = method.decode("ascii")
        self._path, self._query = target
        self._body_bytes = length
        self._head_bytes = len(head)
        return True

    def _feed(self, data: bytes) -> bool:
        if self._parser is None:
            return False
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return False
        return not self._refused

    # -- httptools callbacks ----------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        """httptools: the request target (possibly in pieces)."""
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header; a duplicate or an oversized one refuses the fast path."""
        headers = self._headers
        key = name.decode("latin-1").lower()
        if key in headers or len(name) + len(value) > self._max_field_bytes:
            self._refused = True
            return
        # as aiohttp: trailing whitespace dropped, UTF-8 with surrogates for what is not
        headers[key] = value.rstrip(b" \t").decode("utf-8", "surrogateescape")

    def on_headers_complete(self) -> None:
        """httptools: the head is read; keep-alive is known now."""
        assert self._parser is not None
        # asked here: after the message completes llhttp forgets what the Connection header said
        self.keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        """httptools: the whole request (head and body) is read."""
        self._complete = True


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (``data`` not empty: an empty chunk would end the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class HeadEncoder:
    """Status lines and headers in aiohttp's order, as bytes; one per listening socket.

    ``alt_svc`` is asked per answer (the HTTP/3 door may come and go); ``clock`` gives wall-clock
    seconds for the ``Date`` header, which is formatted once a second together with ``Server``.
    """

    def __init__(self, alt_svc: Callable[[], str], clock: Callable[[], float] = time.time) -> None:
        self._alt_svc = alt_svc
        self._clock = clock
        self._second = -1
        self._date_server = b""

    def _date_server_line(self) -> bytes:
        now = int(self._clock())
        if now != self._second:
            self._second = now
            self._date_server = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n" + _SERVER
        return self._date_server

    def head(self, status: int, headers: Mapping[str, str], length: int | None, *, chunked: bool,
             keep_alive: bool) -> bytes | None:
        """The head of an answer; None when a header would break the framing (a CR or LF in it).

        ``length``: the Content-Length to state (None: none, as for an empty-body status).
        """
        alt_svc = self._alt_svc()
        if alt_svc:
            headers = {**headers, "alt-svc": alt_svc}
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if lines.count("\r") != len(headers) or lines.count("\n") != len(headers):
            return None  # aiohttp refuses a CR or LF inside a header: the handler's error, a 500
        status_line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n".encode()
        parts = [status_line, lines.encode()]
        if chunked:
            parts.append(_CHUNKED)
        elif length is not None:
            parts.append(b"Content-Length: %d\r\n" % length)
        if "content-type" not in headers and (chunked or length):
            parts.append(_OCTET_STREAM)
        parts.append(self._date_server_line())
        if not keep_alive:
            parts.append(_CLOSE)
        parts.append(b"\r\n")
        return b"".join(parts)
