"""How every ``democratic-ai`` command fails: one line on stderr, an exit code, no traceback.

The line is always ``democratic-ai: <message>``.  Exit codes:

- 0: done;
- 1: the request was fine but could not be carried out (the disk, a database, a hub that
  cannot be reached, a ledger whose chain does not verify);
- 2: bad input (an unknown or duplicate name, a bad period, rate, role or config).

Commands raise; :func:`guarded` alone prints and picks the code, so no command prints an
error line of its own.
"""

from __future__ import annotations

import argparse
import functools
import sqlite3
import sys
from collections.abc import Callable

from daemon.core.errors import ConfigError, HubError

#: what every leaf of the parser stores as ``func``: parsed arguments in, exit code out
Command = Callable[[argparse.Namespace], int]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class CliError(Exception):
    """Bad input the CLI found itself (a plan or role that does not exist, no state dir): exit 2."""


class CommandFailed(Exception):
    """The input was fine, the work was not done (unreachable hub, unusable database): exit 1."""


def report(message: object, code: int) -> int:
    """Print ``democratic-ai: <message>`` on stderr and return ``code``, for the caller to exit with."""
    print(f"democratic-ai: {message}", file=sys.stderr)
    return code


def exit_code_of(exc: HubError) -> int:
    """A hub error the caller caused (a 4xx: validation, not found, conflict) is bad input; the rest failed."""
    return EXIT_BAD_INPUT if exc.http_status < 500 else EXIT_FAILED


def guarded(command: Command) -> Command:
    """Wrap a command so each failure it raises becomes one stderr line and its exit code."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except CliError as exc:
            return report(exc, EXIT_BAD_INPUT)
        except ConfigError as exc:
            return report(f"bad config: {exc}", EXIT_BAD_INPUT)
        except HubError as exc:
            return report(exc.message, exit_code_of(exc))
        except CommandFailed as exc:
            return report(exc, EXIT_FAILED)
        except (sqlite3.Error, OSError) as exc:
            return report(exc, EXIT_FAILED)

    return run
