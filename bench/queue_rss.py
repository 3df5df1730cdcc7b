"""Memory under a flood against a slow module: 10,000 calls at once, the hub's RSS before, at peak, after.

    .venv/bin/python bench/queue_rss.py [--calls 10000] [--no-write]

Two hubs in turn, each serving only ``echo`` (64 slots), flooded with ``echo.stream`` calls that
each hold their slot for 20 s:

- the default ``[modules] queue_depth`` (256): 64 run, 256 wait, the rest are refused at once
  with 503 UNAVAILABLE and Retry-After — the hub's memory stays flat however many come;
- ``queue_depth = 10000``: every call is held (64 running, the rest queued), to show what one
  queued call costs.

RSS is the hub's main process (VmRSS from /proc), sampled every 50 ms; the ledger writer's
process is not counted (it holds no calls). Writes the "queue_rss" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from tests.support.hubproc import HubProcess, write_config  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def flood(hub: HubProcess, calls: int) -> dict[str, Any]:
    pid = hub.process.pid if hub.process else 0
    idle = rss_mb(pid)
    body = {"action": "echo.stream", "payload": {"steps": 2, "delay_ms": 10000}, "ttl": 60}
    statuses: dict[int, int] = {}
    peak = idle
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=90)) as session:

        async def one() -> None:
            try:
                async with session.post(f"{hub.url}/v1/call", json=body,
                                        headers={"X-API-Key": hub.admin_key}) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
            except aiohttp.ClientError:
                statuses[0] = statuses.get(0, 0) + 1

        tasks = [asyncio.create_task(one()) for _ in range(calls)]
        started = time.monotonic()
        while time.monotonic() - started < 15 and not all(t.done() for t in tasks):
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(3)  # the hub notices the closed connections and cancels their calls
    return {"idle": idle, "peak": peak, "after": rss_mb(pid), "statuses": statuses}


def run(queue_depth: int | None, calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        state = Path(tmp)
        extra = f"queue_depth = {queue_depth}\n" if queue_depth is not None else ""
        config = write_config(state / "hub.toml", modules=("echo",))
        lifted = '[log]\nlevel = "WARNING"\n[plans.starter]\nrate_limits = { api_calls = "100000000/min" }\n'
        config.write_text(config.read_text() + extra + lifted)
        hub = HubProcess(state, config).start(timeout=60)
        try:
            return asyncio.run(flood(hub, calls))
        finally:
            hub.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * args.calls + 1024  # client and hub each hold a socket per call (the hub inherits this)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    rows = []
    for label, depth in (("default queue_depth (256)", None), (f"queue_depth = {args.calls}", args.calls)):
        result = run(depth, args.calls)
        print(label, result, flush=True)
        rows.append((label, result))
    lines = [
        "## Memory under a flood against a slow module (bench/queue_rss.py)", "",
        f"{time.strftime('%Y-%m-%d')} · {args.calls:,} `echo.stream` calls at once over HTTP/1.1 (one connection "
        "each), each holding one of echo's 64 slots for 20 s. RSS of the hub's main process.", "",
        "| hub | idle MB | peak MB | after MB | answers while flooded |",
        "|---|---:|---:|---:|---|",
    ]
    for label, r in rows:
        answers = ", ".join(f"{k or 'connection error'}: {v:,}" for k, v in sorted(r["statuses"].items()))
        lines.append(f"| {label} | {r['idle']:.0f} | {r['peak']:.0f} | {r['after']:.0f} | {answers or 'none yet'} |")
    bounded, held = rows[0][1], rows[1][1]
    refused = bounded["statuses"].get(503, 0)
    per_connection = (bounded["peak"] - bounded["idle"]) * 1024 / max(1, args.calls)
    # the calls the bound refused are the ones the unbounded hub held on top
    per_queued = (held["peak"] - bounded["peak"]) * 1024 / max(1, refused)
    lines += ["", f"With the default bound, {refused:,} calls were refused at once with 503 and Retry-After "
              f"(64 running + 256 queued were held); the peak, {bounded['peak']:.0f} MB, is mostly the "
              f"{args.calls:,} open connections themselves (about {per_connection:.0f} KiB each in aiohttp). "
              f"Holding the refused calls too costs about **{per_queued:.1f} KiB per queued call** more "
              f"({held['peak']:.0f} MB at peak): the bound is what keeps a flood from growing the hub's "
              "memory with the number of callers. RSS does not return to idle after the flood: CPython "
              "keeps freed memory in its arenas for reuse.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("queue_rss", text)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
