"""An attacker's requests at every door while honest callers keep calling: refused, never a 5xx, never a hang.

More than sixty malformed or abusive requests go to HTTP/1.1, WebSocket, HTTP/3, gRPC and MCP
at once, while three honest callers keep making good calls through the doors.  Each hostile
request must get the contract's 4xx code with the error body (gRPC: its status and the
error-body trailer; JSON-RPC: its own error, carrying the contract body where the hub has one)
within a per-request timeout.  Afterwards every honest call has succeeded and /ready answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import any_pb2

from daemon.cli.clients.grpc import grpc_error_body
from proto import mcp_v2_pb2 as pb
from proto import mcp_v2_pb2_grpc as pb_grpc
from tests.support.doorclients import Hub, call, h3_client, mcp_message
from tests.support.hubproc import HubProcess, write_config

pytestmark = pytest.mark.timeout(300)

MAX_BODY = 1024 * 1024
PER_REQUEST_S = 30.0
DEEP = b"[" * 100_000 + b"]" * 100_000
SURROGATE = b'{"action": "echo", "payload": {"text": "\\ud800"}}'
JSON = {"Content-Type": "application/json"}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def hostile_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    state = tmp_path_factory.mktemp("hostile")
    config = write_config(state / "hub.toml")
    text = config.read_text().replace(
        '[http]\nlisten = "127.0.0.1:0"\n',
        f'[http]\nlisten = "127.0.0.1:0"\nmax_body_bytes = {MAX_BODY}\nws_auth_timeout_s = 1\nws_max_in_flight = 2\n')
    config.write_text(text)
    process = HubProcess(state, config).start()
    yield process
    process.stop()


@dataclass
class Verdicts:
    """What each hostile request got; ``wrong`` lists the ones the hub answered badly."""

    sent: int = 0
    wrong: list[str] = field(default_factory=list)

    async def check(self, story: str, attempt: Callable[[], Awaitable[None]]) -> None:
        self.sent += 1
        try:
            async with asyncio.timeout(PER_REQUEST_S):
                await attempt()
        except TimeoutError:
            self.wrong.append(f"{story}: no answer within {PER_REQUEST_S:g} s")
        except AssertionError as exc:
            self.wrong.append(f"{story}: {exc}")


def contract_error(status: int, body: bytes, expected_status: int, code: str) -> None:
    assert status == expected_status, f"HTTP {status}, not {expected_status}: {body[:200]!r}"
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert set(error) == {"code", "message", "details", "trace_id"}, error


# -- HTTP/1.1 ------------------------------------------------------------------------------
async def http_cases(hub: Hub, key: str, verdicts: Verdicts) -> None:
    auth = {"X-API-Key": key}

    def post(path: str, body: bytes, status: int, code: str, headers: dict[str, str] | None = None,
             method: str = "POST") -> Callable[[], Awaitable[None]]:
        async def attempt() -> None:
            async with aiohttp.ClientSession() as session, session.request(
                    method, f"{hub.http}{path}", data=body, headers={**JSON, **auth, **(headers or {})}) as resp:
                contract_error(resp.status, await resp.read(), status, code)
        return attempt

    bodies = [
        ("JSON nested 100,000 deep", DEEP),
        ("a lone surrogate in the payload", SURROGATE),
        ("a lone surrogate in the action", b'{"action": "\\udfff"}'),
        ("a lone surrogate as an object key", b'{"action": "echo", "payload": {"\\ud800": 1}}'),
        ("NaN in the payload", b'{"action": "echo", "payload": {"n": NaN}}'),
        ("Infinity in the payload", b'{"action": "echo", "payload": {"n": -Infinity}}'),
        ("bytes that are not UTF-8", b'{"action": "echo", "payload": "\xff\xfe"}'),
        ("an encoded surrogate", b'{"action": "echo", "payload": "\xed\xa0\x80"}'),
        ("a byte order mark", b'\xef\xbb\xbf{"action": "echo"}'),
        ("truncated JSON", b'{"action": "echo", "payl'),
        ("an array instead of an object", b'[{"action": "echo"}]'),
        ("an action that is not a string", b'{"action": ["echo"]}'),
        ("a priority out of range", b'{"action": "echo", "priority": 99}'),
        ("a negative ttl", b'{"action": "echo", "ttl": -1}'),
        ("an integer of 5,000 digits", b'{"action": "echo", "payload": {"n": ' + b"9" * 5000 + b"}}"),
        ("nesting one level too deep", b'{"action": "echo", "payload": ' + b"[" * 64 + b"]" * 64 + b"}"),
    ]
    for story, body in bodies:
        await verdicts.check(f"http: {story}", post("/v1/call", body, 400, "VALIDATION_ERROR"))
    await verdicts.check("http: a body over the limit", post("/v1/call", b"[" + b"0," * MAX_BODY + b"0]", 413,
                                                             "PAYLOAD_TOO_LARGE"))
    await verdicts.check("http: a route that does not exist", post("/v1/teleport", b"{}", 404, "NOT_FOUND"))
    await verdicts.check("http: a method a route does not serve", post("/v1/call", b"", 405, "METHOD_NOT_ALLOWED",
                                                                       method="DELETE"))
    await verdicts.check("http: a 10 KB API key", post("/v1/call", b'{"action": "echo"}', 401, "UNAUTHENTICATED",
                                                      {"X-API-Key": "dai_" + "k" * 10_000}))
    await verdicts.check("http: JSON nested 100,000 deep to an admin route",
                         post("/v1/tenants", DEEP, 400, "VALIDATION_ERROR"))
    await verdicts.check("http: a lone surrogate at login", post(
        "/v1/auth/token", b'{"email": "\\ud800@x", "password": "p", "tenant": "default"}', 400, "VALIDATION_ERROR"))
    await verdicts.check("http: POST to the WebSocket route", post("/v1/ws", b"{}", 404, "NOT_FOUND"))

    async def plain_get_of_the_socket_route() -> None:
        async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/v1/ws", headers=auth) as resp:
            contract_error(resp.status, await resp.read(), 400, "VALIDATION_ERROR")
    await verdicts.check("http: GET /v1/ws without an upgrade", plain_get_of_the_socket_route)

    host, port = hub.hostport("http")
    raw = [
        ("an API key over the header limit", b"POST /v1/call HTTP/1.1\r\nHost: h\r\nX-API-Key: dai_"
         + b"k" * 100_000 + b"\r\nContent-Length: 2\r\n\r\n{}"),
        ("a header line over the limit", b"GET /ready HTTP/1.1\r\nHost: h\r\nX-Junk: " + b"j" * 70_000 + b"\r\n\r\n"),
        ("a request line that is not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"),
        ("a request line too long", b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("a bad Content-Length", b"POST /v1/call HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n"),
    ]
    for story, request in raw:
        await verdicts.check(f"http: {story}", raw_http(host, port, request))


def raw_http(host: str, port: int, request: bytes) -> Callable[[], Awaitable[None]]:
    """Bytes no well-behaved client sends; the answer must still be the contract's JSON body."""
    async def attempt() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request)
            await writer.drain()
            answer = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"application/json" in head.lower(), head[:300]
        contract_error(int(head.split(b" ")[1]), body, 400, "VALIDATION_ERROR")
    return attempt


