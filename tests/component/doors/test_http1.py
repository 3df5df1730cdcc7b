"""``doors/http1.py`` on real loopback sockets, with a stand-in API and a recording hand-off.

What it must keep: plain requests served in order without aiohttp; the first unusual request and
every byte after it handed off untouched; a caller that hangs up cancels its request; streams
chunked and always closed; the idle clock and the shutdown grace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from daemon.api.http_api import ApiRequest, ApiResponse
from daemon.doors.http1 import Http1Server

pytestmark = pytest.mark.timeout(30)


class Lines:
    """A streamed body of three lines that records that it was closed."""

    def __init__(self) -> None:
        self.closed = False
        self._left = [b'{"n":1}\n', b"", b'{"n":2}\n']

    def __aiter__(self) -> Lines:
        return self

    async def __anext__(self) -> bytes:
        if not self._left:
            raise StopAsyncIteration
        return self._left.pop(0)

    async def aclose(self) -> None:
        self.closed = True


class StandInApi:
    """Answers by path: ``/slow`` waits until cancelled, ``/stream`` streams, ``/boom`` raises."""

    def __init__(self) -> None:
        self.requests: list[ApiRequest] = []
        self.slow_started = asyncio.Event()
        self.slow_cancelled = asyncio.Event()
        self.streams: list[Lines] = []

    async def handle(self, request: ApiRequest) -> ApiResponse:
        self.requests.append(request)
        if request.path == "/slow":
            self.slow_started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.slow_cancelled.set()
                raise
        if request.path == "/stream":
            self.streams.append(Lines())
            return ApiResponse(200, {"content-type": "application/x-ndjson"}, stream=self.streams[-1])
        if request.path == "/boom":
            raise RuntimeError("a bug")
        if request.path == "/cancel-me":  # as MCP's notifications/cancelled cancels a tools/call's task
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(1)
        return ApiResponse(200, {"content-type": "application/json", "x-trace-id": request.header("x-trace-id")},
                           b'{"path":"%s"}' % request.path.encode())


class Taken(asyncio.Protocol):
    """What the hand-off makes: records every byte it is given."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data


@contextlib.asynccontextmanager
async def serving(**kwargs: float) -> AsyncIterator[tuple[Http1Server, StandInApi, list[Taken], int]]:
    api = StandInApi()
    taken: list[Taken] = []

    def handoff() -> Taken:
        taken.append(Taken())
        return taken[-1]

    server = Http1Server(api, handoff, max_body_bytes=1024, max_field_bytes=16384,  # type: ignore[arg-type]
                         secure=False, alt_svc=lambda: 'h3=":1"; ma=60', handed_off_paths=frozenset({"/v1/ws"}),
                         **kwargs)
    listener = await asyncio.get_running_loop().create_server(server.connection, "127.0.0.1", 0)
    try:
        yield server, api, taken, listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await server.shutdown(0.1)


def get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: h\r\nX-Trace-Id: " + path + b"\r\n" + extra + b"\r\n"


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(int(line.split(b": ")[1]) for line in head.split(b"\r\n") if line.startswith(b"Content-Length"))
    return head, await reader.readexactly(length)


