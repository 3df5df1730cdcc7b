"""systemd integration (Type=notify): READY, STATUS, RELOADING, STOPPING and the watchdog.

Each message is one datagram on ``$NOTIFY_SOCKET`` (through systemd-python's ``sd_notify`` when it
is installed); outside systemd nothing is sent and nothing changes.  The watchdog pings come from
the hub's event loop itself, on the loop's own timer: a loop that stalls stops pinging, and systemd
(``WatchdogSec=`` in the unit) kills the hub and ``Restart=on-failure`` starts it again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("democratic_ai.hub")


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ``status(...)``) as one message; a no-op outside systemd.

    True when a message was sent.  A notify socket that is gone or full is not the hub's failure:
    the message is dropped (False) and the hub keeps serving.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not fields:
        return False
    state = "\n".join(fields)
    try:
        from systemd import daemon as sd_daemon  # systemd-python, when libsystemd is there
    except ImportError:
        return _send_datagram(address, state)
    try:
        return bool(sd_daemon.notify(state))
    except OSError as exc:
        log.debug("systemd notification not sent", extra={"error": str(exc)})
        return False


def _send_datagram(address: str, state: str) -> bool:
    # the protocol is one datagram on $NOTIFY_SOCKET ('@' = abstract namespace)
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # never wait on the service manager from the event loop
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.debug("systemd notification not sent", extra={"error": str(exc)})
        return False
    return True


def status(text: str) -> str:
    """The ``STATUS=`` field ``systemctl status`` shows as the hub's current activity (one line)."""
    return "STATUS=" + " ".join(text.split())


def reloading(monotonic_usec: int | None = None) -> tuple[str, str]:
    """``RELOADING=1`` with the ``MONOTONIC_USEC=`` stamp systemd pairs it with (CLOCK_MONOTONIC, µs)."""
    if monotonic_usec is None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return "RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}"


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings: half of ``$WATCHDOG_USEC``, as ``sd_watchdog_enabled`` reads it.

    None when the watchdog is off: no ``WATCHDOG_USEC`` (or not a positive number), or a
    ``WATCHDOG_PID`` naming another process (the variables leaked into a child of the service).
    """
    raw_usec, raw_pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    try:
        usec = int(raw_usec)
        if raw_pid and int(raw_pid) != pid:
            return None
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class Watchdog:
    """While entered, sends ``WATCHDOG=1`` every ``interval`` seconds from the running loop.

    The pings are scheduled by the loop's own timer, never by a thread: if the loop stalls, they
    stop, which is the point.  ``interval`` None: the watchdog is off and nothing runs.
    """

    def __init__(self, interval: float | None, send: Callable[[str], object] = notify) -> None:
        self.interval = interval
        self._send = send
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_environment(cls) -> Watchdog:
        """The watchdog systemd asked for (``WatchdogSec=`` sets ``$WATCHDOG_USEC``), or an idle one."""
        if not os.environ.get("NOTIFY_SOCKET"):
            return cls(None)  # nowhere to send a ping: no task at all
        return cls(watchdog_interval(os.environ, os.getpid()))

    async def __aenter__(self) -> Watchdog:
        if self.interval is not None:
            self._task = asyncio.get_running_loop().create_task(self._ping(self.interval),
                                                                name="systemd-watchdog")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # gather, not a suppressed await: a cancellation of the hub's own stop still propagates
            await asyncio.gather(task, return_exceptions=True)

    async def _ping(self, interval: float) -> None:
        while True:
            self._send("WATCHDOG=1")
            await asyncio.sleep(interval)
