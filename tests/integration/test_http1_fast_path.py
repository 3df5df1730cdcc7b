"""The HTTP/1.1 door's httptools fast path against a real hub, with raw sockets where a client cannot send the bytes.

Two hubs run side by side: one with ``[http] fast_path`` on (the default), one with aiohttp
serving every request.  The same requests must get the same status lines, the same headers in
the same order and the same bodies from both (only dates, ports and ids differ); pipelined
requests that move a connection from the fast path to aiohttp mid-stream are answered in order;
what aiohttp refuses (bad bytes, an oversized header or body) gets the contract's error body.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator

import aiohttp
import pytest

from tests.support.hubproc import HubProcess, write_config

pytestmark = pytest.mark.timeout(120)

MAX_BODY = 65536
TRACE = b"X-Trace-Id: t-fast-1\r\n"
#: the Date format aiohttp writes (``Tue, 01 Dec 2026 03:21:45 GMT``)
RFC_822 = r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT"
#: headers whose values differ between two hubs or two moments
VARYING = {"date", "alt-svc", "ratelimit-reset", "ratelimit", "ratelimit-remaining", "etag"}


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, extra: str) -> HubProcess:
    state = tmp_path_factory.mktemp(name)
    config = write_config(state / "hub.toml")
    config.write_text(config.read_text().replace(
        "[http]\n", f"[http]\nmax_body_bytes = {MAX_BODY}\n{extra}", 1))
    return HubProcess(state, config).start()


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = _start(tmp_path_factory, "fast", "")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = _start(tmp_path_factory, "plain", "fast_path = false\n")
    yield process
    process.stop()


def port(hub: HubProcess) -> int:
    return int(hub.url.rsplit(":", 1)[1])


class Answer:
    """One parsed HTTP/1.1 response: status line, headers in order, body (de-chunked)."""

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes, chunked_raw: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.chunked_raw = chunked_raw

    @property
    def code(self) -> int:
        return int(self.status.split(" ")[1])

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> dict:
        return json.loads(self.body)


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status, *lines = head[:-4].split("\r\n")
    headers = [(name, value) for name, _, value in (line.partition(": ") for line in lines)]
    answer = Answer(status, headers, b"")
    if answer.code in (101, 204, 304):
        return answer
    if (length := answer.header("content-length")) is not None:
        answer.body = await reader.readexactly(int(length))
    elif answer.header("transfer-encoding") == "chunked":
        raw = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            chunk = await reader.readexactly(int(size_line, 16) + 2)
            raw += size_line + chunk
            answer.body += chunk[:-2]
            if size_line == b"0\r\n":
                break
        answer.chunked_raw = bytes(raw)
    else:
        answer.body = await reader.read()
    return answer


async def exchange(hub: HubProcess, data: bytes, answers: int = 1) -> tuple[list[Answer], bool]:
    """Send ``data`` on a new connection; read ``answers`` answers; then whether the hub closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port(hub))
    try:
        writer.write(data)
        await writer.drain()
        got = [await asyncio.wait_for(read_answer(reader), 20) for _ in range(answers)]
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
        except TimeoutError:
            closed = False
        return got, closed
    finally:
        writer.close()


