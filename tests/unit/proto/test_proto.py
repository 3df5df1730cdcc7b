"""proto/mcp_v2.proto and the committed generated code agree; the message has the seed's fields."""

from __future__ import annotations

from pathlib import Path

from proto import mcp_v2_pb2 as pb
from proto.generate import GENERATED, PROTO_DIR, generate


def test_the_generated_code_is_not_stale(tmp_path: Path) -> None:
    for fresh in generate(tmp_path):
        committed = PROTO_DIR / fresh.name
        assert committed.read_text() == fresh.read_text(), (
            f"proto/{fresh.name} is stale against mcp_v2.proto: run `make proto` and commit")
    assert {p.name for p in tmp_path.iterdir()} >= set(GENERATED)


def test_mcp_message_carries_the_seed_fields_and_federation() -> None:
    numbers = {f.name: f.number for f in pb.MCPMessage.DESCRIPTOR.fields}
    assert numbers == {
        "id": 1, "type": 2, "source_module_id": 3, "target_module_id": 4, "action": 5, "context": 6,
        "payload": 7, "timestamp": 8, "correlation_id": 9, "headers": 10, "priority": 11, "ttl": 12,
        "origin_node": 13, "hop_count": 14, "visited_nodes": 15,
    }
    assert {s.name for s in pb.DESCRIPTOR.services_by_name["Hub"].methods} == {
        "Call", "CallStream", "ListCapabilities"}
