"""Shares of a hub's event-loop thread per stage of a call, from a py-spy profile.

    py-spy record --nonblocking -r 500 --format raw -o hub.txt --pid <hub pid> --duration 10
    .venv/bin/python -m bench.profile_stages hub.txt

Only the main process's loop thread is counted (not the worker threads, not the ledger writer's
process), and only its busy samples (py-spy leaves idle ones out unless asked).  Each sample goes
to the innermost frame that names a stage, so time inside the ledger append counts as the
ledger's even though the pipeline called it; what no stage names is aiohttp and the loop.
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

#: (stage, pattern on one frame "function (file:line)"), innermost match wins; order only breaks ties
STAGES: list[tuple[str, re.Pattern[str]]] = [(name, re.compile(pattern)) for name, pattern in [
    ("ledger append: the pipe to the writer", r"LedgerProcess\.|FrameBatch\.|ledger/child\.py"),
    ("usage record: event, checks", r"UsageGate\.record|ledger/events\.py"),
    ("admission: rate limits, credits", r"UsageGate\.|metering/ratelimit\.py"),
    ("authentication", r"tenancy/(authn|cache|secrets|guard)\.py|Pipeline\.authenticate"),
    ("RBAC", r"tenancy/rbac\.py"),
    ("envelope, ids", r"Pipeline\._envelope|core/envelope\.py|<fast_init "),
    ("routing, input check", r"core/router\.py|Pipeline\._(admit_stages|route|checked|check_input)|schema|jsonschema"),
    ("scheduling", r"core/scheduler\.py"),
    ("module: echo", r"hosting/module_host\.py|modules/"),
    ("result encoding", r"encode_json|result_body|json/encoder\.py"),
    ("call scope: metrics, trace, feed", r"_CallScope|runtime/metrics\.py|prometheus_client"),
    ("pipeline glue", r"core/pipeline\.py"),
    ("JSON decoding", r"core/decoding\.py|json/decoder\.py"),
    ("HTTP API: parse, headers", r"api/http_api\.py|core/i18n\.py|console/routes\.py"),
    ("door: the request in, the answer out", r"doors/http1?(_wire)?\.py"),
]]
OTHER = "uvloop, aiohttp, the kernel"


def stage_of(frames: list[str]) -> str:
    """The stage of one sample: its innermost frame that a stage names."""
    for frame in reversed(frames):
        for name, pattern in STAGES:
            if pattern.search(frame):
                return name
    return OTHER


def shares(path: Path) -> tuple[int, collections.Counter[str]]:
    """(busy samples of the main process's loop thread, samples per stage)."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if stack.count("process ") > 1 or not frames or "Thread._bootstrap" in frames[0]:
            continue  # a child process (the ledger writer) or a worker thread
        total += int(n)
        counts[stage_of(frames)] += int(n)
    return total, counts


def main() -> None:
    """Print a Markdown table of the shares for each profile given."""
    results = [(Path(p).name, *shares(Path(p))) for p in sys.argv[1:]]
    names = [name for name, _ in STAGES] + [OTHER]
    print("| stage | " + " | ".join(name for name, _, _ in results) + " |")
    print("|---|" + "---:|" * len(results))
    for stage in names:
        print(f"| {stage} | " + " | ".join(f"{100 * c[stage] / max(1, t):.1f} %" for _, t, c in results) + " |")
    print("| busy samples | " + " | ".join(str(t) for _, t, _ in results) + " |")


if __name__ == "__main__":
    main()
