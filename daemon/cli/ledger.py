"""``democratic-ai ledger verify``: the usage ledger's hash chain, checked end to end.

It reads the file read-only, so it can run beside the daemon.  The report goes to stdout
as JSON either way; a chain that does not verify also names its first bad entry on stderr
and exits 1, so a cron job or a health check can act on the exit code alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from daemon.cli.errors import CommandFailed
from daemon.cli.output import print_json
from daemon.cli.parsing import SubParsers, add_command, add_group
from daemon.runtime.config import state_dir_of


def ledger_path(state_dir: Path) -> Path:
    """Where the usage ledger of a state dir lives, whether or not it exists yet."""
    from daemon.metering.ledger.writer import LEDGER_FILE

    return state_dir / LEDGER_FILE


def cmd_verify(args: argparse.Namespace) -> int:
    """Walk the chain from its first entry to its head; 0 when every entry and balance holds."""
    from daemon.metering.ledger.chain import verify

    result = verify(ledger_path(state_dir_of(args)))
    print_json(result.to_dict())
    if not result.ok:
        where = f" (first bad entry: seq {result.first_bad_seq})" if result.first_bad_seq else ""
        raise CommandFailed(f"ledger verification FAILED{where}: {result.reason}")
    return 0


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``ledger verify``."""
    ledger = add_group(subparsers, "ledger", "the usage ledger")
    add_command(ledger, "verify", parents, "check the hash chain end to end", cmd_verify)
