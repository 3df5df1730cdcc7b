"""Federation benchmark: what a hop to a fleet peer costs, and how fast peers come and go.

    .venv/bin/python -m bench.federation [--rounds 5] [--reps 3] [--no-netns] [--no-write]

In one run, on loopback, with real ``democratic-ai serve`` processes (each its own state dir, node
key and fleet certificate):

1. ``echo`` over HTTP/1.1 (aiohttp, one keep-alive session) at 1 caller (p50/p99) and 32 callers
   (calls/s, p50/p99): a hub serving echo itself against an origin with no echo that forwards
   every call to a peer that has it, rounds interleaved.  The TCP connections between origin and
   peer are counted from /proc/net/tcp before and after the load; an in-process pair of
   ``Libp2pNode`` shows the link streams a thousand frames open.
2. The asyncio <-> trio bridge (``federation/transport/bridge.py``) in this process: round trips
   one at a time and 32 in flight, at CPython's default 5 ms switch interval and at the 0.5 ms the
   hub sets when it federates.  The same switch intervals on real hubs: the forwarded echo with the
   interval left at 5 ms, and a local hub at 0.5 ms (a hub is started through this script with
   ``--as-hub INTERVAL``, which sets it before ``democratic-ai serve`` runs).
3. Bootstrap: from an origin's process start to its /v1/capabilities listing the peer's echo.
4. A peer SIGKILLed: until the origin shows it down and until its routes vanish (advert interval 1 s).
5. mDNS between two network namespaces, no bootstrap (root only; skipped with a note otherwise).

Writes the "Federation" section of docs/benchmarks.md (between ``<!-- federation -->`` markers).
Not part of ``make test``: it takes about three minutes and measures, it does not check.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# run as a script, bench/ would be first on the path and this file would shadow the `federation` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.report import write_section  # noqa: E402
from federation.fleet import FleetKey  # noqa: E402
from federation.service import SWITCH_INTERVAL_S  # noqa: E402
from tests.support.fleet import FleetMember  # noqa: E402
from tests.support.fleet import enrol as fleet_enrol  # noqa: E402

DEFAULT_SWITCH_S = 0.005  # CPython's default sys.getswitchinterval()
PAYLOAD = {"n": 1, "text": "hello"}
RATE = '[plans.starter]\nrate_limits = { api_calls = "100000000/min" }\n[log]\nlevel = "WARNING"\n'
WAIT_S = 30.0  # a guard against hanging: every wait below gives up after this


# -- a hub of one fleet, started through this script so its switch interval can be chosen -------------------
Member = FleetMember


def enrol(tmp: Path, name: str, fleet: FleetKey | None, modules: tuple[str, ...], *, bootstrap: tuple[str, ...] = (),
          interval: float = 10.0, switch_s: float | None = None, host_ip: str = "127.0.0.1",
          netns: str | None = None, mdns: bool = False, info_log: bool = False) -> Member:
    """A hub (of ``fleet``, or alone when None) configured but not started.

    ``switch_s``: the hub's switch interval (None: as the hub sets it, 0.5 ms once it federates).
    """
    # INFO only where the run reads the log ("federation up", "peer joined"): logging costs under load
    wrapper = ["ip", "netns", "exec", netns] if netns else []
    if switch_s is not None:
        wrapper += [sys.executable, "-m", "bench.federation", "--as-hub", repr(switch_s), "--"]
    return fleet_enrol(tmp, name, fleet, modules, bootstrap=bootstrap, interval=interval, host_ip=host_ip,
                       port=4701 if netns else None, mdns=mdns,
                       extra=RATE.replace("WARNING", "INFO") if info_log else RATE, wrapper=wrapper)


def run_as_hub(argv: list[str]) -> int:
    """``--as-hub INTERVAL -- python -m daemon.cli serve ...``: that hub, with the switch interval pinned."""
    switch_s = float(argv[argv.index("--as-hub") + 1])
    serve = argv[argv.index("serve"):]
    import federation.service

    sys.setswitchinterval(switch_s)  # a hub alone never changes it
    federation.service.SWITCH_INTERVAL_S = switch_s  # a federating hub sets this one at start
    from daemon.cli.main import main

    return main(serve)


def start_all(members: list[Member]) -> None:
    """Start the hubs side by side (each waits for its own endpoints.json)."""
    with ThreadPoolExecutor(len(members)) as pool:
        for future in [pool.submit(m.hub.start, 60.0) for m in members]:
            future.result()


def stop_all(members: list[Member]) -> None:
    """Stop the hubs side by side; a hub that ignores SIGTERM is killed after the grace."""
    with ThreadPoolExecutor(max(1, len(members))) as pool:
        list(pool.map(lambda m: m.hub.stop(), members))


# -- HTTP calls ---------------------------------------------------------------------------------------------
async def get(session: aiohttp.ClientSession, member: Member, path: str) -> Any:
    """GET an admin endpoint of the hub as JSON."""
    async with session.get(f"{member.hub.url}{path}", headers={"X-API-Key": member.hub.admin_key}) as resp:
        resp.raise_for_status()
        return await resp.json()


async def echo_served_by_peers(session: aiohttp.ClientSession, member: Member) -> set[str]:
    """The peers the hub's /v1/capabilities names for echo (empty when none or when echo is local)."""
    with contextlib.suppress(aiohttp.ClientError, KeyError):
        entries = {c["action"]: c for c in (await get(session, member, "/v1/capabilities"))["capabilities"]}
        echo = entries.get("echo")
        if echo and str(echo["origin"]).startswith("peer:"):
            return {m["id"] for m in echo["modules"]}
    return set()