# -- WebSocket -----------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def socket_to(hub: Hub, headers: dict[str, str] | None = None
                    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{hub.http}/v1/ws",
                                                                      headers=headers or {}) as ws:
        yield ws


async def next_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive()
    assert message.type is aiohttp.WSMsgType.TEXT, f"{message.type}: {message.data!r}"
    frame: dict[str, Any] = json.loads(message.data)
    return frame


async def closed_with_policy_violation(ws: aiohttp.ClientWebSocketResponse) -> None:
    message = await ws.receive()
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message
    assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION, ws.close_code


async def ws_cases(hub: Hub, key: str, verdicts: Verdicts) -> None:
    async def bad_key_at_the_upgrade() -> None:
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "X-API-Key": "dai_nope"}
        async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/v1/ws", headers=upgrade) as resp:
            contract_error(resp.status, await resp.read(), 401, "UNAUTHENTICATED")

    async def silence() -> None:
        async with socket_to(hub) as ws:
            frame = await next_frame(ws)
            assert frame["error"]["code"] == "UNAUTHENTICATED", frame
            await closed_with_policy_violation(ws)

    async def a_call_before_auth() -> None:
        async with socket_to(hub) as ws:
            await ws.send_json({"id": "c1", "action": "echo", "payload": {}})
            frame = await next_frame(ws)
            assert (frame["id"], frame["error"]["code"]) == ("c1", "UNAUTHENTICATED"), frame
            await closed_with_policy_violation(ws)

    async def a_bad_auth_frame() -> None:
        async with socket_to(hub) as ws:
            await ws.send_json({"type": "auth", "api_key": "dai_wrong"})
            frame = await next_frame(ws)
            assert (frame["type"], frame["ok"], frame["error"]["code"]) == ("auth", False, "UNAUTHENTICATED"), frame
            await closed_with_policy_violation(ws)

    async def an_auth_frame_of_the_wrong_shape() -> None:
        async with socket_to(hub) as ws:
            await ws.send_json({"type": "auth", "api_key": ["dai"]})
            frame = await next_frame(ws)
            assert (frame["ok"], frame["error"]["code"]) == (False, "VALIDATION_ERROR"), frame
            await closed_with_policy_violation(ws)

    for story, attempt in [("bad credentials at the upgrade", bad_key_at_the_upgrade),
                           ("no credentials and silence", silence),
                           ("a call before authenticating", a_call_before_auth),
                           ("an auth frame with a wrong key", a_bad_auth_frame),
                           ("an auth frame of the wrong shape", an_auth_frame_of_the_wrong_shape)]:
        await verdicts.check(f"ws: {story}", attempt)

    def frame_refused(send: Callable[[aiohttp.ClientWebSocketResponse], Awaitable[None]],
                      code: str = "VALIDATION_ERROR") -> Callable[[], Awaitable[None]]:
        async def attempt() -> None:
            async with socket_to(hub) as ws:  # authenticated by its first frame
                await ws.send_json({"type": "auth", "api_key": key})
                assert (await next_frame(ws))["ok"] is True
                await send(ws)
                frame = await next_frame(ws)
                assert (frame["type"], frame["error"]["code"]) == ("error", code), frame
                await ws.send_json({"id": "after", "action": "echo", "payload": {"ok": 1}})
                assert (await next_frame(ws))["result"] == {"ok": 1}, "the socket keeps serving"
        return attempt

    frames: list[tuple[str, Callable[[aiohttp.ClientWebSocketResponse], Awaitable[None]]]] = [
        ("a frame nested 100,000 deep", lambda ws: ws.send_str(DEEP.decode())),
        ("a frame with a lone surrogate", lambda ws: ws.send_str(SURROGATE.decode())),
        ("a frame with NaN", lambda ws: ws.send_str('{"id": 1, "action": "echo", "payload": NaN}')),
        ("a frame that is not JSON", lambda ws: ws.send_str("{nope")),
        ("a binary frame", lambda ws: ws.send_bytes(b"\x00\x01")),
        ("a frame that is an array", lambda ws: ws.send_str('[{"action": "echo"}]')),
    ]
    for story, send in frames:
        await verdicts.check(f"ws: {story}", frame_refused(send))

    async def more_calls_than_a_socket_may_have_in_flight() -> None:
        async with socket_to(hub, {"X-API-Key": key}) as ws:
            for n in range(3):  # ws_max_in_flight = 2
                await ws.send_json({"id": n, "action": "echo.stream", "payload": {"steps": 1, "delay_ms": 1500}})
            frame = await next_frame(ws)
            assert (frame["id"], frame["error"]["code"]) == (2, "RATE_LIMITED"), frame
            answered = {(await next_frame(ws))["id"] for _ in range(2)}
            assert answered == {0, 1}
    await verdicts.check("ws: more calls in flight than allowed", more_calls_than_a_socket_may_have_in_flight)

    async def a_frame_over_the_limit() -> None:
        async with socket_to(hub, {"X-API-Key": key}) as ws:
            await ws.send_str('{"blob": "' + "x" * (MAX_BODY + 10) + '"}')
            message = await ws.receive()
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message
            assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG  # the protocol's own refusal
    await verdicts.check("ws: a frame over the limit", a_frame_over_the_limit)