async def test_plain_requests_are_served_in_order_with_aiohttps_headers() -> None:
    async with serving() as (_, api, taken, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get(b"/a?x=1&x=2&y=&s+t=u%20v", b"Accept-Language: ja\r\nX-Dup-Free: v  \r\n") + get(b"/b"))
        first, body = await read_answer(reader)
        second, _ = await read_answer(reader)
        writer.close()
    assert not taken
    assert first.startswith(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-trace-id: /a?x=1")
    assert b'\r\nalt-svc: h3=":1"; ma=60\r\nContent-Length: 13\r\nDate: ' in first
    assert b"\r\nServer: Python/" in first and b"Connection" not in first
    assert body == b'{"path":"/a"}'
    assert b"x-trace-id: /b" in second
    request = api.requests[0]
    assert (request.method, request.path, request.door, request.secure) == ("GET", "/a", "http", False)
    assert request.query == {"x": "1", "y": "", "s t": "u v"}  # as dict(aiohttp's request.query)
    assert request.headers["accept-language"] == "ja" and request.headers["x-dup-free"] == "v"
    assert request.remote == "127.0.0.1"


async def test_the_first_unusual_request_and_every_byte_after_it_are_handed_off() -> None:
    chunked = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
    rest = chunked + get(b"/after")
    async with serving() as (server, api, taken, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get(b"/first") + rest)
        await read_answer(reader)
        for _ in range(100):
            if taken and len(taken[0].data) >= len(rest):
                break
            await asyncio.sleep(0.01)
        assert [r.path for r in api.requests] == ["/first"]
        assert bytes(taken[0].data) == rest
        assert not server.connections  # aiohttp's now
        writer.close()


@pytest.mark.parametrize("data", [
    b"GET /v1/ws HTTP/1.1\r\nHost: h\r\n\r\n",  # a path aiohttp routes itself, upgrade or not
    b"GET /x HTTP/1.0\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /x HTTP/1.1\r\n\r\n",  # no Host
    b"GET /a%20b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1025\r\n\r\n",  # over max_body_bytes
    b"POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
    b"\x16\x03\x01\x00",  # TLS on the plain port: handed off before a head could end
])
async def test_requests_aiohttp_answers_are_handed_off_whole(data: bytes) -> None:
    async with serving() as (_, api, taken, port):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        for _ in range(100):
            if taken and bytes(taken[0].data) == data:
                break
            await asyncio.sleep(0.01)
        writer.close()
        assert not api.requests
        assert bytes(taken[0].data) == data


async def test_a_request_split_across_writes_is_served() -> None:
    request = b"POST /split HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    async with serving() as (_, api, taken, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for index in range(len(request)):
            writer.write(request[index:index + 1])
            await writer.drain()
            await asyncio.sleep(0)
        await read_answer(reader)
        writer.close()
    assert not taken and api.requests[0].body == b"hello"


async def test_a_caller_that_hangs_up_cancels_its_request() -> None:
    async with serving() as (server, api, _, port):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get(b"/slow"))
        await asyncio.wait_for(api.slow_started.wait(), 5)
        writer.close()
        await asyncio.wait_for(api.slow_cancelled.wait(), 5)
        for _ in range(100):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.connections


async def test_a_stream_is_chunked_and_closed() -> None:
    async with serving() as (_, api, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get(b"/stream") + get(b"/next"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"\r\nTransfer-Encoding: chunked\r\n" in head and b"Content-Length" not in head
        # the empty part is not written: it would end the body
        chunks = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        assert chunks == b'8\r\n{"n":1}\n\r\n8\r\n{"n":2}\n\r\n0\r\n\r\n'
        _, body = await read_answer(reader)  # the connection goes on
        assert body == b'{"path":"/next"}'
        writer.close()
    assert api.streams[0].closed


async def test_a_failing_handler_answers_internal_and_the_connection_goes_on() -> None:
    async with serving() as (_, _api, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get(b"/boom") + get(b"/fine"))
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 500 Internal Server Error") and b'"code":"INTERNAL"' in body
        _, body = await read_answer(reader)
        assert body == b'{"path":"/fine"}'
        writer.close()


async def test_a_request_whose_task_is_cancelled_gets_no_answer_and_the_connection_ends() -> None:
    async with serving() as (server, _api, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get(b"/cancel-me"))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        for _ in range(100):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.connections


async def test_an_idle_connection_closes_after_the_keep_alive_time() -> None:
    async with serving(keepalive_s=0.2) as (_, _api, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get(b"/a"))
        await read_answer(reader)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the hub, not by the test's timeout
        writer.close()


async def test_shutdown_closes_idle_connections_and_aborts_late_ones_after_the_grace() -> None:
    async with serving() as (server, api, _, port):
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(get(b"/a"))
        await read_answer(idle_reader)
        _, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_writer.write(get(b"/slow"))
        await asyncio.wait_for(api.slow_started.wait(), 5)
        await asyncio.wait_for(server.shutdown(0.2), 5)
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""
        await asyncio.wait_for(api.slow_cancelled.wait(), 5)
        idle_writer.close()
        busy_writer.close()
