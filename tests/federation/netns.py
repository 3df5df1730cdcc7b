"""A throwaway LAN of network namespaces for tests that need real multicast (mDNS) between hosts.

`netns_lan(n)` makes n namespaces named after this process (so parallel runs never collide), each
with `lo` up and one interface `veth0` at 10.77.0.<i+1>/24 with a multicast route. Two namespaces
are joined by one veth pair; three or more hang off a bridge that lives in a namespace of its own.
Every link is created inside a namespace (`ip -n NS link add ... peer ... netns OTHER`), so nothing
ever appears among the machine's real interfaces. Leaving the block deletes the namespaces, which
destroys their links, after killing what still runs inside them; this happens on failure too.

`require_netns()` skips the calling test, saying why, when this machine cannot do any of it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

SUBNET = "10.77.0"
DEV = "veth0"


class NetnsUnavailable(Exception):
    """This machine cannot make network namespaces (not root, no iproute2, or refused)."""


@dataclass(frozen=True, slots=True)
class Namespace:
    """One host of the test LAN: its namespace name, address and interface."""

    name: str
    ip: str
    dev: str = DEV
    started: list[subprocess.Popen[Any]] = field(default_factory=list, compare=False, repr=False)

    def argv(self, command: Sequence[str]) -> list[str]:
        """`command` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `command` inside this namespace; it is killed when the LAN is torn down."""
        process: subprocess.Popen[Any] = subprocess.Popen(self.argv(command), **kwargs)
        self.started.append(process)
        return process

    def run(self, command: Sequence[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run `command` inside this namespace to completion, output captured as text."""
        return subprocess.run(self.argv(command), capture_output=True, text=True, timeout=timeout, check=False)


def _ip(*args: str) -> None:
    """One `ip` command; NetnsUnavailable with its stderr when it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _unique_prefix() -> str:
    # pid for the human reading `ip netns list`, a random tail so two LANs in one process differ too
    return f"dai{os.getpid()}{secrets.token_hex(2)}"


def require_netns() -> None:
    """Skip the calling test, with the reason, unless this machine can make a network namespace."""
    if os.geteuid() != 0:
        pytest.skip("network namespace tests need root (run as root to see mDNS between two hosts)")
    if shutil.which("ip") is None:
        pytest.skip("network namespace tests need iproute2's `ip`")
    probe = f"{_unique_prefix()}probe"
    try:
        _ip("netns", "add", probe)
    except NetnsUnavailable as exc:
        # only a machine that forbids namespaces (a container without CAP_SYS_ADMIN) skips; any other
        # failure to set the scene is a failure
        if "Operation not permitted" not in str(exc) and "Permission denied" not in str(exc):
            raise
        pytest.skip(f"this machine refuses network namespaces: {exc}")
    _delete(probe)


def _delete(name: str) -> None:
    """Delete one namespace, killing whatever this run left inside it first (best effort, never raises)."""
    listed = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10, check=False)
    for pid in listed.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)


def _host_up(name: str, ip: str) -> None:
    _ip("-n", name, "link", "set", "lo", "up")
    _ip("-n", name, "addr", "add", f"{ip}/24", "dev", DEV)
    _ip("-n", name, "link", "set", DEV, "up", "multicast", "on")
    _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", DEV)


@contextmanager
def netns_lan(count: int = 2) -> Iterator[list[Namespace]]:
    """`count` namespaces on one link (a veth pair for two, a bridge for more), torn down on exit."""
    if count < 2:
        raise ValueError("a LAN needs at least two hosts")
    prefix = _unique_prefix()
    hosts = [Namespace(name=f"{prefix}-{i}", ip=f"{SUBNET}.{i + 1}") for i in range(count)]
    made: list[str] = []
    try:
        for host in hosts:
            _ip("netns", "add", host.name)
            made.append(host.name)
        if count == 2:
            _ip("-n", hosts[0].name, "link", "add", DEV, "type", "veth", "peer", "name", DEV, "netns", hosts[1].name)
        else:
            switch = f"{prefix}-br"
            _ip("netns", "add", switch)
            made.append(switch)
            _ip("-n", switch, "link", "set", "lo", "up")
            # no IGMP snooping: with no querier on this LAN the bridge would have nothing to learn from
            _ip("-n", switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            _ip("-n", switch, "link", "set", "br0", "up")
            for i, host in enumerate(hosts):
                port = f"p{i}"
                _ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", DEV, "netns", host.name)
                _ip("-n", switch, "link", "set", port, "master", "br0")
                _ip("-n", switch, "link", "set", port, "up")
        for host in hosts:
            _host_up(host.name, host.ip)
        yield hosts
    finally:
        for host in hosts:
            for process in host.started:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
        for name in reversed(made):
            _delete(name)


def lan_fixture(count: int = 2, name: str = "lan") -> Callable[[], Iterator[list[Namespace]]]:
    """A pytest fixture `name` giving a fresh `netns_lan(count)` per test; skips where netns cannot be made.

    Assign it in the test module: `lan = lan_fixture(3)`.
    """

    @pytest.fixture(name=name)
    def lan() -> Iterator[list[Namespace]]:
        require_netns()
        with netns_lan(count) as hosts:
            yield hosts

    return lan
