"""Ledger group commit: durable events/s under 64 concurrent callers vs a bare executemany.

    .venv/bin/python bench/ledger.py [--runs 5] [--callers 64] [--per-caller 200] [--no-write]

Each run: 64 tasks each await ``append`` in a loop (every await returns only after its batch
is fsynced, synchronous=FULL, WAL), twice: through ``LedgerProcess``, the writer process
the hub ships (msgpack over its pipe), and with ``UsageLedger`` in a thread of the caller's
process.  The baseline
inserts the very same rows (read back from that run's ledger) into a fresh file
with the same schema and pragmas with ONE executemany and ONE commit: the
ceiling for SQLite on this disk, with no durability per caller at all.
Medians of the runs go to docs/benchmarks.md, section "Ledger group commit".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from daemon.metering.ledger.chain import INSERT, SCHEMA, SELECT, apply_pragmas, verify
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.process import LedgerProcess
from daemon.metering.ledger.writer import UsageLedger
from daemon.runtime.config import LedgerConfig

SECTION = "## Ledger group commit"


async def drive(ledger: UsageLedger | LedgerProcess, callers: int, per_caller: int) -> float:
    """``callers`` concurrent callers, each awaiting ``per_caller`` appends: durable events/s."""

    async def caller(i: int) -> None:
        for _ in range(per_caller):
            await ledger.append(UsageEvent(tenant_id=f"tenant-{i % 8}", subject=f"key:k{i}",
                                           action="text.summarize", module="text.summarize",
                                           plan="starter", compute_ms=12.5, bytes_in=512, bytes_out=256))

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    return callers * per_caller / (time.perf_counter() - started)


async def group_commit(path: Path, callers: int, per_caller: int) -> tuple[float, float]:
    """The in-thread writer: events/s and the mean batch size."""
    registry = CollectorRegistry()
    async with UsageLedger(path, LedgerConfig(), registry) as ledger:
        rate = await drive(ledger, callers, per_caller)
    batches = registry.get_sample_value("democratic_ai_ledger_batch_size_count") or 1
    return rate, callers * per_caller / batches


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def through_the_pipe(path: Path, callers: int, per_caller: int) -> tuple[float, float, float]:
    """The shipped path: the hub's side of the pipe to the writer's own process.

    Durable events/s, and CPU µs per event of the writer process and of the callers' process.
    """
    async with LedgerProcess(path, LedgerConfig()) as ledger:
        pid = ledger.pid
        assert pid is not None
        child0, own0 = cpu_s(pid), cpu_s(os.getpid())
        rate = await drive(ledger, callers, per_caller)
        child, own = cpu_s(pid) - child0, cpu_s(os.getpid()) - own0
    n = callers * per_caller
    return rate, child / n * 1e6, own / n * 1e6


def bare_executemany(source: Path, target: Path) -> float:
    rows = sqlite3.connect(source).execute(f"{SELECT} ORDER BY seq").fetchall()
    conn = sqlite3.connect(target, isolation_level=None)
    apply_pragmas(conn)
    conn.executescript(SCHEMA)
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(INSERT, rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


def runner() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    try:
        import uvloop  # the daemon runs on uvloop where available

        return uvloop.run  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.run


def write_section(doc: Path, body: str) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        # the section ends at the next heading or at another bench's marker, which stays
        ends = [i for i in (text.find("\n## ", start + len(SECTION)), text.find("\n<!-- ", start)) if i >= 0]
        end = min(ends, default=-1)
        text = text[:start] + body + ("\n" + text[end + 1:] if end >= 0 else "")
    doc.write_text(text.rstrip("\n") + "\n")


def process_only(run: Callable[[Coroutine[Any, Any, Any]], Any], runs: int, callers: int, per_caller: int) -> int:
    """Only the shipped writer process: events/s, and CPU per event of each side, per run and median."""
    results = []
    for i in range(runs):
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
            results.append(run(through_the_pipe(Path(tmp) / "process.db", callers, per_caller)))
            assert verify(Path(tmp) / "process.db").ok
        rate, child, own = results[-1]
        print(f"run {i + 1}: writer process {rate:,.0f} durable events/s, writer {child:.1f} µs CPU/event, "
              f"callers' process {own:.1f} µs CPU/event", flush=True)
    print(f"median: {statistics.median(r[0] for r in results):,.0f} events/s, "
          f"writer {statistics.median(r[1] for r in results):.1f} µs CPU/event, "
          f"callers {statistics.median(r[2] for r in results):.1f} µs CPU/event")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--per-caller", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    parser.add_argument("--process-only", action="store_true",
                        help="only the writer process (events/s, CPU per event); implies --no-write")
    args = parser.parse_args()
    run = runner()
    if args.process_only:
        return process_only(run, args.runs, args.callers, args.per_caller)
    durable, shipped, bare, per_batch, child_cpu = [], [], [], [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
            piped, child_us, _ = run(through_the_pipe(Path(tmp) / "process.db", args.callers, args.per_caller))
            assert verify(Path(tmp) / "process.db").ok
            ledger_path = Path(tmp) / "ledger.db"
            rate, batch = run(group_commit(ledger_path, args.callers, args.per_caller))
            assert verify(ledger_path).ok
            ceiling = bare_executemany(ledger_path, Path(tmp) / "bare.db")
        durable.append(rate)
        shipped.append(piped)
        child_cpu.append(child_us)
        bare.append(ceiling)
        per_batch.append(batch)
        print(f"run {i + 1}: writer process {piped:,.0f} ({child_us:.1f} µs CPU/event), "
              f"in-thread group commit {rate:,.0f} durable events/s "
              f"(mean batch {batch:.1f}), bare executemany {ceiling:,.0f} rows/s", flush=True)
    med_p, med_d, med_b = statistics.median(shipped), statistics.median(durable), statistics.median(bare)
    ratio = med_d / med_b
    print(f"median: writer process {med_p:,.0f}, in-thread {med_d:,.0f} durable events/s "
          f"vs {med_b:,.0f} rows/s bare ({ratio:.1%})")
    cpu_runs = ", ".join(f"{x:.1f}" for x in child_cpu)
    body = f"""{SECTION}

