"""Memory per idle WebSocket and per idle MCP session, and RSS under 1,000 WebSocket clients calling.

    .venv/bin/python -m bench.session_memory [--n 1000] [--seconds 10] [--no-write]

Three fresh hubs in turn (a fresh one each, so memory freed by one measurement is not reused by
the next), each warmed first by a few calls through the door measured:

1. ``--n`` authenticated ``/v1/ws`` sockets (``X-API-Key`` at the upgrade), opened then left idle:
   (RSS with them open − RSS before) / n;
2. ``--n`` MCP sessions (protocol 2025-11-25: ``initialize``, ``notifications/initialized``, then
   nothing; streamable HTTP holds no connection per session, the client's pool keeps 32);
3. ``--n`` WebSocket clients each calling ``echo`` back to back for ``--seconds``: RSS before,
   peak (sampled every 50 ms) and after, and the calls/s they got.

RSS is VmRSS of the hub's main process (the ledger writer's process holds no connection; its
RSS is printed apart).  The clients all run in this process, on their own event loop, not in
the hub's.  Caps lifted for the bench and only for it: the starter plan's api_calls rate
(``100000000/min``) and ``[mcp] max_sessions`` / ``max_sessions_per_tenant`` (4 × n: the
defaults, 1024 and 64 per tenant, would end or refuse sessions).  The hub has no per-IP or
per-tenant cap on WebSocket sockets.  RLIMIT_NOFILE is raised for this process and the hub
(which inherits it).  About 1 minute at the defaults.  Writes the "session_memory" section of
docs/benchmarks.md (RSS does not depend on how busy the machine is, unlike req/s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from tests.support.hubproc import HubProcess, write_config  # noqa: E402

CALL = json.dumps({"id": "1", "action": "echo", "payload": {"n": 1, "text": "hello"}})
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def writer_pid(hub_pid: int) -> int | None:
    """The hub's ledger writer (its child process), if any."""
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{hub_pid}/task/{hub_pid}/children").read_text().split():
            return int(child)
    return None


@contextlib.contextmanager
def hub(n: int) -> Any:
    with tempfile.TemporaryDirectory(prefix="bench-session-mem-") as tmp:
        state = Path(tmp)
        config = write_config(state / "hub.toml", modules=("echo",))
        config.write_text(config.read_text() + f"[mcp]\nmax_sessions = {4 * n}\nmax_sessions_per_tenant = {4 * n}\n"
                          "[plans.starter]\nrate_limits = { api_calls = \"100000000/min\" }\n")
        process = HubProcess(state, config).start(timeout=60)
        try:
            yield process
        finally:
            process.stop()


async def settle(pid: int) -> int:
    """RSS once the hub has had a moment to finish what it was doing."""
    await asyncio.sleep(2)
    return rss_kib(pid)


@contextlib.asynccontextmanager
async def sockets(url: str, key: str, n: int) -> AsyncIterator[list[aiohttp.ClientWebSocketResponse]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers={"X-API-Key": key},
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        opened: list[aiohttp.ClientWebSocketResponse] = []
        gate = asyncio.Semaphore(64)  # do not flood the listen backlog

        async def one() -> None:
            async with gate:
                opened.append(await session.ws_connect(f"{url}/v1/ws", autoping=True))

        await asyncio.gather(*(one() for _ in range(n)))
        try:
            yield opened
        finally:
            await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)


async def call(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_str(CALL)
    message = await ws.receive()
    frame = json.loads(message.data)
    if frame.get("type") != "result":
        raise RuntimeError(f"a call failed: {frame}")


async def idle_ws(process: HubProcess, n: int) -> dict[str, Any]:
    pid = _pid(process)
    async with sockets(process.url, process.admin_key, 8) as warm:
        for ws in warm:
            await call(ws)
    before = await settle(pid)
    async with sockets(process.url, process.admin_key, n):
        opened = await settle(pid)
    return {"before": before, "open": opened, "per_kib": (opened - before) / n}


async def idle_mcp(process: HubProcess, n: int) -> dict[str, Any]:
    pid = _pid(process)
    url = f"{process.url}/mcp"
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector, headers={"X-API-Key": process.admin_key, **MCP_HEADERS},
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def open_session() -> str:
            async with session.post(url, json=INIT) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"initialize: {resp.status} {await resp.text()}")
                session_id = resp.headers["Mcp-Session-Id"]
                version = (await resp.json())["result"]["protocolVersion"]
            headers = {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": version}
            async with session.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                                    headers=headers) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"notifications/initialized: {resp.status} {await resp.text()}")
            return session_id

        ids = [await open_session() for _ in range(8)]  # warm: the code paths, the pool's connections
        await asyncio.gather(*(session.delete(url, headers={"Mcp-Session-Id": i}) for i in ids))
        before = await settle(pid)
        await asyncio.gather(*(open_session() for _ in range(n)))
        opened = await settle(pid)
    return {"before": before, "open": opened, "per_kib": (opened - before) / n}


