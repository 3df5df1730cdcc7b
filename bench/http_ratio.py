"""HTTP/1.1 ``POST /v1/call`` → ``echo``: the hub against a bare aiohttp handler, one core each side.

wrk runs pinned to one core (``taskset``); the server under test, with all its processes (the
hub, its ledger writer, its threads; or ``bench/bare_http.py``), is pinned to another.  Hub and
bare rounds are interleaved (bare, hub, bare, hub, ...) and the figures are medians with their
spread.  The hub runs its default configuration (logging included) except that the benchmark
tenant's plan limits are lifted and mDNS is off.

    .venv/bin/python -m bench.http_ratio [--seconds 10] [--rounds 3] [--connections 32] [--min-ratio X]

``make bench-check`` runs it for about 20 seconds of load (2 rounds of 5 s each side) and fails
when the ratio of the medians is below 0.5.  Exit 2: the machine cannot run it (no wrk, one core).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.hubproc import HubProcess  # noqa: E402

HUB_CONFIG = """
[http]
listen = "127.0.0.1:0"
[http3]
listen = "127.0.0.1:0"
[grpc]
listen = "127.0.0.1:0"
[mdns]
enabled = false
[modules]
enabled = ["echo"]
[plans.starter]
rate_limits = { api_calls = "100000000/min" }
"""
BODY = '{"action":"echo","payload":{"text":"hello, edge"}}'


def cores() -> tuple[str, str]:
    """(the load client's core, the server's core): the first two this process may run on."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        sys.exit("needs two cores: one for wrk, one for the server")
    return str(allowed[0]), str(allowed[1])


def wrk(url: str, script: Path, seconds: float, connections: int, core: str) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of one wrk run; exits when any answer was not 2xx."""
    out = subprocess.run(["taskset", "-c", core, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                          "-s", str(script), f"{url}/v1/call"], capture_output=True, text=True, check=True).stdout
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        sys.exit(f"non-2xx answers during the run: {m.group(1)}\n{out}")

    def ms(label: str) -> float:
        found = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        assert found, out
        value, unit = float(found.group(1)), found.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, out
    return float(rps.group(1)), ms("50"), ms("99")


def lua(path: Path, key: str) -> Path:
    """A wrk script that posts the echo call with ``key``."""
    path.write_text(f"wrk.method = \"POST\"\nwrk.body = '{BODY}'\n"
                    f"wrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"X-API-Key\"] = \"{key}\"\n")
    return path


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Until something accepts on 127.0.0.1:``port``."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def free_port() -> int:
    """A port nobody listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spread(values: list[float], fmt: str) -> str:
    """``min–max`` of ``values``."""
    return f"{min(values):{fmt}}–{max(values):{fmt}}"


def main() -> int:
    """Run the interleaved rounds, print the table; non-zero below ``--min-ratio``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--min-ratio", type=float, default=0.0, help="fail (exit 1) below this hub/bare ratio")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("wrk and taskset are needed (apt-get install wrk util-linux)", file=sys.stderr)
        return 2
    client_core, server_core = cores()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "hub.toml").write_text(HUB_CONFIG)
        (work / "state").mkdir()
        hub = HubProcess(state_dir=work / "state", config_path=work / "hub.toml",
                         wrapper=["taskset", "-c", server_core]).start()
        bare_port = free_port()
        bare = subprocess.Popen(["taskset", "-c", server_core, sys.executable, str(ROOT / "bench" / "bare_http.py"),
                                 str(bare_port)])
        try:
            wait_port(bare_port)
            script = lua(work / "post.lua", hub.admin_key)
            bare_url = f"http://127.0.0.1:{bare_port}"
            for url in (hub.url, bare_url):  # warm both: caches, limiters, the first ledger batches
                wrk(url, script, 2, args.connections, client_core)
            hub_runs: list[tuple[float, float, float]] = []
            bare_runs: list[tuple[float, float, float]] = []
            for n in range(args.rounds):
                bare_runs.append(wrk(bare_url, script, args.seconds, args.connections, client_core))
                hub_runs.append(wrk(hub.url, script, args.seconds, args.connections, client_core))
                print(f"round {n + 1}: bare {bare_runs[-1][0]:,.0f} req/s p99 {bare_runs[-1][2]:.2f} ms | "
                      f"hub {hub_runs[-1][0]:,.0f} req/s p99 {hub_runs[-1][2]:.2f} ms | "
                      f"ratio {hub_runs[-1][0] / bare_runs[-1][0]:.2f}x", flush=True)
        finally:
            bare.terminate()
            bare.wait()
            hub.stop()
    med = [statistics.median(r[i] for r in hub_runs) for i in range(3)]
    bmed = [statistics.median(r[i] for r in bare_runs) for i in range(3)]
    ratios = [h[0] / b[0] for h, b in zip(hub_runs, bare_runs, strict=True)]
    ratio = med[0] / bmed[0]
    print(f"\nwrk -t1 -c{args.connections} -d{args.seconds:g}s on core {client_core}, servers on core {server_core}, "
          f"{args.rounds} interleaved rounds, medians (spread)")
    print("| server | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    for name, runs, m in (("bare aiohttp handler", bare_runs, bmed), ("democratic-ai hub", hub_runs, med)):
        print(f"| {name} | {m[0]:,.0f} ({spread([r[0] for r in runs], ',.0f')}) | {m[1]:.2f} | "
              f"{m[2]:.2f} ({spread([r[2] for r in runs], '.2f')}) |")
    print(f"ratio hub / bare: {ratio:.2f}x (rounds {spread(ratios, '.2f')})")
    if ratio < args.min_ratio:
        print(f"FAIL: {ratio:.2f}x is below {args.min_ratio:.2f}x", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