async def peer_state(session: aiohttp.ClientSession, member: Member, node_id: str) -> str | None:
    """The state ("up"/"down") /v1/peers shows for ``node_id``, None when it is not listed."""
    with contextlib.suppress(aiohttp.ClientError, KeyError):
        for peer in (await get(session, member, "/v1/peers"))["peers"]:
            if peer["node_id"] == node_id:
                return str(peer["state"])
    return None


async def until(check: Callable[[], Awaitable[Any]], what: str, every: float = 0.05) -> float:
    """Poll ``check`` until it is truthy; the monotonic time it first was."""
    deadline = time.monotonic() + WAIT_S
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic()


async def load(session: aiohttp.ClientSession, member: Member, callers: int, seconds: float) -> dict[str, float]:
    """``callers`` tasks posting echo for ``seconds`` on one keep-alive session: calls/s, p50, p99 (ms)."""
    url = f"{member.hub.url}/v1/call"
    headers = {"X-API-Key": member.hub.admin_key}
    body = {"action": "echo", "payload": PAYLOAD}
    latencies: list[float] = []

    async def call() -> None:
        async with session.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{member.name}: {resp.status} {await resp.text()}")
            await resp.read()

    async def caller(stop_at: float) -> None:
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(call() for _ in range(callers)))  # warm: every connection open, the link busy
    began = time.perf_counter()
    await asyncio.gather(*(caller(began + seconds) for _ in range(callers)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50": statistics.median(latencies) * 1000,
            "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, "n": len(latencies)}


def tcp_connections(port: int) -> int:
    """Established TCP connections whose local end is ``port`` (its listener's accepted side), from /proc."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                    count += 1
    return count


def logged_at(member: Member, msg: str, after: float = 0.0, **match: str) -> float | None:
    """Wall-clock time of the first line of the hub's JSON log with ``msg`` (and ``match``) after ``after``."""
    for line in member.hub.log().splitlines():
        try:
            record = json.loads(line)
            stamp = calendar.timegm(time.strptime(record["ts"][:19], "%Y-%m-%dT%H:%M:%S")) + \
                int(record["ts"][20:23]) / 1000
        except (ValueError, KeyError, TypeError):
            continue  # not a log line of the hub's (a library's print)
        if record.get("msg") == msg and stamp >= after and all(record.get(k) == v for k, v in match.items()):
            return float(stamp)
    return None


def federation_up_to_joined(origin: Member, peer_id: str, since: float) -> float:
    """Seconds from the origin's "federation up" (after ``since``) to its "peer joined" for ``peer_id``."""
    up = logged_at(origin, "federation up", since)
    joined = logged_at(origin, "peer joined", since, peer=peer_id)
    return joined - up if joined is not None and up is not None else float("nan")


def since_launch(members: list[Member], msg: str, launched: float, **match: str) -> float:
    """Seconds from ``launched`` (wall clock) to the latest of these hubs' first ``msg`` line after it."""
    stamps = [logged_at(m, msg, launched, **match) for m in members]
    found = [s for s in stamps if s is not None]
    return max(found) - launched if len(found) == len(stamps) else float("nan")


# -- 1 and 2b: the forwarded echo against the local one -----------------------------------------------------
@dataclass
class Calls:
    """Each configuration's rounds, at one caller and at 32."""

    one: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    many: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=dict)


async def measure_calls(targets: dict[str, Member], peer: Member, rounds: int, seconds_one: float,
                        seconds_many: float, callers: int) -> Calls:
    """Rounds interleaved over the targets, so the box's drift hits every one alike."""
    out = Calls()
    connector = aiohttp.TCPConnector(limit=callers * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        origin = targets["forwarded"]
        await until(lambda: _has(session, origin, peer.node_id), "the origin to list the peer's echo")
        out.connections["before"] = tcp_connections(peer.port)
        for round_no in range(1, rounds + 1):
            for name, member in targets.items():
                one = await load(session, member, 1, seconds_one)
                many = await load(session, member, callers, seconds_many)
                out.one.setdefault(name, []).append(one)
                out.many.setdefault(name, []).append(many)
                print(f"round {round_no} {name:22s} 1 caller p50 {one['p50']:6.2f} ms p99 {one['p99']:6.2f} | "
                      f"{callers} callers {many['rps']:6.0f}/s p50 {many['p50']:6.1f} p99 {many['p99']:6.1f}",
                      flush=True)
        out.connections["after"] = tcp_connections(peer.port)
    return out


async def _has(session: aiohttp.ClientSession, origin: Member, node_id: str) -> bool:
    return node_id in await echo_served_by_peers(session, origin)


# -- 2a: the bridge in this process -------------------------------------------------------------------------
async def bridge_round_trips(switch_s: float, n: int, in_flight: int) -> dict[str, float]:
    """asyncio -> trio -> asyncio, ``n`` times, ``in_flight`` at once: median µs per round trip and trips/s.

    Two kinds: ``Bridge.call`` (a trio task per call, what connect/ping use) and ``post`` + ``to_loop``
    (a plain callback each way: what a frame costs, ``send`` on the way out and ``on_frame`` back).
    """
    # trio only to keep the trio thread alive; everything measured goes through bridge.py
    import trio

    from federation.transport.bridge import Bridge, TrioThread

    async def main(bridge: Bridge, ready: Callable[[None], None]) -> None:
        ready(None)
        await trio.sleep_forever()

    async def noop() -> None:
        return None

    previous = sys.getswitchinterval()
    sys.setswitchinterval(switch_s)
    thread = TrioThread("bench-trio")
    bridge, _ = await thread.start(main)
    loop = asyncio.get_running_loop()
    try:
        def bounce(future: asyncio.Future[None]) -> None:  # on the trio thread: straight back
            bridge.to_loop(future.set_result, None)

        async def posted() -> None:
            future: asyncio.Future[None] = loop.create_future()
            bridge.post(bounce, future)
            await future

        async def called() -> None:
            await bridge.call(noop)

        result: dict[str, float] = {}
        for kind, trip in (("post", posted), ("call", called)):
            times: list[float] = []

            async def worker(count: int, trip: Callable[[], Awaitable[None]] = trip,
                             times: list[float] = times) -> None:
                for _ in range(count):
                    began = time.perf_counter()
                    await trip()
                    times.append(time.perf_counter() - began)

            for _ in range(200):  # warm
                await trip()
            began = time.perf_counter()
            await asyncio.gather(*(worker(n // in_flight) for _ in range(in_flight)))
            elapsed = time.perf_counter() - began
            result[f"{kind}_us"] = statistics.median(times) * 1e6
            result[f"{kind}_rate"] = len(times) / elapsed
        return result
    finally:
        bridge.post(bridge.nursery.cancel_scope.cancel)
        await thread.join()
        sys.setswitchinterval(previous)


async def link_streams(frames: int) -> dict[str, float]:
    """Two ``Libp2pNode`` in this process, ``frames`` request/answer frames over their link: streams and rtt."""
    from federation.transport import Libp2pNode

    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as a federating hub
    answered: asyncio.Queue[bytes] = asyncio.Queue()
    linked: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}
    nodes: dict[str, Libp2pNode] = {}

    def on_b_frame(peer: str, frame: bytes) -> None:
        nodes["b"].send(peer, frame)  # the far side answers each frame at once

    a = nodes["a"] = Libp2pNode(os.urandom(32), ["/ip4/127.0.0.1/tcp/0"], on_frame=lambda _p, f: answered.put_nowait(f),
                                on_link=lambda _p: linked["a"].set(), on_link_lost=lambda _p: None)
    b = nodes["b"] = Libp2pNode(os.urandom(32), ["/ip4/127.0.0.1/tcp/0"], on_frame=on_b_frame,
                                on_link=lambda _p: linked["b"].set(), on_link_lost=lambda _p: None)
    try:
        await a.start()
        b_addrs = await b.start()
        peer = await a.connect(b_addrs[0])
        await asyncio.wait_for(linked["b"].wait(), WAIT_S)
        times: list[float] = []
        frame = os.urandom(200)
        for _ in range(frames):
            began = time.perf_counter()
            a.send(peer, frame)
            await asyncio.wait_for(answered.get(), WAIT_S)
            times.append(time.perf_counter() - began)
        return {"rtt_ms": statistics.median(times) * 1000, "frames": frames,
                "streams": a.streams_opened + a.streams_accepted + b.streams_opened + b.streams_accepted}
    finally:
        await a.close()
        await b.close()
        sys.setswitchinterval(DEFAULT_SWITCH_S)


# -- 3 and 4: bootstrap and death ---------------------------------------------------------------------------
async def bootstrap_times(tmp: Path, fleet: FleetKey, peer: Member, reps: int) -> list[tuple[float, float]]:
    """(process start -> peer's echo listed, its log's "federation up" -> "peer joined") for ``reps`` fresh
    origins, seconds."""
    times = []
    async with aiohttp.ClientSession() as session:
        for rep in range(reps):
            origin = enrol(tmp, f"boot{rep}", fleet, (), bootstrap=(peer.addr,), info_log=True)
            wall = time.time()
            began = time.monotonic()
            await asyncio.to_thread(origin.hub.start, 60.0)
            ready = time.monotonic()
            try:
                found = await until(partial(_has, session, origin, peer.node_id), "bootstrap discovery")
            finally:
                await asyncio.to_thread(origin.hub.stop)
            joined = federation_up_to_joined(origin, peer.node_id, wall)
            times.append((found - began, joined))
            print(f"bootstrap {rep + 1}: start -> echo listed {found - began:.2f} s "
                  f"(hub ready -> listed {found - ready:.2f} s; federation up -> peer joined {joined:.3f} s)",
                  flush=True)
    return times


async def death_times(tmp: Path, fleet: FleetKey, reps: int) -> list[tuple[float, float]]:
    """SIGKILL a peer ``reps`` times: (kill -> origin shows it down, kill -> its echo route gone), seconds."""
    origin = enrol(tmp, "watcher", fleet, (), interval=1)
    await asyncio.to_thread(origin.hub.start, 60.0)
    victim = enrol(tmp, "victim", fleet, ("echo",), bootstrap=(origin.addr,), interval=1)
    times = []
    try:
        async with aiohttp.ClientSession() as session:
            for rep in range(reps):
                await asyncio.to_thread(victim.hub.start, 60.0)  # same state dir and port each time
                await until(lambda: _has(session, origin, victim.node_id), "the victim's echo")
                await asyncio.sleep(1.5)  # adverts flowing, as in steady state
                victim.hub.kill()  # SIGKILL, waited for
                killed = time.monotonic()
                down = await until(lambda: _is(session, origin, victim.node_id, {"down", None}), "down")
                gone = await until(lambda: _gone(session, origin, victim.node_id), "routes gone")
                times.append((down - killed, gone - killed))
                print(f"death {rep + 1}: down after {down - killed:.2f} s, routes gone after {gone - killed:.2f} s",
                      flush=True)
    finally:
        victim.hub.kill()
        await asyncio.to_thread(origin.hub.stop)
    return times


async def _is(session: aiohttp.ClientSession, origin: Member, node_id: str, states: set[str | None]) -> bool:
    return await peer_state(session, origin, node_id) in states


async def _gone(session: aiohttp.ClientSession, origin: Member, node_id: str) -> bool:
    return node_id not in await echo_served_by_peers(session, origin)


# -- 5: mDNS between network namespaces ---------------------------------------------------------------------
def mdns_times(tmp: Path, fleet: FleetKey, reps: int) -> tuple[list[tuple[float, float, float]], str]:
    """Seconds from both hubs launched together to: the origin's peers.json listing the other's echo, the
    origin's log saying "peer joined", both logs saying "federation up"; or why not measured."""
    from tests.federation.netns import NetnsUnavailable, netns_lan

    if os.geteuid() != 0:
        return [], "not run: network namespaces need root"
    times: list[tuple[float, float, float]] = []
    try:
        with netns_lan(2) as lan:
            origin = enrol(tmp, "lan-origin", fleet, (), interval=1, host_ip=lan[0].ip, netns=lan[0].name, mdns=True,
                           info_log=True)
            far = enrol(tmp, "lan-far", fleet, ("echo",), interval=1, host_ip=lan[1].ip, netns=lan[1].name, mdns=True,
                        info_log=True)
            for rep in range(reps):
                (origin.hub.state_dir / "peers.json").unlink(missing_ok=True)
                try:
                    wall = time.time()
                    launched = time.monotonic()
                    start_all([origin, far])  # side by side
                    ready = time.monotonic()
                    while not _lists(origin, far.node_id):
                        if time.monotonic() > ready + WAIT_S:
                            raise RuntimeError(f"no mDNS discovery:\n{origin.hub.log()[-2000:]}")
                        time.sleep(0.05)
                    found = time.monotonic()
                    up = since_launch([origin, far], "federation up", wall)
                    joined = since_launch([origin], "peer joined", wall, peer=far.node_id)
                    times.append((found - launched, joined, up))
                    print(f"mdns {rep + 1}: both launched -> peers.json lists the other {found - launched:.2f} s "
                          f"(both ready -> listed {found - ready:.2f} s; launched -> peer joined {joined:.2f} s; "
                          f"launched -> both federations up {up:.2f} s)", flush=True)
                finally:
                    stop_all([origin, far])
    except NetnsUnavailable as exc:
        return times, f"not run: {exc}"
    return times, ""


def _lists(member: Member, node_id: str) -> bool:
    path = member.hub.state_dir / "peers.json"
    try:
        peers = json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return False
    return any(p.get("node_id") == node_id and "echo" in p.get("capabilities", ()) for p in peers)


# -- the whole run ------------------------------------------------------------------------------------------
@dataclass
class Results:
    """Everything one run measured."""

    calls: Calls
    bridge: dict[tuple[float, int], list[dict[str, float]]]
    link: dict[str, float]
    boot: list[tuple[float, float]]
    death: list[tuple[float, float]]
    mdns: list[tuple[float, float, float]]
    mdns_note: str
    load_before: float
    load_after: float
    seconds: float


@contextlib.contextmanager
def fleet_dir() -> Iterator[Path]:
    """A temporary directory for the run's state dirs."""
    with tempfile.TemporaryDirectory(prefix="bench-federation-") as tmp:
        yield Path(tmp)


async def run(args: argparse.Namespace, tmp: Path) -> Results:
    """The five measurements, in an order that keeps each one's processes to itself."""
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    bridge: dict[tuple[float, int], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for switch_s in (DEFAULT_SWITCH_S, SWITCH_INTERVAL_S):
            for in_flight in (1, 32):
                bridge.setdefault((switch_s, in_flight), []).append(
                    await bridge_round_trips(switch_s, args.bridge_n, in_flight))
    for (switch_s, in_flight), runs in bridge.items():
        print(f"bridge switch {switch_s * 1000:g} ms, {in_flight} in flight: "
              f"post {_med(runs, 'post_us'):.1f} µs/trip, call {_med(runs, 'call_us'):.1f} µs/trip", flush=True)
    link = await link_streams(1000)
    print(f"in-process link: {link}", flush=True)

    fleet = FleetKey.generate("bench")
    local = enrol(tmp, "local", None, ("echo",))
    local_fast = enrol(tmp, "local-fast", None, ("echo",), switch_s=SWITCH_INTERVAL_S)
    peer = enrol(tmp, "peer", fleet, ("echo",))
    origin = enrol(tmp, "origin", fleet, (), bootstrap=(peer.addr,))
    peer_slow = enrol(tmp, "peer-5ms", fleet, ("echo",), switch_s=DEFAULT_SWITCH_S)
    origin_slow = enrol(tmp, "origin-5ms", fleet, (), bootstrap=(peer_slow.addr,), switch_s=DEFAULT_SWITCH_S)
    hubs = [local, local_fast, peer, origin, peer_slow, origin_slow]
    try:
        await asyncio.to_thread(start_all, hubs)
        async with aiohttp.ClientSession() as session:
            await until(lambda: _has(session, origin_slow, peer_slow.node_id), "the 5 ms origin to list echo")
        # pairs side by side, so each pair's rounds see the same drift of the shared box
        targets = {"local": local, "local, 0.5 ms": local_fast, "forwarded": origin, "forwarded, 5 ms": origin_slow,
                   "the peer, called directly": peer}
        calls = await measure_calls(targets, peer, args.rounds, args.seconds_one, args.seconds_many, args.callers)
    finally:
        await asyncio.to_thread(stop_all, [h for h in hubs if h is not peer])
    try:
        boot = await bootstrap_times(tmp, fleet, peer, args.reps)
    finally:
        await asyncio.to_thread(peer.hub.stop)
    death = await death_times(tmp, fleet, args.reps)
    mdns, note = ([], "not run (--no-netns)") if args.no_netns else \
        await asyncio.to_thread(mdns_times, tmp, fleet, args.reps)
    return Results(calls, bridge, link, boot, death, mdns, note, load_before, os.getloadavg()[0],
                   time.monotonic() - began)


def _med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _secs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _noise(ratios: list[float]) -> str:
    """A warning when the rounds disagree on which side of 1.0 a ratio falls."""
    if ratios[0] < 1.0 < ratios[-1]:
        return (" In this run the rounds fall on both sides of 1.0: at 32 callers the switch interval's effect "
                "on real hubs is smaller than this box's noise.")
    return ""


def section(r: Results, args: argparse.Namespace) -> str:
    """The "## Federation" section of docs/benchmarks.md."""
    one, many = r.calls.one, r.calls.many
    added = [f["p50"] - loc["p50"] for f, loc in zip(one["forwarded"], one["local"], strict=True)]
    beyond = [f["p50"] - d["p50"] for f, d in zip(one["forwarded"], one["the peer, called directly"], strict=True)]
    added_p99 = [f["p99"] - loc["p99"] for f, loc in zip(one["forwarded"], one["local"], strict=True)]
    ratio = sorted(f["rps"] / loc["rps"] for f, loc in zip(many["forwarded"], many["local"], strict=True))
    slow_ratio = sorted(s["rps"] / f["rps"] for s, f in zip(many["forwarded, 5 ms"], many["forwarded"], strict=True))
    fast_ratio = sorted(f["rps"] / loc["rps"] for f, loc in zip(many["local, 0.5 ms"], many["local"], strict=True))
    added_ms = statistics.median(added)
    lines = [
        "## Federation", "",
        f"`bench/federation.py` (`.venv/bin/python -m bench.federation`, {r.seconds:.0f} s in all; not part of "
        "`make test`). Real `democratic-ai serve` processes on loopback, each with its own node key and fleet "
        "certificate; calls are `echo` over HTTP/1.1 with one aiohttp keep-alive session. "
        f"{args.rounds} interleaved rounds of {args.seconds_one:g} s at 1 caller and {args.seconds_many:g} s at "
        f"{args.callers} callers per hub, medians. CPython {platform.python_version()}, {os.cpu_count()} CPUs "
        f"shared with other work (load average {r.load_before:.1f} at the start, {r.load_after:.1f} at the end), "
        f"loop: uvloop, measured {time.strftime('%Y-%m-%d')}. The load client shares the cores with the "
        "hubs; with a forwarded call two hubs and the client compete for two cores.", "",
        "### A forwarded call against a local one", "",
        "*local*: a hub that serves echo itself. *forwarded*: an origin with no echo module that forwards every "
        "call to a peer that has it (seal, the link to the peer, the peer's own pipeline and ledger, the "
        "answer back, the origin's ledger). *the peer, called directly*: the same serving hub called for its "
        "own echo (a federating hub, so at 0.5 ms). The rows *local, 0.5 ms* and *forwarded, 5 ms* change only "
        "the hubs' switch interval (see below).", "",
        f"| hub | 1 caller p50 ms | 1 caller p99 ms | {args.callers} callers calls/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in one:
        lines.append(f"| {name} | {_med(one[name], 'p50'):.2f} | {_med(one[name], 'p99'):.2f} "
                     f"| {_med(many[name], 'rps'):,.0f} | {_med(many[name], 'p50'):.1f} "
                     f"| {_med(many[name], 'p99'):.1f} |")
    met = "met" if added_ms < 2.0 else "**not met**"
    lines += [
        "",
        f"- The hop adds **{added_ms:.2f} ms at p50** to a single caller's call (per round: {_secs(added)} ms; "
        f"target < 2 ms: {met}) and {statistics.median(added_p99):.2f} ms at p99; "
        f"{statistics.median(beyond):.2f} ms more than the peer takes for its own local echo: the origin's "
        "own pipeline and ledger entry, sealing and opening, and the link both ways.",
        f"- At {args.callers} callers the forwarded path gives **{statistics.median(ratio):.2f}x** the local "
        f"hub's calls/s (rounds {ratio[0]:.2f}–{ratio[-1]:.2f}): every call crosses two hubs' pipelines and "
        "ledgers, on the same two cores.",
        f"- Connection reuse: TCP connections into the peer's libp2p port: {r.calls.connections['before']} before "
        f"the load, {r.calls.connections['after']} after "
        f"{sum(int(x['n']) for runs in (one['forwarded'], many['forwarded']) for x in runs):,} forwarded calls "
        "(counted from /proc/net/tcp). Inside it, calls share the one link stream: two `Libp2pNode`s in one "
        f"process passed {int(r.link['frames']):,} request/answer frames and opened "
        f"{int(r.link['streams'])} link stream(s) in all (`streams_opened` + `streams_accepted`, both sides); "
        f"a frame's round trip there took {r.link['rtt_ms']:.2f} ms at p50 (two trio threads and the loop "
        "in one process, so an upper bound).",
        "",
        "What it means for an operator: a call served by a peer costs about "
        f"{added_ms:.1f} ms more than a local one on an idle hub, plus the network's round trip (loopback "
        "here); under load a forwarding hub and its peer "
        "spend CPU on the same call twice, so size a fleet by the serving hub's capacity and keep hot "
        "capabilities local.", "",
        "### The asyncio ↔ trio bridge and the switch interval", "",
        f"`federation/transport/bridge.py` in this process, {args.bridge_n:,} round trips per run "
        "(asyncio → trio → asyncio), median µs per round trip (a crossing is half of it) and round trips/s. "
        "*post*: a plain callback each way (what a frame costs: `send` out, `on_frame` back); *call*: "
        "`Bridge.call`, a trio task per call (connect, ping).", "",
        "| switch interval | in flight | post µs/trip | post trips/s | call µs/trip | call trips/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (switch_s, in_flight), runs in r.bridge.items():
        lines.append(f"| {switch_s * 1000:g} ms | {in_flight} | {_med(runs, 'post_us'):.1f} "
                     f"| {_med(runs, 'post_rate'):,.0f} | {_med(runs, 'call_us'):.1f} "
                     f"| {_med(runs, 'call_rate'):,.0f} |")
    lines += [
        "",
        f"On real hubs (the table above): the forwarded echo with both hubs left at the 5 ms default gives "
        f"**{statistics.median(slow_ratio):.2f}x** the calls/s of the same pair at 0.5 ms (rounds "
        f"{slow_ratio[0]:.2f}–{slow_ratio[-1]:.2f}), and a hub that does not federate, run at 0.5 ms instead of "
        f"its 5 ms, gives {statistics.median(fast_ratio):.2f}x its calls/s (rounds "
        f"{fast_ratio[0]:.2f}–{fast_ratio[-1]:.2f}); at 1 caller that hub's p99 was "
        f"{_med(one['local'], 'p99'):.2f} ms at 5 ms and {_med(one['local, 0.5 ms'], 'p99'):.2f} ms at 0.5 ms"
        ". A hub sets 0.5 ms only once it federates "
        "(`federation/service.py`, `SWITCH_INTERVAL_S`); a hub alone keeps CPython's default. The switch "
        "interval is how long a thread that wants the GIL waits for the one holding it: with the loop busy "
        "serving, every frame handed to the libp2p thread and back waits for it." + _noise(slow_ratio), "",
        "### Peers coming and going", "",
        f"Medians of {args.reps} (seconds; each run listed). Polled every 50 ms.", "",
        "| | median s | runs |",
        "|---|---:|---|",
    ]
    if r.boot:
        starts, readies = [b[0] for b in r.boot], [b[1] for b in r.boot]
        lines += [f"| bootstrap: origin process start → its /v1/capabilities lists the peer's echo "
                  f"| {statistics.median(starts):.2f} | {_secs(starts)} |",
                  f"| of which: its log's \"federation up\" → \"peer joined\" (the dial, Noise, yamux, "
                  f"hello, certificate) | {statistics.median(readies):.2f} "
                  f"| {_secs(readies)} |"]
    if r.death:
        downs, gones = [d[0] for d in r.death], [d[1] for d in r.death]
        lines += [f"| peer SIGKILLed → the origin shows it down (no calls go to it) | {statistics.median(downs):.2f} "
                  f"| {_secs(downs)} |",
                  f"| peer SIGKILLed → its routes vanish at the origin (advert_interval_s = 1) "
                  f"| {statistics.median(gones):.2f} | {_secs(gones)} |"]
    if r.mdns:
        listed, joined, up = ([m[i] for m in r.mdns] for i in range(3))
        lines += [f"| mDNS, two network namespaces, no bootstrap: both hubs launched together → the origin's "
                  f"peers.json lists the other's echo | {statistics.median(listed):.2f} | {_secs(listed)} |",
                  f"| the same launch → the origin logs \"peer joined\" (no peers.json rounding) "
                  f"| {statistics.median(joined):.2f} | {_secs(joined)} |",
                  f"| for scale: the same launch → both hubs log \"federation up\" (their own start) "
                  f"| {statistics.median(up):.2f} | {_secs(up)} |"]
    lines += [""]
    if r.mdns_note:
        lines += [f"mDNS: {r.mdns_note}.", ""]
    lines += [
        "What it means for an operator: a hub lists what its bootstrap peers serve as soon as it is up: "
        "the dial, Noise, yamux, hello and certificate check take a fraction of a second, the rest is the "
        "hub's own start. On a LAN without bootstrap peers mDNS finds the other hub while the two are still "
        "starting, so discovery adds nothing visible to their start. A peer that dies with its TCP "
        "connection (a killed process, a rebooted host) is marked down within the 50 ms poll and gets "
        "no more calls; its capabilities stay listed until its adverts expire, three advert intervals after "
        "the last one (plus a tick of the fleet task): ~2.5 s at `advert_interval_s = 1`, up to ~30 s at the "
        "default 10 s. A peer that vanishes silently (a cable pulled, no TCP reset) is not measured here: it "
        "is found by failing pings and calls, and by the same expiry. peers.json (what `democratic-ai "
        "peers` prints) is rewritten once per advert interval, so the first mDNS row is rounded up to that "
        "interval (1 s here).", "",
    ]
    return "\n".join(lines)


def main() -> int:
    """Parse arguments, measure, print and write the section."""
    if "--as-hub" in sys.argv:
        return run_as_hub(sys.argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the call loads and bridge runs")
    parser.add_argument("--seconds-one", type=float, default=1.5, help="seconds of the 1-caller load per round")
    parser.add_argument("--seconds-many", type=float, default=2.0, help="seconds of the 32-caller load per round")
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--bridge-n", type=int, default=10_000, help="bridge round trips per run")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the discovery and death timings")
    parser.add_argument("--no-netns", action="store_true", help="skip the mDNS measurement in network namespaces")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    with fleet_dir() as tmp:
        results = _run_loop(run(args, tmp))
    text = section(results, args)
    print(text)
    if not args.no_write:
        write_section("federation", text)
    return 0


def _run_loop(work: Awaitable[Results]) -> Results:
    # the hubs run on uvloop; so does the client here, as in bench/doors.py
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)  # type: ignore[arg-type]
    return uvloop.run(work)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