# -- HTTP/3 --------------------------------------------------------------------------------
async def h3_cases(hub: Hub, key: str, verdicts: Verdicts) -> None:
    def h3(path: str, body: bytes, status: int, code: str, method: str = "POST",
           api_key: str = key) -> Callable[[], Awaitable[None]]:
        async def attempt() -> None:
            async with h3_client(hub) as client:
                response = await client.request(method, "localhost", path,
                                                {"x-api-key": api_key, "content-type": "application/json"}, body)
            contract_error(response.status, response.body, status, code)
        return attempt

    for story, body in [("JSON nested 100,000 deep", DEEP), ("a lone surrogate", SURROGATE),
                        ("NaN", b'{"action": "echo", "payload": NaN}'), ("not JSON", b"{nope"),
                        ("bytes that are not UTF-8", b'{"action": "\xff"}'),
                        ("an action that is not a string", b'{"action": 7}')]:
        await verdicts.check(f"h3: {story}", h3("/v1/call", body, 400, "VALIDATION_ERROR"))
    await verdicts.check("h3: deep JSON to an admin route", h3("/v1/tenants", DEEP, 400, "VALIDATION_ERROR"))
    await verdicts.check("h3: a route that does not exist", h3("/v1/teleport", b"", 404, "NOT_FOUND", "GET"))
    await verdicts.check("h3: a wrong key", h3("/v1/call", b'{"action": "echo"}', 401, "UNAUTHENTICATED",
                                               api_key="dai_nope"))
    await verdicts.check("h3: a body over the limit", h3("/v1/call", b"{" + b" " * (MAX_BODY + 1) + b"}", 413,
                                                         "PAYLOAD_TOO_LARGE"))


