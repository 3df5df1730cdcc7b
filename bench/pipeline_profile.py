"""Profile the pipeline alone (no HTTP): N concurrent callers of `echo` through a real hub's parts.

    .venv/bin/python bench/pipeline_profile.py [calls] [concurrency] [--profile]
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from daemon.core.envelope import CallRequest, Credentials
from daemon.core.pipeline import Pipeline
from daemon.hosting.module_host import ModuleHost
from daemon.runtime.assembly import open_parts
from daemon.runtime.config import HubConfig
from daemon.runtime.metrics import HubMetrics


async def main(calls: int, concurrency: int, profile: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = HubConfig.from_dict({"plans": {"starter": {"rate_limits": {"api_calls": "100000000/min"}}}})
        metrics = HubMetrics()
        async with contextlib.AsyncExitStack() as stack:
            parts = await open_parts(config, Path(tmp), metrics, stack)
            host = ModuleHost(config.modules, Path(tmp))
            await host.start()
            pipeline = Pipeline(authenticator=parts.authenticator, usage=parts.usage, host=host, metrics=metrics)
            credentials = Credentials(api_key=parts.bootstrap_key)
            request = CallRequest(action="echo", payload={"text": "hello, edge"}, door="bench")
            await pipeline.call(request, credentials)
            per_worker = calls // concurrency

            async def worker() -> None:
                for _ in range(per_worker):
                    await pipeline.call(request, credentials)

            profiler = cProfile.Profile() if profile else None
            started = time.perf_counter()
            cpu_started = time.process_time()
            if profiler:
                profiler.enable()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            if profiler:
                profiler.disable()
            elapsed = time.perf_counter() - started
            n = per_worker * concurrency
            cpu = time.process_time() - cpu_started
            print(f"{n / elapsed:.0f} calls/s at {concurrency} callers, {cpu / n * 1e6:.0f} us CPU/call (all threads)")
            await host.stop()
            if profiler:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(35)


if __name__ == "__main__":
    import uvloop

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    uvloop.run(main(int(args[0]) if args else 20000, int(args[1]) if len(args) > 1 else 32, "--profile" in sys.argv))
