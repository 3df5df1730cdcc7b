"""The pipeline's cost per call, no transport: CPU of the hub's process and of its ledger writer.

N concurrent callers of ``echo`` through a real hub's parts (authentication, RBAC, rate limits,
routing, scheduling, the durable ledger entry through the writer process, the receipt), measured
as CPU time per call of each process (user + system, from /proc), which counts the pipe's syscalls
that an instruction count misses.  ``--profile`` prints cProfile's top functions of the measured
rounds (the hub's process only).

    .venv/bin/python -m bench.pipeline_cost [--calls 20000] [--concurrency 32] [--rounds 3] \\
        [--through pipeline|http_api] [--profile]

``--through http_api`` enters one step earlier: each call is an ``ApiRequest`` (the body and headers
a wrk request carries) awaited through ``HttpApi.handle`` (routing, trace id, language, the body's
decoding, ``parse_call``, the pipeline, the reply's encoding), as a door would, minus the door itself.

For a noise-free figure of the Python work, run it under callgrind twice with different
``--calls`` and divide the difference in instructions by the difference in calls (start-up
cancels out):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python -m bench.pipeline_cost \\
        --calls 500 --rounds 1     # then --calls 2500; "Collected" Ir difference / 4000 (the warm-up
                                   # runs as many calls as the round: 2 x 2000 more calls)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from daemon.api.http_api import ApiRequest, HttpApi
from daemon.core.envelope import CallRequest, Credentials
from daemon.core.pipeline import Pipeline
from daemon.hosting.module_host import ModuleHost
from daemon.runtime.assembly import open_parts
from daemon.runtime.config import HubConfig
from daemon.runtime.metrics import HubMetrics

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def measure(calls: int, concurrency: int, rounds: int, through: str = "pipeline",
                  profiler: cProfile.Profile | None = None) -> list[tuple[float, float, float]]:
    """(calls/s, hub µs CPU/call, writer µs CPU/call) per round."""
    with tempfile.TemporaryDirectory() as tmp:
        config = HubConfig.from_dict({"plans": {"starter": {"rate_limits": {"api_calls": "100000000/min"}}}})
        metrics = HubMetrics()
        async with contextlib.AsyncExitStack() as stack:
            parts = await open_parts(config, Path(tmp), metrics, stack)
            host = ModuleHost(config.modules, Path(tmp))
            await host.start()
            stack.push_async_callback(host.stop)
            pipeline = Pipeline(authenticator=parts.authenticator, usage=parts.usage, host=host, metrics=metrics)
            credentials = Credentials(api_key=parts.bootstrap_key)
            request = CallRequest(action="echo", payload={"text": "hello, edge"}, door="bench")
            per_worker = max(1, calls // concurrency)
            api = HttpApi(pipeline, metrics, readiness=lambda: {"ready": True})
            body = b'{"action":"echo","payload":{"text":"hello, edge"}}'
            api_request = ApiRequest("POST", "/v1/call", {
                "host": "127.0.0.1:8080", "x-api-key": parts.bootstrap_key or "",
                "content-type": "application/json", "content-length": str(len(body)),
            }, body, remote="127.0.0.1")

            async def worker() -> None:
                if through == "http_api":
                    for _ in range(per_worker):
                        response = await api.handle(api_request)
                        assert response.status == 200, response.body
                    return
                for _ in range(per_worker):
                    await pipeline.call(request, credentials)

            await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm: caches, limiters, JIT-less paths
            writer = parts.ledger.pid
            assert writer is not None
            results = []
            for _ in range(rounds):
                n = per_worker * concurrency
                hub0, writer0, started = cpu_s(os.getpid()), cpu_s(writer), time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                if profiler is not None:
                    profiler.disable()
                elapsed = time.perf_counter() - started
                hub, ledger = cpu_s(os.getpid()) - hub0, cpu_s(writer) - writer0
                results.append((n / elapsed, hub / n * 1e6, ledger / n * 1e6))
            return results


def main() -> None:
    """Print each round and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--through", choices=("pipeline", "http_api"), default="pipeline",
                        help="enter at Pipeline.call, or at HttpApi.handle with an ApiRequest")
    parser.add_argument("--profile", action="store_true", help="cProfile the measured rounds, print the top 35")
    args = parser.parse_args()
    import uvloop

    profiler = cProfile.Profile() if args.profile else None
    results = uvloop.run(measure(args.calls, args.concurrency, args.rounds, args.through, profiler))
    for rate, hub, writer in results:
        print(f"round: {rate:,.0f} calls/s, hub {hub:.1f} µs CPU/call, ledger writer {writer:.1f} µs CPU/call")
    print(f"median: {statistics.median(r[0] for r in results):,.0f} calls/s, "
          f"hub {statistics.median(r[1] for r in results):.1f} µs CPU/call, "
          f"ledger writer {statistics.median(r[2] for r in results):.1f} µs CPU/call")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)


if __name__ == "__main__":
    main()
