"""What ``democratic-ai`` commands print, in one style.

stdout carries only the value a script would capture (JSON, a table, a new key or password);
lines meant for the person at the terminal go to stderr through :func:`note`, so
``KEY=$(democratic-ai key create ...)`` holds the key and nothing else.  Errors are not
printed here: see errors.py.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from daemon.core.i18n import Text, language_from_env


def print_json(value: Any) -> None:
    """Indented JSON on stdout, non-ASCII kept as is; what JSON cannot hold (a datetime) as its text."""
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Left-aligned columns two spaces apart, sized to their widest cell; no trailing blanks."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def note(message: str | Text) -> None:
    """A line for the person at the terminal (what was done, "shown once"), on stderr, in the locale's language.

    Lines on stdout (ids, keys, tables) stay as they are: scripts read them.
    """
    print(message.render(language_from_env(os.environ)) if isinstance(message, Text) else message, file=sys.stderr)
