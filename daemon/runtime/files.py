"""Writing a file so that readers see the old one or the whole new one, never a part."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsynced, then renamed over it.

    ``private``: readable by the owner only (0600), whatever the umask — keys and secrets.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # unique per process and thread: two writers never share a temporary file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            if private:
                os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