def call(hub: HubProcess, body: bytes, extra: bytes = b"", path: bytes = b"/v1/call") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"X-API-Key: " + hub.admin_key.encode() + b"\r\n" + TRACE + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def get(path: bytes, extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + TRACE + extra + b"\r\n"


ECHO = b'{"action": "echo", "payload": {"hello": "edge"}}'


def _requests(hub: HubProcess) -> dict[str, bytes]:
    return {
        "health": get(b"/health"),
        "echo": call(hub, ECHO),
        "echo, keep-alive off": call(hub, ECHO, b"Connection: close\r\n"),
        "streamed echo": call(hub, b'{"action": "echo.stream", "payload": {"steps": 2}}',
                              b"Accept: application/x-ndjson\r\n"),
        "bad json": call(hub, b'{"action": '),
        "empty body": call(hub, b""),
        "no key": get(b"/v1/capabilities"),
        "wrong method": get(b"/v1/call"),
        "wrong method on health": get(b"/health", method=b"PUT"),
        "no route, with a query": get(b"/nope?a=1&a=2&b=&c+d=e"),
        "capabilities": get(b"/v1/capabilities", b"X-API-Key: " + hub.admin_key.encode() + b"\r\n"),
        "console page": get(b"/console"),
        "Japanese errors": get(b"/nope", b"Accept-Language: ja\r\n"),
        "dot segments": get(b"/v1/../health"),
        "a double slash": get(b"//health"),
        "a percent-encoded path (aiohttp's)": get(b"/he%61lth"),
        "a percent-encoded query": get(b"/nope?x=%41%20b&y"),
        "a header value with trailing spaces and UTF-8": get(b"/nope", b"X-Note: caf\xc3\xa9  \r\n"),
        "a body on a GET": get(b"/health", b"Content-Length: 3\r\n") + b"abc",
    }


def _comparable(answer: Answer) -> tuple[str, list[tuple[str, str]], object]:
    headers = [(k.lower(), "" if k.lower() in VARYING else v) for k, v in answer.headers]
    body: object = answer.body
    if answer.header("content-type") == "application/json" and answer.body:
        body = answer.json()
        if isinstance(body, dict):  # ids and receipts differ between two hubs
            body = {k: v for k, v in body.items() if k not in ("id", "correlation_id", "receipt")}
    elif answer.header("content-type") == "application/x-ndjson":
        body = [line.get("type") for line in map(json.loads, answer.body.splitlines())]
    return answer.status, headers, body


async def test_the_fast_path_answers_as_aiohttp_does(fast: HubProcess, plain: HubProcess) -> None:
    for story, data in _requests(fast).items():
        (mine,), mine_closed = await exchange(fast, data)
        same = data.replace(fast.admin_key.encode(), plain.admin_key.encode())
        (theirs,), theirs_closed = await exchange(plain, same)
        assert _comparable(mine) == _comparable(theirs), story
        assert mine_closed == theirs_closed, story
        assert re.fullmatch(RFC_822, mine.header("date") or ""), story
        if mine.chunked_raw:
            assert len(mine.chunked_raw.split(b"\r\n")) == len(theirs.chunked_raw.split(b"\r\n")), story


async def test_a_304_and_a_204_carry_no_body_and_no_length(fast: HubProcess, plain: HubProcess) -> None:
    (page,), _ = await exchange(fast, get(b"/console"))
    etag = page.header("etag")
    assert etag
    for hub in (fast, plain):
        (cached,), _ = await exchange(hub, get(b"/console", b"If-None-Match: " + etag.encode() + b"\r\n"))
        assert cached.code == 304 and cached.header("content-length") is None
    (mine,), _ = await exchange(fast, get(b"/console", b"If-None-Match: " + etag.encode() + b"\r\n"))
    (theirs,), _ = await exchange(plain, get(b"/console", b"If-None-Match: " + etag.encode() + b"\r\n"))
    assert _comparable(mine) == _comparable(theirs)


async def test_pipelined_requests_are_answered_in_order_across_the_hand_off(fast: HubProcess) -> None:
    chunked = (b"POST /v1/call HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"X-API-Key: " + fast.admin_key.encode() + b"\r\nX-Trace-Id: t-chunked\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n%b\r\n0\r\n\r\n" % (len(ECHO), ECHO))
    data = (call(fast, ECHO).replace(TRACE, b"X-Trace-Id: t-1\r\n")
            + get(b"/health").replace(TRACE, b"X-Trace-Id: t-2\r\n")
            + chunked  # aiohttp's from here on
            + call(fast, ECHO).replace(TRACE, b"X-Trace-Id: t-3\r\n")
            + get(b"/health", b"Connection: close\r\n").replace(TRACE, b"X-Trace-Id: t-4\r\n"))
    answers, closed = await exchange(fast, data, answers=5)
    assert [a.header("x-trace-id") for a in answers] == ["t-1", "t-2", "t-chunked", "t-3", "t-4"]
    assert [a.code for a in answers] == [200] * 5
    assert answers[2].json()["result"] == {"hello": "edge"}
    assert closed


async def test_pipelined_calls_then_a_websocket_upgrade(fast: HubProcess) -> None:
    upgrade = (b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               b"X-API-Key: " + fast.admin_key.encode() + b"\r\n\r\n")
    answers, _ = await exchange(fast, call(fast, ECHO) + call(fast, ECHO) + upgrade, answers=3)
    assert [a.code for a in answers] == [200, 200, 101]
    assert answers[2].header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


async def test_a_request_split_byte_by_byte(fast: HubProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port(fast))
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for request in (call(fast, ECHO), get(b"/health")):  # twice on one connection
            for index in range(len(request)):
                writer.write(request[index:index + 1])
                await writer.drain()
                if index % 16 == 0:
                    await asyncio.sleep(0.001)
            answer = await asyncio.wait_for(read_answer(reader), 20)
            assert answer.code == 200 and answer.header("x-trace-id") == "t-fast-1"
    finally:
        writer.close()


async def test_connection_close_and_http_1_0(fast: HubProcess) -> None:
    (answer,), closed = await exchange(fast, get(b"/health", b"Connection: close\r\n"))
    assert answer.code == 200 and answer.header("connection") == "close" and closed
    (answer,), closed = await exchange(fast, b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.status.startswith("HTTP/1.0 200") and answer.json() == {"status": "ok"} and closed
    reader, writer = await asyncio.open_connection("127.0.0.1", port(fast))
    writer.write(b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 20)  # aiohttp's answer: the head alone, then close
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\n")


async def test_a_body_over_the_limit_is_payload_too_large(fast: HubProcess) -> None:
    body = b'{"action": "echo", "payload": {"x": "' + b"x" * MAX_BODY + b'"}}'
    (answer,), _ = await exchange(fast, call(fast, body))
    assert answer.code == 413 and answer.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # just within the limit: served
    fits = b'{"action": "echo", "payload": {"x": "' + b"x" * (MAX_BODY - 64) + b'"}}'
    (answer,), _ = await exchange(fast, call(fast, fits))
    assert answer.code == 200 and len(answer.json()["result"]["x"]) == MAX_BODY - 64


async def test_refused_bytes_get_the_contract_body(fast: HubProcess) -> None:
    long_key = b"X-API-Key: " + b"k" * 17000 + b"\r\n"
    for story, data in {
        "a header over MAX_HEADER_BYTES": get(b"/health", long_key),
        "garbage": b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
        "lower-case method": b"get /health HTTP/1.1\r\nHost: x\r\n\r\n",
        "no Host": b"GET /health HTTP/1.1\r\n\r\n",
        "two Content-Lengths": get(b"/health", b"Content-Length: 0\r\nContent-Length: 0\r\n"),
    }.items():
        (answer,), closed = await exchange(fast, data)
        assert answer.code == 400, story
        assert answer.json()["error"]["code"] == "VALIDATION_ERROR", story
        assert closed, story


async def test_a_fast_connection_serves_keep_alive_requests_and_a_websocket_call(fast: HubProcess) -> None:
    headers = {"X-API-Key": fast.admin_key}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=1)) as session:
        for n in range(20):
            async with session.post(f"{fast.url}/v1/call", json={"action": "echo", "payload": {"n": n}}) as resp:
                assert resp.status == 200 and (await resp.json())["result"] == {"n": n}
        async with session.ws_connect(f"{fast.url}/v1/ws") as ws:
            await ws.send_json({"id": "c1", "action": "echo", "payload": {"over": "ws"}})
            frame = await ws.receive_json(timeout=10)
            assert frame["type"] == "result" and frame["result"] == {"over": "ws"}
