"""The service manager's side of sd_notify: a datagram socket a test binds and reads, as systemd does."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT = 30.0


@dataclass
class NotifySocket:
    """Bound at ``path``; give the hub ``NOTIFY_SOCKET=path``.  Every message read is kept in ``seen``."""

    path: Path
    sock: socket.socket = field(init=False)
    seen: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def receive(self, timeout: float | None = TIMEOUT) -> dict[str, str]:
        """The next message as {field: value}; TimeoutError when none comes within ``timeout``
        (``timeout=0``: only one already waiting, else BlockingIOError)."""
        self.sock.settimeout(timeout)
        raw = self.sock.recv(65536).decode()
        message = dict(line.split("=", 1) for line in raw.split("\n") if line)
        self.seen.append(message)
        return message

    def until(self, key: str, value: str | None = None, timeout: float = TIMEOUT) -> dict[str, str]:
        """Read messages until one carries ``key`` (with ``value``, if given); returns it."""
        while True:
            message = self.receive(timeout)
            if key in message and (value is None or message[key] == value):
                return message

    def drain(self) -> list[dict[str, str]]:
        """Every message already waiting, without waiting for more."""
        messages = []
        try:
            while True:
                messages.append(self.receive(timeout=0))
        except BlockingIOError:
            return messages

    def statuses(self) -> list[str]:
        """Every ``STATUS=`` text read so far, in order."""
        return [m["STATUS"] for m in self.seen if "STATUS" in m]