# -- gRPC ----------------------------------------------------------------------------------
def _delimited(tag: int, data: bytes) -> bytes:
    length, size = bytearray(), len(data)
    while True:
        byte, size = size & 0x7F, size >> 7
        length.append(byte | (0x80 if size else 0))
        if not size:
            return bytes([tag]) + bytes(length) + data


def deep_struct(levels: int) -> bytes:
    """A Struct ``{"a": {"a": ...}}`` ``levels`` deep, as wire bytes (protobuf's own encoder refuses to)."""
    struct = b""
    for _ in range(levels):
        value = _delimited(0x2A, struct)  # Value.struct_value
        struct = _delimited(0x0A, _delimited(0x0A, b"a") + _delimited(0x12, value))  # Struct.fields entry
    return struct


def deep_list_value(levels: int) -> bytes:
    """A Value ``[[[...]]]`` ``levels`` deep, as wire bytes."""
    value = _delimited(0x32, b"")  # Value.list_value = []
    for _ in range(levels):
        value = _delimited(0x32, _delimited(0x0A, value))  # ListValue.values
    return value


def packed(type_name: str, value: bytes, **fields: Any) -> pb.MCPMessage:
    payload = any_pb2.Any(type_url=f"type.googleapis.com/{type_name}", value=value)
    return pb.MCPMessage(action=fields.pop("action", "echo"), payload=payload, type=pb.REQUEST, **fields)