async def busy_ws(process: HubProcess, n: int, seconds: float) -> dict[str, Any]:
    pid = _pid(process)
    async with sockets(process.url, process.admin_key, 8) as warm:
        for ws in warm:
            await call(ws)
    before = await settle(pid)
    calls = 0
    peak = before
    async with sockets(process.url, process.admin_key, n) as opened:
        connected = rss_kib(pid)
        stop_at = time.monotonic() + seconds

        async def loop(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal calls
            while time.monotonic() < stop_at:
                await call(ws)
                calls += 1

        workers = asyncio.gather(*(loop(ws) for ws in opened))
        while not workers.done():
            peak = max(peak, rss_kib(pid))
            await asyncio.wait([workers], timeout=0.05)
        await workers  # re-raises a failed call
    after = await settle(pid)
    return {"before": before, "connected": connected, "peak": peak, "after": after, "rate": calls / seconds,
            "writer": rss_kib(w) if (w := writer_pid(pid)) else None}


def _pid(process: HubProcess) -> int:
    assert process.process is not None
    return process.process.pid


def measure(n: int, what: Callable[[HubProcess], Any]) -> dict[str, Any]:
    with hub(n) as process:
        result: dict[str, Any] = asyncio.run(what(process))
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 4 * args.n + 1024  # client and hub each hold a socket per connection (the hub inherits this)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        print(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} needed", file=sys.stderr)
        return 2
    gc.collect()
    ws = measure(args.n, lambda p: idle_ws(p, args.n))
    print("idle WebSockets", ws, flush=True)
    mcp = measure(args.n, lambda p: idle_mcp(p, args.n))
    print("idle MCP sessions", mcp, flush=True)
    busy = measure(args.n, lambda p: busy_ws(p, args.n, args.seconds))
    print("busy WebSockets", busy, flush=True)
    mib = 1024
    text = f"""## Memory per idle session, and under {args.n:,} WebSocket clients (bench/session_memory.py)

{time.strftime('%Y-%m-%d')} · RSS (VmRSS) of the hub's main process, a fresh hub per row, warmed by a few calls
first; (RSS with them open − RSS before) / n. WebSockets authenticate with `X-API-Key` at the upgrade; MCP
sessions are `initialize` + `notifications/initialized` (2025-11-25), then idle: streamable HTTP holds no
connection per session (the client's pool keeps 32). Lifted for the bench only: the plan's api_calls rate and
`[mcp] max_sessions` / `max_sessions_per_tenant` (4 × n; the defaults, 1,024 and 64 per tenant, would end or
refuse sessions); the hub has no per-IP or per-tenant cap on WebSocket sockets. Clients in the bench's own
process.

| what ({args.n:,} of them) | hub RSS before MiB | with them MiB | per one |
|---|---:|---:|---:|
| idle authenticated /v1/ws sockets | {ws['before'] / mib:.1f} | {ws['open'] / mib:.1f} | {ws['per_kib']:.1f} KiB |
| idle MCP sessions (2025-11-25) | {mcp['before'] / mib:.1f} | {mcp['open'] / mib:.1f} | {mcp['per_kib']:.1f} KiB |

{args.n:,} WebSocket clients calling `echo` back to back for {args.seconds:g} s ({busy['rate']:,.0f} calls/s, all
clients in one Python process sharing the machine with the hub): hub RSS {busy['before'] / mib:.1f} MiB before,
{busy['connected'] / mib:.1f} MiB connected, **{busy['peak'] / mib:.1f} MiB at peak**, {busy['after'] / mib:.1f} MiB
after they closed (CPython keeps freed memory in its arenas); the ledger writer process
{(busy['writer'] or 0) / mib:.1f} MiB.
"""
    print(text)
    if not args.no_write:
        write_section("session_memory", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
