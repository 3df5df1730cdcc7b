"""``democratic-ai call --via h3``: a small HTTP/3 client of a running hub, over aioquic.

:class:`H3ClientProtocol` only maps the events of aioquic's own QUIC connection and H3 layer
to one future per request (the response head) and a queue of body chunks; the benchmarks
and the conformance tests use it as their HTTP/3 client too.  It trusts the hub's
self-signed certificate from the state dir when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset

from daemon.cli.output import print_json
from daemon.core.i18n import language_from_env


@dataclass(slots=True)
class H3Response:
    """A response whose head is in; the body arrives in ``chunks``, None marking its end."""

    status: int
    headers: dict[str, str]
    chunks: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    body: bytes = b""

    def json(self) -> Any:
        """``body`` decoded; only once the caller has filled it (``request()`` does)."""
        return json.loads(self.body)


class H3ClientProtocol(QuicConnectionProtocol):
    """One QUIC connection's HTTP/3 requests; a reset stream or closed connection fails what waits on it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._heads: dict[int, asyncio.Future[H3Response]] = {}
        self._responses: dict[int, H3Response] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        """aioquic's hook: feed QUIC events to the H3 layer, fail the requests a reset or close ends."""
        if isinstance(event, ConnectionTerminated | StreamReset):
            ids = list(self._heads) if isinstance(event, ConnectionTerminated) else [event.stream_id]
            for stream_id in ids:
                self._fail(stream_id, ConnectionError(f"HTTP/3 stream ended: {event}"))
            return
        for h3_event in self._http.handle_event(event):
            self._h3_event(h3_event)

    def _fail(self, stream_id: int, exc: Exception) -> None:
        head = self._heads.pop(stream_id, None)
        if head is not None and not head.done():
            head.set_exception(exc)
        response = self._responses.pop(stream_id, None)
        if response is not None:
            response.chunks.put_nowait(None)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            head = self._heads.pop(event.stream_id, None)
            if head is None:
                return  # trailers, or a request given up on
            headers = {k.decode(): v.decode() for k, v in event.headers if not k.startswith(b":")}
            status = int(dict(event.headers).get(b":status", b"0"))
            response = H3Response(status, headers)
            self._responses[event.stream_id] = response
            if event.stream_ended:
                response.chunks.put_nowait(None)
                self._responses.pop(event.stream_id, None)
            if not head.done():
                head.set_result(response)
        elif isinstance(event, DataReceived):
            found = self._responses.get(event.stream_id)
            if found is None:
                return
            if event.data:
                found.chunks.put_nowait(event.data)
            if event.stream_ended:
                found.chunks.put_nowait(None)
                self._responses.pop(event.stream_id, None)

    def begin(self, method: str, authority: str, path: str, headers: dict[str, str] | None = None,
              body: bytes = b"", *, end_stream: bool = True) -> tuple[int, asyncio.Future[H3Response]]:
        """Send a request's head and ``body``; without ``end_stream`` more body follows by ``send_body``.

        Returns the stream id and a future of the response head.
        """
        stream_id = self._quic.get_next_available_stream_id()
        head = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
                (b":path", path.encode())]
        head.extend((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
        future: asyncio.Future[H3Response] = asyncio.get_running_loop().create_future()
        self._heads[stream_id] = future
        self._http.send_headers(stream_id, head, end_stream=end_stream and not body)
        if body:
            self._http.send_data(stream_id, body, end_stream=end_stream)
        self.transmit()
        return stream_id, future

    def send_body(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        """More of a request body ``begin`` left open; ``end_stream`` closes it."""
        self._http.send_data(stream_id, data, end_stream=end_stream)
        self.transmit()

    async def open(self, method: str, authority: str, path: str, headers: dict[str, str] | None = None,
                   body: bytes = b"") -> tuple[int, H3Response]:
        """Send a request; the response once its headers are in (the body follows in ``chunks``)."""
        stream_id, future = self.begin(method, authority, path, headers, body)
        return stream_id, await future

    def cancel(self, stream_id: int) -> None:
        """Give up on a request: reset our side and ask the hub to stop sending."""
        self._quic.reset_stream(stream_id, 0x10C)  # H3_REQUEST_CANCELLED
        self._quic.stop_stream(stream_id, 0x10C)
        self.transmit()

    async def request(self, method: str, authority: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> H3Response:
        """Send a request and read its whole body into ``body``."""
        _, response = await self.open(method, authority, path, headers, body)
        response.body = b"".join([chunk async for chunk in iter_chunks(response)])
        return response


async def iter_chunks(response: H3Response) -> AsyncIterator[bytes]:
    """A response's body chunks as they arrive, until its stream ends."""
    while (chunk := await response.chunks.get()) is not None:
        yield chunk


def h3_configuration(cafile: Path | None = None, *, verify: bool = True) -> QuicConfiguration:
    """A client config for the hub (SNI ``localhost``), trusting ``cafile`` when it exists."""
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    if not verify:
        configuration.verify_mode = ssl.CERT_NONE
    elif cafile is not None and cafile.is_file():
        configuration.load_verify_locations(str(cafile))
    return configuration


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 443


async def call_h3(url: str, body: dict[str, Any], api_key: str, cafile: Path, stream: bool) -> int:
    """POST ``body`` to /v1/call over HTTP/3, print the answer (or each NDJSON part); 0 on a 200."""
    host, port = _target(url)
    headers = {"x-api-key": api_key, "content-type": "application/json",
               "accept-language": language_from_env(os.environ),
               "accept": "application/x-ndjson" if stream else "application/json"}
    async with contextlib.AsyncExitStack() as stack:
        async with asyncio.timeout(10):  # QUIC over UDP: an absent hub is silence, not a refusal
            client = await stack.enter_async_context(
                connect(host, port, configuration=h3_configuration(cafile), create_protocol=H3ClientProtocol))
        assert isinstance(client, H3ClientProtocol)
        _, response = await client.open("POST", f"{host}:{port}", "/v1/call", headers, json.dumps(body).encode())
        if stream and response.status == 200:
            buffered = b""
            async for chunk in iter_chunks(response):
                buffered += chunk
                while b"\n" in buffered:
                    line, buffered = buffered.split(b"\n", 1)
                    if line.strip():
                        print_json(json.loads(line))
            return 0
        response.body = b"".join([c async for c in iter_chunks(response)])
        print_json(response.json())
        return 0 if response.status == 200 else 1
