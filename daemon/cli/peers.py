"""``democratic-ai peers``: the fleet peers the running hub knows, as it last wrote them to the state dir.

The hub writes ``peers.json`` once per advert interval (``federation/service.py``); this command
reads it, so it works without credentials and without the hub's ports, as ``doctor`` does.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from daemon.cli.errors import CommandFailed
from daemon.cli.output import note, print_json, print_table
from daemon.cli.parsing import SubParsers, add_command
from daemon.core.i18n import t
from daemon.runtime.config import state_dir_of

PEERS_FILE = "peers.json"  # written by federation/service.py (not imported here: it loads libp2p)
#: 256 peers at most, each well under 4 KiB
MAX_PEERS_BYTES = 1 << 20


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``peers``."""
    peers = add_command(subparsers, "peers", parents, "the fleet peers this hub knows: node id, site, state, "
                        "round trip, advert age, capabilities", cmd_peers)
    peers.add_argument("--json", action="store_true", help="print the peers as JSON")


def cmd_peers(args: argparse.Namespace) -> int:
    """Print the peers from ``peers.json``; none when the hub federates with nobody or is not running."""
    path = state_dir_of(args) / PEERS_FILE
    try:
        peers: list[dict[str, Any]] = json.loads(path.read_bytes()[:MAX_PEERS_BYTES + 1]) if path.exists() else []
    except (OSError, ValueError) as exc:
        raise CommandFailed(f"cannot read {path}: {exc}") from exc
    if not isinstance(peers, list) or not all(isinstance(p, dict) for p in peers):
        raise CommandFailed(f"{path} is not a list of peers; the hub rewrites it within an advert interval")
    if args.json:
        print_json({"peers": peers})
        return 0
    if not peers:
        note(t("cli.peers.none"))
        return 0
    print_table(["NODE", "SITE", "STATE", "RTT_MS", "ADVERT_AGE_S", "LOAD", "CAPABILITIES"], [
        [p.get("node_id", ""), p.get("site", ""), p.get("state", ""), _number(p.get("rtt_ms")),
         _number(p.get("advert_age_s")), _number(p.get("load")), ",".join(p.get("capabilities") or []) or "-"]
        for p in peers
    ])
    return 0


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)
