"""Drive ``remote_module_proc`` processes from a test: start one, read what it saw, release a held call."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from tests.support.hubproc import ROOT


class RemoteProc:
    """One remote module process; its stdout lines tell what it saw (see remote_module_proc)."""

    def __init__(self, url: str, key: str, module_id: str, *options: str) -> None:
        self.module_id = module_id
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.remote_module_proc", url, key, module_id, *options],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    async def line(self, timeout: float = 20.0) -> str:
        """The next line it printed; EOF (it exited) is an empty string."""
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)).strip()

    async def attached(self) -> RemoteProc:
        """Wait for its registration to be accepted; fails with what the hub said otherwise."""
        first = await self.line()
        assert first == "attached", first
        return self

    def release(self) -> None:
        """Let one held ``remote.hold`` call answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL it (its socket drops without a close frame) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # stdout stays open: a reader thread may still be on it, and sees EOF
