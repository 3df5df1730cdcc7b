"""How every ``democratic-ai`` command fails: one line on stderr, an exit code, no traceback.

The line is always ``democratic-ai: <message>``.  Exit codes:

- 0: done;
- 1: the request was fine but could not be carried out (the disk, a database, a hub that
  cannot be reached, a ledger whose chain does not verify);
- 2: bad input (an unknown or duplicate name, a bad period, rate, role or config).

Commands raise; :func:`guarded` alone prints and picks the code, so no command prints an
error line of its own.  The line is in the language of the POSIX locale (``LANG=ja_JP.UTF-8``:
Japanese; en, ja and zh are shipped), the prefix ``democratic-ai:`` and the exit codes never change.
"""

from __future__ import annotations

import argparse
import functools
import os
import sqlite3
import sys
from collections.abc import Callable

from daemon.core.errors import ConfigError, HubError
from daemon.core.i18n import Text, language_from_env, t

#: what every leaf of the parser stores as ``func``: parsed arguments in, exit code out
Command = Callable[[argparse.Namespace], int]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class CliError(Exception):
    """Bad input the CLI found itself (a plan or role that does not exist, no state dir): exit 2."""

    def __init__(self, message: str | Text) -> None:
        # a plain string is text the CLI does not own (a library's): relayed as it is
        self.text: Text = message if isinstance(message, Text) else t("cli.relayed", message=message)
        super().__init__(self.text.render())


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
        lang = language_from_env(os.environ)
        try:
            return command(args)
        except CliError as exc:
            return report(exc.text.render(lang), EXIT_BAD_INPUT)
        except ConfigError as exc:
            return report(t("cli.bad_config", error=exc).render(lang), EXIT_BAD_INPUT)
        except HubError as exc:
            return report(exc.render(lang), exit_code_of(exc))
        except CommandFailed as exc:
            return report(exc, EXIT_FAILED)
        except (sqlite3.Error, OSError) as exc:
            return report(exc, EXIT_FAILED)

    return run