`bench/ledger.py`: {args.callers} concurrent callers, each awaiting `append` {args.per_caller}
times ({args.callers * args.per_caller:,} events a run); every await returns only after its batch is
committed with WAL + `synchronous=FULL` (fsync), hash chain included. Twice: through `LedgerProcess`,
the writer process the hub ships (msgpack over its pipe, receipts after the commit), and with
`UsageLedger` in a thread of the callers' own process. The baseline inserts the very same
rows into a fresh file, same schema and pragmas, with one `executemany` and one commit: SQLite's ceiling
on this disk, durable for nobody until the end. Medians of {args.runs} runs, on
{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, loop: {run.__module__},
`batch_max` {LedgerConfig().batch_max}, `batch_delay_ms` {LedgerConfig().batch_delay_ms}, measured
{time.strftime("%Y-%m-%d")}.

| | events/s (median) | runs |
|---|---:|---|
| writer process through its pipe (what the hub ships) | {med_p:,.0f} | {", ".join(f"{x:,.0f}" for x in shipped)} |
| group-commit writer in a thread, durable per caller | {med_d:,.0f} | {", ".join(f"{x:,.0f}" for x in durable)} |
| bare `executemany`, one commit | {med_b:,.0f} | {", ".join(f"{x:,.0f}" for x in bare)} |
| ratio, in-thread / bare | {ratio:.1%} | |
| ratio, writer process / bare | {med_p / med_b:.1%} | |
| writer process CPU per event (user + system, /proc) | {statistics.median(child_cpu):.1f} µs | {cpu_runs} |

Mean events per commit of the in-thread writer (one fsync each): {statistics.median(per_batch):.1f}.
Target: 10,000 durable events/s on a 2-core box. The box is shared with other work (other test runs
at the same time), so single runs spread widely; the writer's CPU per event is the steadier figure.
The writer process has no event loop: one thread reads the pipe and turns each read into prepared
entries, the other commits them (one fsync a batch) and writes the batch's receipts in one frame.
In the hub the loop is busy with the doors, and the writer's own process keeps its commits from
waiting for that loop's GIL.
"""
    if not args.no_write:
        write_section(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
