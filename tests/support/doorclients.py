"""One call through each door with its own real client, reduced to what the conformance table compares.

The clients are not ours: aiohttp (HTTP/1.1 and WebSocket), aioquic's HTTP/3 stack (the
connection and H3 layer from aioquic; ``daemon.cli.clients.h3.H3ClientProtocol`` only maps
its events to futures), grpcio with the generated stubs, and the official MCP SDK
(``mcp.Client`` over streamable HTTP, either probing ``server/discover`` or forced to the
``initialize`` handshake).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import grpc
import httpx2
from aioquic.asyncio.client import connect
from google.protobuf import any_pb2, json_format, struct_pb2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from daemon.cli.clients.grpc import grpc_error_body
from daemon.cli.clients.h3 import H3ClientProtocol, h3_configuration, iter_chunks
from daemon.runtime.tls import default_paths
from proto import mcp_v2_pb2 as pb
from proto import mcp_v2_pb2_grpc as pb_grpc

DOORS = ("http", "ws", "h3", "grpc", "mcp-discover", "mcp-initialize")
#: what a refused /v1/ws upgrade's status means (aiohttp's client does not read the JSON body it carries)
UPGRADE_REFUSALS = {400: "VALIDATION_ERROR", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}
TIMEOUT = 30.0


@dataclass
class Outcome:
    """What a caller learns: the error code (None on success), the result, the progress seen."""

    code: str | None
    result: Any = None
    progress: list[float] = field(default_factory=list)
    #: the door's own signal: the HTTP status, the gRPC status name, MCP's HTTP status / JSON-RPC
    #: error code / "isError" (a tool result flagged as an error); None where the door has none (WS frames)
    native: int | str | None = None


@dataclass
class Hub:
    endpoints: dict[str, Any]
    state_dir: Path

    @property
    def http(self) -> str:
        return str(self.endpoints["http"])

    def hostport(self, door: str) -> tuple[str, int]:
        url = urlsplit(self.endpoints[door])
        return url.hostname or "127.0.0.1", int(url.port or 0)


def _body(action: str, payload: Any, ttl: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"action": action, "payload": payload}
    if ttl is not None:
        body["ttl"] = ttl
    return body


def _ndjson(lines: list[dict[str, Any]]) -> Outcome:
    progress = [line["progress"] for line in lines if line.get("type") == "progress"]
    last = lines[-1]
    if last.get("type") == "error":
        return Outcome(last["error"]["code"], progress=progress)
    return Outcome(None, last["result"], progress)


async def via_http(hub: Hub, action: str, payload: Any, *, key: str | None, stream: bool = False,
                   ttl: float | None = None) -> Outcome:
    headers = {"X-API-Key": key} if key else {}
    if stream:
        headers["Accept"] = "application/x-ndjson"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        async with session.post(f"{hub.http}/v1/call", json=_body(action, payload, ttl), headers=headers) as resp:
            if resp.status != 200:
                return Outcome((await resp.json())["error"]["code"], native=resp.status)
            if stream:
                outcome = _ndjson([json.loads(line) async for line in resp.content if line.strip()])
                outcome.native = resp.status
                return outcome
            return Outcome(None, (await resp.json())["result"], native=resp.status)


async def via_ws(hub: Hub, action: str, payload: Any, *, key: str | None, stream: bool = False,
                 ttl: float | None = None) -> Outcome:
    headers = {"X-API-Key": key} if key else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        try:
            connecting = await session.ws_connect(f"{hub.http}/v1/ws", headers=headers)
        except aiohttp.WSServerHandshakeError as refused:  # credentials refused at the upgrade, before a socket
            return Outcome(UPGRADE_REFUSALS.get(refused.status, f"upgrade {refused.status}"), native=refused.status)
        async with connecting as ws:
            await ws.send_json({**_body(action, payload, ttl), "id": "c1", "stream": stream})
            progress: list[float] = []
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                frame = json.loads(message.data)
                if frame["type"] == "progress":
                    progress.append(frame["progress"])
                elif frame["type"] == "result":
                    return Outcome(None, frame["result"], progress)
                elif frame["type"] == "error":
                    return Outcome(frame["error"]["code"], progress=progress)
            if ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                return Outcome("PAYLOAD_TOO_LARGE")  # the WebSocket protocol's own refusal (1009)
            return Outcome(f"closed {ws.close_code}")


@contextlib.asynccontextmanager
async def h3_client(hub: Hub) -> AsyncIterator[H3ClientProtocol]:
    host, port = hub.hostport("http3")
    configuration = h3_configuration(default_paths(hub.state_dir)[0])
    async with connect(host, port, configuration=configuration, create_protocol=H3ClientProtocol) as client:
        assert isinstance(client, H3ClientProtocol)
        yield client


async def via_h3(hub: Hub, action: str, payload: Any, *, key: str | None, stream: bool = False,
                 ttl: float | None = None) -> Outcome:
    headers = {"content-type": "application/json", "accept": "application/x-ndjson" if stream else "application/json"}
    if key:
        headers["x-api-key"] = key
    async with h3_client(hub) as client:
        _, response = await client.open("POST", "localhost", "/v1/call", headers,
                                        json.dumps(_body(action, payload, ttl)).encode())
        body = b"".join([chunk async for chunk in iter_chunks(response)])
    if response.status != 200:
        return Outcome(json.loads(body)["error"]["code"], native=response.status)
    if stream:
        outcome = _ndjson([json.loads(line) for line in body.splitlines() if line.strip()])
        outcome.native = response.status
        return outcome
    return Outcome(None, json.loads(body)["result"], native=response.status)


def mcp_message(action: str, payload: Any, *, ttl: float | None = None, priority: int | None = None) -> pb.MCPMessage:
    packed = any_pb2.Any()
    packed.Pack(json_format.ParseDict(payload, struct_pb2.Struct()))
    message = pb.MCPMessage(action=action, payload=packed, type=pb.REQUEST, ttl=int(ttl or 0))
    if priority is not None:
        message.priority = priority
    return message


async def via_grpc(hub: Hub, action: str, payload: Any, *, key: str | None, stream: bool = False,
                   ttl: float | None = None) -> Outcome:
    host, port = hub.hostport("grpc")
    metadata = (("x-api-key", key),) if key else ()
    async with grpc.aio.insecure_channel(f"{host}:{port}", options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        stub = pb_grpc.HubStub(channel)
        message = mcp_message(action, payload, ttl=ttl)
        try:
            if stream:
                progress: list[float] = []
                async for part in stub.CallStream(message, metadata=metadata, timeout=TIMEOUT):
                    if part.HasField("progress"):
                        progress.append(part.progress.progress)
                    else:
                        return Outcome(None, json_format.MessageToDict(part.final.result), progress, "OK")
                return Outcome("no final part", progress=progress)
            reply = await stub.Call(message, metadata=metadata, timeout=TIMEOUT)
            return Outcome(None, json_format.MessageToDict(reply.result), native="OK")
        except grpc.aio.AioRpcError as exc:
            return Outcome(grpc_error_body(exc)["error"]["code"], native=exc.code().name)


class HttpLog:
    """httpx2 response hook: the HTTP statuses and bodies the MCP client saw (for 401/413 outcomes)."""

    def __init__(self) -> None:
        self.errors: list[tuple[int, dict[str, Any], dict[str, str]]] = []

    async def __call__(self, response: httpx2.Response) -> None:
        if response.status_code >= 400:
            await response.aread()
            try:
                body = response.json()
            except ValueError:
                body = {}
            self.errors.append((response.status_code, body, dict(response.headers)))

    def last_code(self) -> str | None:
        for _, body, _ in reversed(self.errors):
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and isinstance(error.get("code"), str):
                return str(error["code"])
        return None


@contextlib.asynccontextmanager
async def mcp_client(hub: Hub, *, key: str | None, mode: str, log: HttpLog | None = None,
                     headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    hooks = {"response": [log]} if log is not None else {}
    http = httpx2.AsyncClient(headers={**({"X-API-Key": key} if key else {}), **(headers or {})},
                              event_hooks=hooks, timeout=TIMEOUT)
    async with http, Client(streamable_http_client(f"{hub.http}/mcp", http_client=http), mode=mode) as client:
        yield client


def find_error(exc: BaseException, kind: type[MCPError]) -> MCPError | None:
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_error(inner, kind)
            if found is not None:
                return found
    return None


def _mcp_code(error: MCPError) -> str:
    data = error.error.data
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        return str(data["code"])
    return f"jsonrpc {error.error.code}"


async def via_mcp(hub: Hub, action: str, payload: Any, *, key: str | None, stream: bool = False,
                  ttl: float | None = None, mode: str = "auto") -> Outcome:
    log = HttpLog()
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value / (total or 1.0))

    meta: dict[str, Any] = {"democratic-ai/ttl": ttl} if ttl is not None else {}
    try:
        async with mcp_client(hub, key=key, mode=mode, log=log) as client:
            result = await client.call_tool(action, payload, progress_callback=on_progress if stream else None,
                                            meta=meta or None)  # type: ignore[arg-type]
    except Exception as exc:  # the SDK's task group may wrap its MCPError in an ExceptionGroup
        error = find_error(exc, MCPError)
        if error is None:
            raise
        native = log.errors[-1][0] if log.errors else error.error.code
        return Outcome(log.last_code() or _mcp_code(error), progress=progress, native=native)
    if result.is_error:
        return Outcome(result.structured_content["error"]["code"], progress=progress,  # type: ignore[index]
                       native="isError")
    return Outcome(None, result.structured_content, progress, native="ok")


async def call(door: str, hub: Hub, action: str, payload: Any, **kwargs: Any) -> Outcome:
    if door == "http":
        return await via_http(hub, action, payload, **kwargs)
    if door == "ws":
        return await via_ws(hub, action, payload, **kwargs)
    if door == "h3":
        return await via_h3(hub, action, payload, **kwargs)
    if door == "grpc":
        return await via_grpc(hub, action, payload, **kwargs)
    if door == "mcp-discover":
        return await via_mcp(hub, action, payload, mode="auto", **kwargs)
    if door == "mcp-initialize":
        return await via_mcp(hub, action, payload, mode="legacy", **kwargs)
    raise ValueError(door)


async def metric(hub: Hub, name: str, **labels: str) -> float:
    """One sample of the hub's Prometheus metrics (0 when absent)."""
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:_total)?\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total
