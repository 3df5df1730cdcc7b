"""Doors benchmark: an echo call at 32 concurrent clients, each door against a bare server of its own stack.

In the same run, per door: requests/s and p50/p99 latency through the real hub (a
`democratic-ai serve` subprocess, full pipeline: auth, rate limit, ledger, scheduler) and
through a bare server of the same stack in another subprocess (a bare aiohttp handler,
a bare aiohttp WebSocket, a bare aioquic HTTP/3 responder, a bare grpc.aio servicer),
with the same client.  Writes the "Doors" section of docs/benchmarks.md.

    .venv/bin/python -m bench.doors [--seconds 5] [--concurrency 32] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.cli.clients.h3 import H3ClientProtocol, h3_configuration  # noqa: E402
from proto import mcp_v2_pb2 as pb  # noqa: E402
from tests.support.doorclients import mcp_message  # noqa: E402
from tests.support.hubproc import HubProcess  # noqa: E402

PAYLOAD = {"n": 1, "text": "hello"}
MCP_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
MCP_HEADERS = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo",
               "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

HUB_CONFIG = """
[http]
listen = "127.0.0.1:0"
[http3]
listen = "127.0.0.1:0"
[grpc]
listen = "127.0.0.1:0"
[mdns]
enabled = false
[log]
level = "WARNING"
[modules]
enabled = ["echo"]
[plans.starter]
rate_limits = { api_calls = "100000000/min" }
"""


# -- the bare servers (run with --bare in their own process) ---------------------------------------
async def serve_bare(ports_file: Path, cert: Path, key: Path) -> None:
    from aiohttp import web
    from aioquic.asyncio import serve
    from aioquic.quic.configuration import QuicConfiguration

    async def echo(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"result": body["payload"]})

    async def mcp(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {
            "content": [{"type": "text", "text": json.dumps(body["params"]["arguments"])}],
            "structuredContent": body["params"]["arguments"], "isError": False}})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for message in sock:
            frame = json.loads(message.data)
            await sock.send_str(json.dumps({"id": frame["id"], "type": "result", "result": frame["payload"]}))
        return sock

    app = web.Application()
    app.router.add_post("/v1/call", echo)
    app.router.add_post("/mcp", mcp)
    app.router.add_get("/v1/ws", ws)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    class Bare:
        async def Call(self, message: pb.MCPMessage, context: Any) -> pb.CallResponse:
            from google.protobuf import json_format, struct_pb2

            struct = struct_pb2.Struct()
            message.payload.Unpack(struct)
            value = struct_pb2.Value()
            json_format.Parse(json.dumps(json_format.MessageToDict(struct)), value)
            return pb.CallResponse(id="1", module="echo", result=value)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("democratic_ai.v2.Hub", {
        "Call": grpc.unary_unary_rpc_method_handler(Bare().Call, request_deserializer=pb.MCPMessage.FromString,
                                                    response_serializer=pb.CallResponse.SerializeToString)}),))
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    class Responder(QuicConnectionProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._http = H3Connection(self._quic)
            self._bodies: dict[int, bytearray] = {}

        def quic_event_received(self, event: Any) -> None:
            for h3 in self._http.handle_event(event):
                if isinstance(h3, HeadersReceived):
                    self._bodies[h3.stream_id] = bytearray()
                elif isinstance(h3, DataReceived):
                    self._bodies[h3.stream_id] += h3.data
                    if h3.stream_ended:
                        body = json.loads(self._bodies.pop(h3.stream_id))
                        out = json.dumps({"result": body["payload"]}).encode()
                        self._http.send_headers(h3.stream_id, [(b":status", b"200"),
                                                               (b"content-type", b"application/json")])
                        self._http.send_data(h3.stream_id, out, end_stream=True)
                        self.transmit()

    configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    configuration.load_cert_chain(cert, key)
    quic = await serve("127.0.0.1", 0, configuration=configuration, create_protocol=Responder)
    h3_port = quic._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    ports = {"http": f"http://127.0.0.1:{http_port}", "grpc": f"grpc://127.0.0.1:{grpc_port}",
             "http3": f"https://127.0.0.1:{h3_port}"}
    await asyncio.to_thread(ports_file.write_text, json.dumps(ports))
    await asyncio.Event().wait()


# -- load ---------------------------------------------------------------------------------------------
Request = Callable[[], Awaitable[None]]


async def run_load(make_client: Callable[[], contextlib.AbstractAsyncContextManager[Request]], seconds: float,
                   concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    stop_at = 0.0

    async def worker() -> None:
        async with make_client() as request:
            await request()  # warm the connection
            await start.wait()
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                await request()
                latencies.append(time.perf_counter() - began)

    start = asyncio.Event()
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(0.5)  # let every worker connect
    began = time.perf_counter()
    stop_at = began + seconds
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000, "n": len(latencies)}


def http_client(base: str, key: str) -> Callable[[], contextlib.AbstractAsyncContextManager[Request]]:
    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Request]:
        async with aiohttp.ClientSession(headers={"X-API-Key": key}) as session:
            async def request() -> None:
                async with session.post(f"{base}/v1/call", json={"action": "echo", "payload": PAYLOAD}) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()
            yield request
    return make


def ws_client(base: str, key: str) -> Callable[[], contextlib.AbstractAsyncContextManager[Request]]:
    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Request]:
        async with aiohttp.ClientSession(headers={"X-API-Key": key}) as session, \
                session.ws_connect(f"{base}/v1/ws") as ws:
            async def request() -> None:
                await ws.send_str(json.dumps({"id": "1", "action": "echo", "payload": PAYLOAD}))
                frame = json.loads((await ws.receive()).data)
                assert frame["type"] == "result", frame
            yield request
    return make


def mcp_client(base: str, key: str) -> Callable[[], contextlib.AbstractAsyncContextManager[Request]]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": PAYLOAD, "_meta": MCP_META}}

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Request]:
        async with aiohttp.ClientSession(headers={"X-API-Key": key, **MCP_HEADERS}) as session:
            async def request() -> None:
                async with session.post(f"{base}/mcp", json=body) as resp:
                    reply = await resp.json()
                    assert resp.status == 200 and not reply["result"]["isError"], reply
            yield request
    return make


def h3_client(url: str, key: str, cafile: Path) -> Callable[[], contextlib.AbstractAsyncContextManager[Request]]:
    host, port = url.split("//")[1].split(":")
    body = json.dumps({"action": "echo", "payload": PAYLOAD}).encode()

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Request]:
        async with connect(host, int(port), configuration=h3_configuration(cafile),
                           create_protocol=H3ClientProtocol) as client:
            assert isinstance(client, H3ClientProtocol)

            async def request() -> None:
                response = await client.request("POST", "localhost", "/v1/call",
                                                {"x-api-key": key, "content-type": "application/json"}, body)
                assert response.status == 200, response.body
            yield request
    return make


def grpc_client(url: str, key: str) -> Callable[[], contextlib.AbstractAsyncContextManager[Request]]:
    channel_holder: dict[str, grpc.aio.Channel] = {}
    message = mcp_message("echo", PAYLOAD)

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Request]:
        if "channel" not in channel_holder:  # one channel (HTTP/2 connection) shared, as gRPC clients do
            channel_holder["channel"] = grpc.aio.insecure_channel(url.split("//")[1])
        call = channel_holder["channel"].unary_unary("/democratic_ai.v2.Hub/Call",
                                                     request_serializer=pb.MCPMessage.SerializeToString,
                                                     response_deserializer=pb.CallResponse.FromString)

        async def request() -> None:
            await call(message, metadata=(("x-api-key", key),), timeout=30)
        yield request
    return make


async def measure(hub: dict[str, Any], bare: dict[str, Any], key: str, cafile: Path, seconds: float,
                  concurrency: int, rounds: int) -> list[tuple[str, list[dict[str, float]], list[dict[str, float]]]]:
    """Per door, ``rounds`` interleaved pairs (hub, then bare, then hub ...), so drift hits both alike."""
    rows = []
    doors: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("HTTP/1.1 (aiohttp)", lambda ep: http_client(ep["http"], key)),
        ("WebSocket (aiohttp)", lambda ep: ws_client(ep["http"], key)),
        ("MCP 2026-07-28 tools/call (aiohttp)", lambda ep: mcp_client(ep["http"], key)),
        ("HTTP/3 (aioquic)", lambda ep: h3_client(ep["http3"], key, cafile)),
        ("gRPC unary (grpc.aio)", lambda ep: grpc_client(ep["grpc"], key)),
    ]
    for name, client in doors:
        hub_runs, bare_runs = [], []
        for round_no in range(1, rounds + 1):
            hub_runs.append(await run_load(client(hub), seconds, concurrency))
            bare_runs.append(await run_load(client(bare), seconds, concurrency))
            print(f"{name:40s} round {round_no}: hub {hub_runs[-1]['rps']:8.0f}/s p99 {hub_runs[-1]['p99']:6.1f} ms"
                  f" | bare {bare_runs[-1]['rps']:8.0f}/s  ratio {hub_runs[-1]['rps'] / bare_runs[-1]['rps']:.2f}",
                  flush=True)
        rows.append((name, hub_runs, bare_runs))
    return rows


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def section(rows: list[tuple[str, list[dict[str, float]], list[dict[str, float]]]], seconds: float,
            concurrency: int) -> str:
    """The "## Doors" section of docs/benchmarks.md: medians of the interleaved rounds, with the ratios' spread."""
    loop = "uvloop" if _has_uvloop() else "asyncio"
    rounds = len(rows[0][1]) if rows else 0
    lines = [
        "## Doors", "",
        f"`bench/doors.py`: an `echo` call at {concurrency} concurrent clients for {seconds:g} s per door and "
        f"round, {rounds} interleaved rounds (hub, bare, hub, bare, ...), medians, "
        "through the real hub (a `democratic-ai serve` subprocess: API-key auth, rate limit, scheduler, "
        "usage ledger with its durable receipt) and, in the same run with the same client, through a bare "
        "server of the same stack in its own process (a bare aiohttp handler / WebSocket, a bare aioquic "
        "HTTP/3 responder, a bare grpc.aio servicer) that only echoes. The load client shares the "
        f"machine's cores with the server. CPython {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"loop (hub and bare): {loop}, measured {time.strftime('%Y-%m-%d')}.", "",
        "| door | hub req/s | p50 ms | p99 ms | bare req/s | bare p50 ms | bare p99 ms | ratio (median) "
        "| ratio spread |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, hub, bare in rows:
        ratios = sorted(h["rps"] / b["rps"] for h, b in zip(hub, bare, strict=True))
        lines.append(
            f"| {name} | {_median(hub, 'rps'):,.0f} | {_median(hub, 'p50'):.1f} | {_median(hub, 'p99'):.1f} "
            f"| {_median(bare, 'rps'):,.0f} | {_median(bare, 'p50'):.1f} | {_median(bare, 'p99'):.1f} "
            f"| {statistics.median(ratios):.2f}x | {ratios[0]:.2f}–{ratios[-1]:.2f} |")
    lines += ["", "Target: every door at least 0.6x its bare stack.", ""]
    return "\n".join(lines)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def write_section(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Doors\n.*?(?=^## |\Z)", re.S | re.M)
    updated = pattern.sub(lambda _: text + "\n", current) if pattern.search(current) else \
        current.rstrip("\n") + "\n\n" + text
    path.write_text(updated.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved hub/bare rounds per door (>= 3)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--bare", nargs=3, metavar=("PORTS_FILE", "CERT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:  # the same loop as the hub's (uvloop where available)
        runner: Any = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
        runner(serve_bare(Path(args.bare[0]), Path(args.bare[1]), Path(args.bare[2])))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-doors-") as tmp:
        state = Path(tmp)
        config = state / "hub.toml"
        config.write_text(HUB_CONFIG)
        hub = HubProcess(state, config).start(timeout=60)
        cert, key = state / "tls" / "http3-cert.pem", state / "tls" / "http3-key.pem"
        ports = state / "bare.json"
        bare = subprocess.Popen([sys.executable, "-m", "bench.doors", "--bare", str(ports), str(cert), str(key)],
                                cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while not ports.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            rows = asyncio.run(measure(hub.endpoints, json.loads(ports.read_text()), hub.admin_key, cert,
                                       args.seconds, args.concurrency, args.rounds))
        finally:
            bare.terminate()
            bare.wait(10)
            hub.stop()
    text = section(rows, args.seconds, args.concurrency)
    print(text)
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
