"""systemd integration: sd_notify READY/STOPPING/RELOADING (Type=notify)."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Tell systemd our state; a no-op outside systemd.  True when a message was sent."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        from systemd import daemon as sd_daemon  # systemd-python, when libsystemd is there

        return bool(sd_daemon.notify(state))
    except ImportError:
        pass
    # the protocol is one datagram on $NOTIFY_SOCKET ('@' = abstract namespace)
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True
