"""Write one section of docs/benchmarks.md, leaving the others as they are."""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(key: str, markdown: str) -> None:
    """Replace the text between <!-- key --> and <!-- /key --> (appended when absent)."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"<!-- {key} -->\n{markdown.strip()}\n<!-- /{key} -->"
    pattern = re.compile(rf"<!-- {re.escape(key)} -->.*?<!-- /{re.escape(key)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)


if __name__ == "__main__":
    write_section(sys.argv[1], sys.stdin.read())
