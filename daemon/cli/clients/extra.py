"""``democratic-ai call --via h3|grpc``: the HTTP/3 (aioquic) and gRPC clients of a running hub.

``H3Client`` is a small HTTP/3 client over aioquic's own connection and H3 layer; it
trusts the hub's self-signed certificate from the state dir when there is one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
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

from daemon.runtime.config import state_dir_of
from daemon.runtime.tls import default_paths


@dataclass(slots=True)
class H3Response:
    status: int
    headers: dict[str, str]
    chunks: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class H3ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._heads: dict[int, asyncio.Future[H3Response]] = {}
        self._responses: dict[int, H3Response] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
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

    async def open(self, method: str, authority: str, path: str, headers: dict[str, str] | None = None,
                   body: bytes = b"") -> tuple[int, H3Response]:
        """Send a request; the response once its headers are in (the body follows in ``chunks``)."""
        stream_id = self._quic.get_next_available_stream_id()
        head = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
                (b":path", path.encode())]
        head.extend((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
        future: asyncio.Future[H3Response] = asyncio.get_running_loop().create_future()
        self._heads[stream_id] = future
        self._http.send_headers(stream_id, head, end_stream=not body)
        if body:
            self._http.send_data(stream_id, body, end_stream=True)
        self.transmit()
        return stream_id, await future

    def cancel(self, stream_id: int) -> None:
        """Give up on a request: reset our side and ask the hub to stop sending."""
        self._quic.reset_stream(stream_id, 0x10C)  # H3_REQUEST_CANCELLED
        self._quic.stop_stream(stream_id, 0x10C)
        self.transmit()

    async def request(self, method: str, authority: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> H3Response:
        _, response = await self.open(method, authority, path, headers, body)
        response.body = b"".join([chunk async for chunk in iter_chunks(response)])
        return response


async def iter_chunks(response: H3Response) -> AsyncIterator[bytes]:
    while (chunk := await response.chunks.get()) is not None:
        yield chunk


def h3_configuration(cafile: Path | None = None, *, verify: bool = True) -> QuicConfiguration:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    if not verify:
        configuration.verify_mode = ssl.CERT_NONE
    elif cafile is not None and cafile.is_file():
        configuration.load_verify_locations(str(cafile))
    return configuration


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 443


async def _call_h3(url: str, body: dict[str, Any], api_key: str, cafile: Path, stream: bool) -> int:
    host, port = _target(url)
    headers = {"x-api-key": api_key, "content-type": "application/json",
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
                        _print(json.loads(line))
            return 0
        response.body = b"".join([c async for c in iter_chunks(response)])
        _print(response.json())
        return 0 if response.status == 200 else 1


async def _call_grpc(url: str, body: dict[str, Any], api_key: str, stream: bool) -> int:
    import grpc
    from google.protobuf import any_pb2, json_format, struct_pb2

    from proto import mcp_v2_pb2 as pb

    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 50051
    payload = any_pb2.Any()
    value = body.get("payload", {})
    if isinstance(value, dict):
        payload.Pack(json_format.ParseDict(value, struct_pb2.Struct()))
    else:
        payload.Pack(json_format.ParseDict(value, struct_pb2.Value()))
    message = pb.MCPMessage(action=body["action"], payload=payload, target_module_id=body.get("target", ""),
                            priority=int(body.get("priority", 5)), type=pb.REQUEST)
    ttl = body.get("ttl")
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        metadata = (("x-api-key", api_key),)
        serialize = pb.MCPMessage.SerializeToString
        try:
            if stream:
                call_stream = channel.unary_stream("/democratic_ai.v2.Hub/CallStream", request_serializer=serialize,
                                                   response_deserializer=pb.StreamPart.FromString)
                async for part in call_stream(message, metadata=metadata, timeout=ttl):
                    _print(stream_part_as_json(part))
            else:
                unary = channel.unary_unary("/democratic_ai.v2.Hub/Call", request_serializer=serialize,
                                            response_deserializer=pb.CallResponse.FromString)
                reply = await unary(message, metadata=metadata, timeout=ttl)
                _print(call_response_as_json(reply))
        except grpc.aio.AioRpcError as exc:
            _print(grpc_error_body(exc))
            return 1
    return 0


def _json_numbers(value: Any) -> Any:
    """protobuf's Value holds every number as a double: show 3 as 3, as the HTTP door does."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    return value


def call_response_as_json(reply: Any) -> dict[str, Any]:
    """A CallResponse in the shape of the HTTP door's /v1/call answer."""
    from google.protobuf import json_format

    receipt = {"seq": reply.receipt.seq, "hash": reply.receipt.hash} if reply.HasField("receipt") else None
    return {"id": reply.id, "correlation_id": reply.correlation_id, "module": reply.module,
            "result": _json_numbers(json_format.MessageToDict(reply.result)), "receipt": receipt}


def stream_part_as_json(part: Any) -> dict[str, Any]:
    """A StreamPart as the HTTP door's NDJSON line."""
    from google.protobuf import json_format

    if part.HasField("final"):
        return {"type": "result", "is_complete": True, **call_response_as_json(part.final)}
    line: dict[str, Any] = {"type": "progress", "progress": part.progress.progress,
                            "message": part.progress.message, "is_complete": False}
    if part.progress.HasField("data"):
        line["data"] = _json_numbers(json_format.MessageToDict(part.progress.data))
    return line


def grpc_error_body(exc: Any) -> dict[str, Any]:
    """The contract's error body from a failed RPC's trailers (else built from the status)."""
    from google.protobuf import json_format

    from proto import mcp_v2_pb2 as pb

    for key, value in exc.trailing_metadata() or ():
        if key == "democratic-ai-error-bin" and isinstance(value, bytes):
            body = pb.ErrorBody.FromString(value)
            return {"error": {"code": body.code, "message": body.message,
                              "details": json_format.MessageToDict(body.details), "trace_id": body.trace_id}}
    return {"error": {"code": exc.code().name, "message": exc.details() or "", "details": {}, "trace_id": ""}}


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def call(args: argparse.Namespace, body: dict[str, Any], endpoints: dict[str, Any], api_key: str) -> int:
    """Entry point of ``democratic-ai call --via h3|grpc``."""
    via = args.via
    url = args.url or endpoints.get("http3" if via == "h3" else "grpc")
    if not url:
        print(f"democratic-ai: the hub has no {via} door (is it enabled?)", file=sys.stderr)
        return 1
    state_dir = state_dir_of(args)
    try:
        if via == "h3":
            return asyncio.run(_call_h3(url, body, api_key, default_paths(state_dir)[0], args.stream))
        if via == "grpc":
            return asyncio.run(_call_grpc(url, body, api_key, args.stream))
    except (OSError, ConnectionError) as exc:
        print(f"democratic-ai: cannot reach the hub at {url}: {exc}", file=sys.stderr)
        return 1
    print(f"democratic-ai: --via {via} is not handled here", file=sys.stderr)
    return 2
