"""The gRPC door's own Struct/Value conversions give what protobuf's json_format gives, errors included."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from google.protobuf import any_pb2, json_format, struct_pb2

from daemon.core.errors import ValidationError
from daemon.core.pipeline import encode_json
from daemon.doors.grpc_values import decode_payload, to_value
from proto import mcp_v2_pb2 as pb

VALUES: list[Any] = [{"n": 1, "text": "hello"}, {}, [], [1, 2.5, None, True, False, "x"], "x", 3, -0.0, 2**60, None,
                     True, {"deep": [{"k": 1e100, "u": "\u2028", "e": {}, "l": [[], [{}]]}]}, {"日本": "語"}]


@pytest.mark.parametrize("value", VALUES)
def test_a_result_value_is_the_one_json_format_parses(value: Any) -> None:
    expected = struct_pb2.Value()
    json_format.Parse(encode_json(value), expected)
    assert to_value(encode_json(value), value) == expected
    assert to_value(encode_json(value)) == expected


@pytest.mark.parametrize("value", [(1, 2), {1: "a"}, {"k": {1, 2}}, [object()]])
def test_a_result_json_has_no_type_for_is_parsed_from_its_encoding(value: Any) -> None:
    encoded = json.dumps(value, default=list).encode() if not isinstance(value, list) else b"[null]"
    expected = struct_pb2.Value()
    json_format.Parse(encoded, expected)
    assert to_value(encoded, value) == expected


def _message(packed: struct_pb2.Struct | struct_pb2.Value) -> pb.MCPMessage:
    payload = any_pb2.Any()
    payload.Pack(packed)
    return pb.MCPMessage(action="echo", payload=payload)


@pytest.mark.parametrize("value", [v for v in VALUES if isinstance(v, dict)])
def test_a_struct_payload_decodes_as_message_to_dict_does(value: dict[str, Any]) -> None:
    struct = struct_pb2.Struct()
    json_format.ParseDict(value, struct)
    assert decode_payload(_message(struct)) == json_format.MessageToDict(struct)


@pytest.mark.parametrize("value", VALUES)
def test_a_value_payload_decodes_as_message_to_dict_does(value: Any) -> None:
    packed = struct_pb2.Value()
    json_format.ParseDict(value, packed)
    decoded = decode_payload(_message(packed))
    assert decoded == json_format.MessageToDict(packed)
    assert type(decoded) is type(json_format.MessageToDict(packed))


def test_an_unset_value_decodes_as_null_and_a_non_finite_number_is_refused() -> None:
    assert decode_payload(_message(struct_pb2.Value())) is None
    for number in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValidationError):
            decode_payload(_message(struct_pb2.Value(number_value=number)))


@pytest.mark.parametrize("type_url", [
    "type.googleapis.com/google.protobuf.Struct", "example.com/any/prefix/google.protobuf.Struct",
    "/google.protobuf.Struct", "google.protobuf.Struct", "type.googleapis.com/google.protobuf.Value",
    "type.googleapis.com/google.protobuf.ListValue", "type.googleapis.com/google.protobuf.Structx",
    "type.googleapis.com/", "google.protobuf.Struct/",
])
def test_a_payload_is_accepted_exactly_when_any_is_would_accept_it(type_url: str) -> None:
    """The door reads the type URL itself (no Any.Is/Unpack per call): the same URLs in, the same out."""
    struct = struct_pb2.Struct()
    json_format.ParseDict({"n": 1}, struct)
    message = pb.MCPMessage(action="echo", payload=any_pb2.Any(type_url=type_url, value=struct.SerializeToString()))
    kinds = [kind for kind in (struct_pb2.Struct, struct_pb2.Value) if message.payload.Is(kind.DESCRIPTOR)]
    if not kinds:
        with pytest.raises(ValidationError) as refused:
            decode_payload(message)
        assert refused.value.details == {"pointer": "/payload", "type_url": type_url}
        return
    unpacked = kinds[0]()
    assert message.payload.Unpack(unpacked)
    assert decode_payload(message) == json_format.MessageToDict(unpacked)


def test_payload_bytes_that_are_not_the_named_message_are_a_validation_error() -> None:
    message = pb.MCPMessage(action="echo", payload=any_pb2.Any(
        type_url="type.googleapis.com/google.protobuf.Struct", value=b"\xff\xff\xff"))
    with pytest.raises(ValidationError) as refused:
        decode_payload(message)
    assert refused.value.details["pointer"] == "/payload"
