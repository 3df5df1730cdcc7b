"""The gRPC door's CallResponse, filled in place, is the message its fields' constructor builds."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.core.envelope import CallResult, PeerReceipt, Receipt
from daemon.core.pipeline import encode_json
from daemon.doors.grpc import call_response
from daemon.doors.grpc_values import to_value
from proto import mcp_v2_pb2 as pb


def _built_aside(result: CallResult) -> pb.CallResponse:
    """What the door built before (every sub-message apart, then passed to the constructor)."""
    receipt = None
    if result.receipt is not None:
        peer = result.receipt.peer
        receipt = pb.Receipt(seq=result.receipt.seq, hash=result.receipt.hash,
                             peer=pb.PeerReceipt(node=peer.node, seq=peer.seq, hash=peer.hash) if peer else None)
    return pb.CallResponse(id=result.id, correlation_id=result.correlation_id, module=result.module,
                           result=to_value(result.result_json, result.result), receipt=receipt,
                           served_by=result.served_by)


RECEIPTS = [None, Receipt(seq=0, hash=""), Receipt(seq=12, hash="ab" * 32),
            Receipt(seq=3, hash="cd", peer=PeerReceipt(node="node-b", seq=0, hash="")),
            Receipt(seq=3, hash="cd", peer=PeerReceipt(node="node-b", seq=9, hash="ef"))]
RESULTS: list[Any] = [{"n": 1, "text": "hello"}, None, {}, [], "", 0, False, [1, None, {"k": [True]}], (1, 2),
                      {"k": {1, 2}}]


@pytest.mark.parametrize("receipt", RECEIPTS)
@pytest.mark.parametrize("value", RESULTS)
def test_the_reply_is_the_message_built_field_by_field(receipt: Receipt | None, value: Any) -> None:
    encoded = b'{"k":[1,2]}' if value == {"k": {1, 2}} else encode_json(value)  # a set: what the pipeline encodes
    result = CallResult(id="id-1", correlation_id="c-1", module="echo", result=value, receipt=receipt,
                        result_json=encoded, served_by="node-b" if receipt and receipt.peer else "")
    reply, expected = call_response(result), _built_aside(result)
    assert reply == expected
    assert reply.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    assert reply.HasField("result")
    assert reply.HasField("receipt") is (receipt is not None)
    assert reply.receipt.HasField("peer") is bool(receipt and receipt.peer)
