"""The hub with its ledger append stubbed out — for bench/http_call.sh only, never a product mode.

It answers a fixed receipt without writing or fsyncing anything, so the benchmark can show
what the durable ledger costs the HTTP path (issue: "falls by no more than 15% with the
ledger on").  Everything else (auth, limits, routing, scheduling, metrics) runs as in the hub.
"""

from __future__ import annotations

import sys

from daemon.cli import main as cli
from daemon.core.envelope import Receipt
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.process import LedgerProcess


async def append_nothing(self: LedgerProcess, event: UsageEvent, *, validated: bool = False) -> Receipt:
    if not validated:
        event.validate()
    return Receipt(0, "0" * 64)


if __name__ == "__main__":
    LedgerProcess.append = append_nothing  # type: ignore[method-assign]
    sys.exit(cli.main(sys.argv[1:]))