async def grpc_cases(hub: Hub, key: str, verdicts: Verdicts) -> None:
    host, port = hub.hostport("grpc")

    def rpc(message: pb.MCPMessage | bytes, status: grpc.StatusCode, code: str,
            api_key: str = key) -> Callable[[], Awaitable[None]]:
        async def attempt() -> None:
            async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
                if isinstance(message, bytes):
                    send = channel.unary_unary("/democratic_ai.v2.Hub/Call", request_serializer=lambda b: b,
                                               response_deserializer=lambda b: b)
                else:
                    send = pb_grpc.HubStub(channel).Call
                try:
                    answer = await send(message, metadata=(("x-api-key", api_key),), timeout=PER_REQUEST_S)
                except grpc.aio.AioRpcError as failed:
                    assert failed.code() is status, (failed.code(), failed.details())
                    assert grpc_error_body(failed)["error"]["code"] == code
                    return
            raise AssertionError(f"answered OK: {answer}")
        return attempt

    struct, value = "google.protobuf.Struct", "google.protobuf.Value"
    nan = _delimited(0x0A, _delimited(0x0A, b"n") + _delimited(0x12, b"\x11" + b"\x00" * 6 + b"\xf8\x7f"))
    whole = mcp_message("echo", {"a": "b" * 50}).SerializeToString()
    cases: list[tuple[str, pb.MCPMessage | bytes, grpc.StatusCode, str]] = [
        ("a Struct 60 levels deep", packed(struct, deep_struct(60)), grpc.StatusCode.INVALID_ARGUMENT,
         "VALIDATION_ERROR"),
        ("a Struct 2,000 levels deep", packed(struct, deep_struct(2000)), grpc.StatusCode.INVALID_ARGUMENT,
         "VALIDATION_ERROR"),
        ("a Value of lists 2,000 deep", packed(value, deep_list_value(2000)), grpc.StatusCode.INVALID_ARGUMENT,
         "VALIDATION_ERROR"),
        ("a Struct holding NaN", packed(struct, nan), grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR"),
        ("Struct bytes that are garbage", packed(struct, b"\xff\xff\xff"), grpc.StatusCode.INVALID_ARGUMENT,
         "VALIDATION_ERROR"),
        ("a payload of a foreign type", packed("evil.Type", b""), grpc.StatusCode.INVALID_ARGUMENT,
         "VALIDATION_ERROR"),
        ("a truncated message", whole[: len(whole) // 2], grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR"),
        ("a negative ttl", pb.MCPMessage(action="echo", type=pb.REQUEST, ttl=-5), grpc.StatusCode.INVALID_ARGUMENT,
         "VALIDATION_ERROR"),
        ("an action nobody serves", pb.MCPMessage(action="no.such", type=pb.REQUEST), grpc.StatusCode.NOT_FOUND,
         "CAPABILITY_NOT_FOUND"),
    ]
    for story, message, status, code in cases:
        await verdicts.check(f"grpc: {story}", rpc(message, status, code))
    await verdicts.check("grpc: a wrong key", rpc(pb.MCPMessage(action="echo", type=pb.REQUEST),
                                                  grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", "dai_nope"))


# -- MCP -----------------------------------------------------------------------------------
async def mcp_cases(hub: Hub, key: str, verdicts: Verdicts) -> None:
    def mcp(body: bytes, status: int, check: Callable[[dict[str, Any], dict[str, str]], None],
            headers: dict[str, str] | None = None, path: str = "/mcp",
            method: str = "POST") -> Callable[[], Awaitable[None]]:
        async def attempt() -> None:
            async with aiohttp.ClientSession() as session, session.request(
                    method, f"{hub.http}{path}", data=body,
                    headers={**MCP_ACCEPT, "X-API-Key": key, **(headers or {})}) as resp:
                raw = await resp.read()
                assert resp.status == status, f"HTTP {resp.status}, not {status}: {raw[:200]!r}"
                check(json.loads(raw), {k.lower(): v for k, v in resp.headers.items()})
        return attempt

    def parse_error(reply: dict[str, Any], _: dict[str, str]) -> None:
        assert reply["error"]["code"] == -32700, reply
        assert reply["error"]["data"]["error"]["code"] == "VALIDATION_ERROR", reply

    def rpc_error(code: int) -> Callable[[dict[str, Any], dict[str, str]], None]:
        def check(reply: dict[str, Any], _: dict[str, str]) -> None:
            assert (reply["jsonrpc"], reply["error"]["code"]) == ("2.0", code), reply
        return check

    def contract(code: str) -> Callable[[dict[str, Any], dict[str, str]], None]:
        def check(reply: dict[str, Any], _: dict[str, str]) -> None:
            assert reply["error"]["code"] == code and "trace_id" in reply["error"], reply
        return check

    def unreflected(reply: dict[str, Any], headers: dict[str, str]) -> None:
        assert reply["error"]["code"] == "UNAUTHENTICATED"
        assert headers["www-authenticate"] == "Bearer", headers  # the forged Host is not handed back

    ping = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}'
    cases: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("JSON nested 100,000 deep", mcp(DEEP, 400, parse_error)),
        ("a lone surrogate", mcp(b'{"jsonrpc": "2.0", "id": 1, "method": "\\ud800"}', 400, parse_error)),
        ("a lone surrogate in tool arguments", mcp(
            b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", '
            b'"arguments": {"t": "\\udc00"}}}', 400, parse_error)),
        ("NaN", mcp(b'{"jsonrpc": "2.0", "id": NaN, "method": "ping"}', 400, parse_error)),
        ("bytes that are not UTF-8", mcp(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}', 400, parse_error)),
        ("a batch", mcp(b"[" + ping + b"]", 400, rpc_error(-32600))),
        ("a wrong content type", mcp(ping, 415, rpc_error(-32600), {"Content-Type": "text/plain"})),
        ("an unknown session", mcp(ping, 404, rpc_error(-32600), {"Mcp-Session-Id": "forged"})),
        ("no credentials", mcp(ping, 401, contract("UNAUTHENTICATED"), {"X-API-Key": ""})),
        ("a foreign browser origin", mcp(ping, 403, contract("PERMISSION_DENIED"), {"Origin": "http://evil.example"})),
        ("a forged Host without credentials", mcp(ping, 401, unreflected, {"X-API-Key": "", "Host": "evil.example"})),
        ("metadata asked for a forged Host", mcp(b"", 404, contract("NOT_FOUND"), {"Host": "evil.example"},
                                                 "/.well-known/oauth-protected-resource/mcp", "GET")),
        ("a body over the limit", mcp(b'{"x": "' + b"x" * MAX_BODY + b'"}', 413, contract("PAYLOAD_TOO_LARGE"))),
    ]
    for story, attempt in cases:
        await verdicts.check(f"mcp: {story}", attempt)


# -- the story -------------------------------------------------------------------------------
async def honest_caller(hub: Hub, key: str, doors: tuple[str, ...], stop: asyncio.Event,
                        outcomes: list[tuple[str, str | None]]) -> None:
    n = 0
    while not stop.is_set():
        door = doors[n % len(doors)]
        async with asyncio.timeout(PER_REQUEST_S):
            outcome = await call(door, hub, "echo", {"honest": n}, key=key)
        outcomes.append((door, outcome.code if outcome.result == {"honest": n} else f"wrong result {outcome}"))
        n += 1


async def test_hostile_requests_on_every_door_get_4xx_while_honest_calls_succeed(hostile_hub: HubProcess) -> None:
    hub = Hub(hostile_hub.endpoints, hostile_hub.state_dir)
    key = hostile_hub.admin_key
    verdicts = Verdicts()
    stop = asyncio.Event()
    outcomes: list[tuple[str, str | None]] = []
    honest = [asyncio.create_task(honest_caller(hub, key, doors, stop, outcomes))
              for doors in (("http", "ws"), ("grpc", "h3"), ("mcp-discover", "http"))]
    try:
        await asyncio.gather(*(cases(hub, key, verdicts) for cases in (
            http_cases, ws_cases, h3_cases, grpc_cases, mcp_cases)))
    finally:
        stop.set()
        await asyncio.gather(*honest)
    assert verdicts.sent >= 60, verdicts.sent
    assert verdicts.wrong == []
    assert outcomes and all(code is None for _, code in outcomes), [o for o in outcomes if o[1] is not None]
    assert {door for door, _ in outcomes} == {"http", "ws", "grpc", "h3", "mcp-discover"}
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/ready") as resp:
        assert resp.status == 200, await resp.text()
    assert "Traceback" not in hostile_hub.log(), "the hub logged an unhandled error"

