"""WebSocket, MCP, HTTP/3 and gRPC: the hub against a bare server of each stack, one core each side.

The server under test, with all its processes (the hub, its ledger writer, its threads; or the
bare servers of ``bench/doors.py --bare``), is pinned with ``taskset`` to one core; the load
client runs in its own process pinned to the other.  Per door, bare and hub rounds are
interleaved (bare, hub, bare, hub, ...), and the figures are medians with their spread.  The
hub runs its default configuration (logging included) except that the benchmark tenant's
plan limits are lifted and mDNS is off.

    .venv/bin/python -m bench.door_ratios [--doors ws,mcp,http3,grpc] [--seconds 5] [--rounds 3]
                                          [--concurrency 32] [--warm 1] [--write]

About (seconds + warm + 1.5) × 2 × rounds × doors of wall time, plus ~5 s to start: 3 min 20 s
at the defaults.  Exit 1 when a round fails (a client error, a wrong answer, a timeout); exit 2
when the machine cannot run it (fewer than two cores, no taskset).

The load clients are async Python (no compiled client exists here for these doors), one
process, ``--concurrency`` callers, each waiting for its answer before the next call:

- ws: aiohttp's WebSocket client, one socket per caller, header auth (uvloop);
- mcp: aiohttp ``POST /mcp`` ``tools/call`` with protocol 2026-07-28 per-request ``_meta``, no
  session (uvloop); the bare side is an aiohttp handler of the same JSON-RPC shape, not the SDK;
- http3: aioquic's client (``H3ClientProtocol``), one QUIC connection per caller (uvloop);
- grpc: grpc.aio, one channel (one HTTP/2 connection) shared by all callers (asyncio loop).

Each row also gives the client's CPU use during the measured window: near 100 % the client,
not the server, is the bottleneck (on the bare side it usually is: the ratio is then a lower
bound), and the server's CPU per call (user + sys of all its processes over the window).
``--write`` puts the table in the "door_ratios" section of docs/benchmarks.md (only for a run
on an otherwise quiet machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.doors import HUB_CONFIG  # noqa: E402
from bench.report import write_section  # noqa: E402
from tests.support.hubproc import HubProcess  # noqa: E402

DOORS = ("ws", "mcp", "http3", "grpc")
LABELS = {"ws": "WebSocket /v1/ws (aiohttp)", "mcp": "MCP 2026-07-28 tools/call (aiohttp)",
          "http3": "HTTP/3 /v1/call (aioquic)", "grpc": "gRPC unary Call (grpc.aio)"}
CLIENTS = {"ws": "aiohttp WS, 1 socket/caller, uvloop", "mcp": "aiohttp POST /mcp, uvloop",
           "http3": "aioquic, 1 QUIC conn/caller, uvloop", "grpc": "grpc.aio, 1 shared channel, asyncio"}
TICK = os.sysconf("SC_CLK_TCK")


# -- the load client (its own process, pinned by the parent) --------------------------------------
async def client_main(door: str, url: str, key: str, cafile: Path, seconds: float, warm: float,
                      concurrency: int) -> dict[str, Any]:
    """Warm, say START, measure ``seconds``; the figures of the measured window."""
    from bench import doors

    factories = {"ws": lambda: doors.ws_client(url, key), "mcp": lambda: doors.mcp_client(url, key),
                 "http3": lambda: doors.h3_client(url, key, cafile), "grpc": lambda: doors.grpc_client(url, key)}
    make = factories[door]()
    latencies: list[float] = []
    phase = {"measuring": False, "stop": False}
    ready = asyncio.Event()
    connected = 0

    async def worker() -> None:
        nonlocal connected
        async with make() as request:
            await request()
            connected += 1
            if connected == concurrency:
                ready.set()
            await ready.wait()
            while not phase["stop"]:
                began = time.perf_counter()
                await request()
                if phase["measuring"]:
                    latencies.append(time.perf_counter() - began)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    waiter = asyncio.ensure_future(ready.wait())
    done, _ = await asyncio.wait([waiter, *tasks], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        for task in tasks:
            task.cancel()
        failed = [t for t in done if t is not waiter and t.exception()]
        raise RuntimeError(f"callers did not connect: {failed[0].exception() if failed else 'timeout'}")
    await asyncio.sleep(warm)
    print("START", flush=True)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    phase["measuring"] = True
    await asyncio.sleep(seconds)
    phase["measuring"] = False
    cpu1, wall1 = time.process_time(), time.perf_counter()
    phase["stop"] = True
    await asyncio.wait_for(asyncio.gather(*tasks), 30)  # re-raises any caller's failure
    elapsed = wall1 - wall0
    latencies.sort()
    n = len(latencies)
    if n == 0:
        raise RuntimeError("no call completed in the measured window")
    return {"rps": n / elapsed, "p50": latencies[n // 2] * 1000, "p99": latencies[max(0, int(n * 0.99) - 1)] * 1000,
            "n": n, "client_cpu": (cpu1 - cpu0) / elapsed}


def run_client(args: argparse.Namespace) -> int:
    door, url, key, cafile = args.client
    runner: Any = asyncio.run
    if door != "grpc":  # grpc.aio's completion queue wants the default loop
        import uvloop

        runner = uvloop.run
    result = runner(client_main(door, url, key, Path(cafile), args.seconds, args.warm, args.concurrency))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the orchestrator -------------------------------------------------------------------------------
def tree_cpu(pid: int) -> float:
    """User + sys seconds of ``pid`` and its live descendants (the hub's ledger writer)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
        todo += children.get(current, [])
    return total


def one_round(door: str, url: str, key: str, cafile: Path, server_pid: int, core: str,
              args: argparse.Namespace) -> dict[str, Any]:
    """A pinned client process against ``url``; its figures plus the server's CPU µs per call."""
    command = ["taskset", "-c", core, sys.executable, "-m", "bench.door_ratios", "--client", door, url, key,
               str(cafile), "--seconds", str(args.seconds), "--warm", str(args.warm),
               "--concurrency", str(args.concurrency)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(args.seconds + args.warm + 60, proc.kill)  # a hung client fails the round
    watchdog.start()
    cpu_start: float | None = None
    result: dict[str, Any] | None = None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if line.startswith("START"):
                cpu_start = tree_cpu(server_pid)
            elif line.startswith("RESULT "):
                cpu_end = tree_cpu(server_pid)
                result = json.loads(line[7:])
                if cpu_start is not None:  # the window ends a little before RESULT: a slight overestimate
                    result["server_us"] = (cpu_end - cpu_start) / result["n"] * 1e6
        proc.wait()
    finally:
        watchdog.cancel()
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"{door} client against {url} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    return result


def spread(values: list[float], fmt: str) -> str:
    return f"{min(values):{fmt}}–{max(values):{fmt}}"


def table(rows: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]], args: argparse.Namespace,
          cores: tuple[str, str]) -> str:
    def med(runs: list[dict[str, Any]], field: str) -> float:
        return statistics.median(r.get(field, float("nan")) for r in runs)

    lines = [f"Load clients on core {cores[0]}, servers (all processes) on core {cores[1]}; "
             f"{args.concurrency} callers, {args.seconds:g} s per round after {args.warm:g} s warm, "
             f"{args.rounds} interleaved rounds (bare, hub, ...), medians (spread).", "",
             "| door | client | bare req/s | hub req/s | ratio | bare p50/p99 ms | hub p50/p99 ms "
             "| client CPU bare/hub | server CPU µs/call bare/hub | CPU ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for door, (bare, hub) in rows.items():
        ratios = [h["rps"] / b["rps"] for h, b in zip(hub, bare, strict=True)]
        lines.append(
            f"| {LABELS[door]} | {CLIENTS[door]} "
            f"| {med(bare, 'rps'):,.0f} ({spread([r['rps'] for r in bare], ',.0f')}) "
            f"| {med(hub, 'rps'):,.0f} ({spread([r['rps'] for r in hub], ',.0f')}) "
            f"| {med(hub, 'rps') / med(bare, 'rps'):.2f}x ({spread(ratios, '.2f')}) "
            f"| {med(bare, 'p50'):.2f} / {med(bare, 'p99'):.2f} | {med(hub, 'p50'):.2f} / {med(hub, 'p99'):.2f} "
            f"| {med(bare, 'client_cpu'):.0%} / {med(hub, 'client_cpu'):.0%} "
            f"| {med(bare, 'server_us'):.0f} / {med(hub, 'server_us'):.0f} "
            f"| {med(bare, 'server_us') / med(hub, 'server_us'):.2f}x |")
    lines += ["", "CPU ratio: bare µs/call ÷ hub µs/call, what the req/s ratio would be with each server "
              "saturating its core (the hub's figure counts all its processes, the ledger writer included)."]
    saturated = [LABELS[d] for d, (bare, _) in rows.items() if med(bare, "client_cpu") > 0.9]
    if saturated:
        lines += ["", "Client-bound (client CPU > 90 % on the bare side, so bare req/s and the ratio understate "
                  "the server; compare server CPU µs/call instead): " + ", ".join(saturated) + "."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doors", default=",".join(DOORS))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warm", type=float, default=1.0, help="seconds of load before each measured window")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--client", nargs=4, metavar=("DOOR", "URL", "KEY", "CAFILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return run_client(args)
    doors = [d.strip() for d in args.doors.split(",") if d.strip()]
    if unknown := [d for d in doors if d not in DOORS]:
        parser.error(f"unknown doors {unknown}; pick from {','.join(DOORS)}")
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2 or shutil.which("taskset") is None:
        print("needs two cores and taskset (util-linux)", file=sys.stderr)
        return 2
    cores = (str(allowed[0]), str(allowed[1]))
    started = time.monotonic()
    rows: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-door-ratios-") as tmp:
        state = Path(tmp)
        config = state / "hub.toml"
        config.write_text(HUB_CONFIG.replace('[log]\nlevel = "WARNING"\n', ""))  # the default log level
        hub = HubProcess(state, config, wrapper=["taskset", "-c", cores[1]]).start(timeout=60)
        cert, key = state / "tls" / "http3-cert.pem", state / "tls" / "http3-key.pem"
        ports = state / "bare.json"
        bare = subprocess.Popen(["taskset", "-c", cores[1], sys.executable, "-m", "bench.doors", "--bare",
                                 str(ports), str(cert), str(key)], cwd=ROOT)
        failed = False
        try:
            deadline = time.monotonic() + 30
            while not ports.exists() and time.monotonic() < deadline and bare.poll() is None:
                time.sleep(0.05)
            if not ports.exists():
                raise RuntimeError("the bare servers did not start")
            bare_ep = json.loads(ports.read_text())
            hub_pid = hub.process.pid if hub.process else 0
            urls = {"ws": ("http", "http"), "mcp": ("http", "http"), "http3": ("http3", "http3"),
                    "grpc": ("grpc", "grpc")}
            for door in doors:
                hub_runs: list[dict[str, Any]] = []
                bare_runs: list[dict[str, Any]] = []
                for n in range(args.rounds):
                    bare_runs.append(one_round(door, bare_ep[urls[door][1]], hub.admin_key, cert, bare.pid,
                                               cores[0], args))
                    hub_runs.append(one_round(door, hub.endpoints[urls[door][0]], hub.admin_key, cert, hub_pid,
                                              cores[0], args))
                    b, h = bare_runs[-1], hub_runs[-1]
                    print(f"{door:5s} round {n + 1}: bare {b['rps']:8,.0f}/s ({b['server_us']:4.0f} µs/call, client "
                          f"{b['client_cpu']:.0%}) | hub {h['rps']:8,.0f}/s ({h['server_us']:4.0f} µs/call, client "
                          f"{h['client_cpu']:.0%}, p99 {h['p99']:.1f} ms) | ratio {h['rps'] / b['rps']:.2f}x",
                          flush=True)
                rows[door] = (bare_runs, hub_runs)
        except RuntimeError as exc:
            print(f"FAIL: {exc}", file=sys.stderr)
            failed = True
        finally:
            bare.terminate()
            bare.wait(10)
            hub.stop()
    if rows:
        text = table(rows, args, cores)
        print()
        print(text)
        if args.write and not failed:
            write_section("door_ratios", f"## The other doors against their bare stacks, one core each side "
                          f"(bench/door_ratios.py)\n\n{time.strftime('%Y-%m-%d')} · " + text)
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
