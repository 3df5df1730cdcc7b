"""Run ``democratic-ai`` the way an operator does: a fresh ``python -m daemon.cli`` process on a state dir.

``--state-dir`` is appended after the caller's arguments, so every command (``serve``
included) works on the test's directory and never on ./var.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.hubproc import ROOT


def cli_argv(state_dir: Path, *args: str) -> list[str]:
    """The command line of one CLI run, for a caller that starts the process itself (asyncio)."""
    return [sys.executable, "-m", "daemon.cli", *args, "--state-dir", str(state_dir)]


def run_cli(state_dir: Path, *args: str, stdin: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI from the repository root and capture its text output; a non-zero exit is the caller's to check."""
    return subprocess.run(cli_argv(state_dir, *args), cwd=ROOT, capture_output=True, text=True, input=stdin,
                          timeout=timeout, check=False)


def cli_ok(state_dir: Path, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
    """Run the CLI, assert it exited 0 (showing its stderr if not), return its stdout stripped."""
    done = run_cli(state_dir, *args, stdin=stdin, timeout=timeout)
    assert done.returncode == 0, f"democratic-ai {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done.stdout.strip()
