"""A tiny hub stand-in for the netns mDNS tests: one MdnsDiscovery, its findings as JSON lines.

    python tests/federation/mdns_peer.py NODE_ID FLEET_ID IP PORT

stdout gets one JSON object a line: {"event": "started"}, {"event": "hint", ...} for each hint,
{"event": "log", "message": ...} for the discovery's log records, {"event": "closed"} at the end.
stdin takes commands: `update <multiaddr>` re-announces with that multiaddr; end of input closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run by path inside a namespace

from federation.discovery import MdnsDiscovery, PeerHint


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class JsonLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        emit("log", message=record.getMessage())


async def main(node_id: str, fleet_id: str, ip: str, port: int) -> None:
    logger = logging.getLogger("federation.discovery")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(JsonLines())

    def on_hint(hint: PeerHint) -> None:
        emit("hint", **dataclasses.asdict(hint))

    discovery = MdnsDiscovery(
        node_id=node_id,
        fleet_id=fleet_id,
        addrs=[f"/ip4/{ip}/tcp/{port}/p2p/{node_id}"],
        version="0.0.0-test",
        port=port,
        interfaces=[ip],
        on_hint=on_hint,
    )
    async with discovery:
        emit("started", interfaces=discovery.interfaces)
        while line := await asyncio.to_thread(sys.stdin.readline):
            command, _, argument = line.strip().partition(" ")
            if command == "update":
                await discovery.update_addrs([argument])
                emit("updated", addrs=[argument])
        emit("hints", hints=[dataclasses.asdict(hint) for hint in discovery.hints()])
    emit("closed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
