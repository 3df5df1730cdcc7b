"""JSON values in and out of the gRPC door's protobuf messages: the payload ``Any`` in, the result ``Value`` out.

Both ways without ``json_format``'s generic, per-field descriptor walk (about half of the
door's own time per call): the same values and the same refusals, checked against it in
tests/unit/doors/test_grpc_values.py.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError

from daemon.core.decoding import MAX_DEPTH, check_value
from daemon.core.errors import ValidationError
from daemon.core.i18n import t
from proto import mcp_v2_pb2 as pb

#: the full names of the two messages a payload ``Any`` may hold
_STRUCT, _VALUE = struct_pb2.Struct.DESCRIPTOR.full_name, struct_pb2.Value.DESCRIPTOR.full_name
#: what a refusal calls the payload (rendered only for a refusal; built once, not per call)
_PAYLOAD_WHAT = t("errors.what.payload")


def decode_payload(message: pb.MCPMessage) -> Any:
    """``payload`` (an Any holding a Struct, or a Value) -> JSON value; empty -> {}.

    The value passes the checks every door's JSON passes (``core/decoding.check_value``); a
    Struct nested past protobuf's own limit (about 50 JSON levels) is VALIDATION_ERROR too.
    """
    payload = message.payload
    type_url = payload.type_url
    if not type_url:
        return {}
    # Any.Is + Any.Unpack, without their per-call descriptor lookups: the same test ("/" in the
    # URL, its last part the full name) and the same parse of ``value`` into a fresh message
    name = type_url.rpartition("/")[2] if "/" in type_url else ""
    kind: type[struct_pb2.Struct] | type[struct_pb2.Value] | None = (
        struct_pb2.Struct if name == _STRUCT else struct_pb2.Value if name == _VALUE else None)
    if kind is not None:
        try:
            unpacked = kind.FromString(payload.value)
            value = _struct_to_python(unpacked) if isinstance(unpacked, struct_pb2.Struct) \
                else _value_to_python(unpacked)
        except (DecodeError, RecursionError, json_format.ParseError, ValueError) as exc:
            raise ValidationError(
                t("errors.doors_grpc.payload_not_valid_nests", full_name=kind.DESCRIPTOR.full_name, exc=exc),
                {"pointer": "/payload", "max_depth": MAX_DEPTH},
            ) from None
        check_value(value, what=_PAYLOAD_WHAT, pointer="/payload")
        return value
    raise ValidationError(
        t("errors.doors_grpc.payload_google_protobuf_struct"),
        {"pointer": "/payload", "type_url": payload.type_url},
    )


def _value_to_python(value: struct_pb2.Value) -> Any:
    """``json_format.MessageToDict(value)`` without its per-field descriptor walk: the same values, errors too."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _struct_to_python(value.struct_value)
    if kind == "list_value":
        return [_value_to_python(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if math.isinf(number) or math.isnan(number):
            raise ValueError(f"Fail to serialize {number} for Value.number_value, which would parse as string_value")
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None  # null_value, or no kind set: MessageToDict reads both as null


def _struct_to_python(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _value_to_python(item) for key, item in struct.fields.items()}


def _fill(target: struct_pb2.Value, value: Any) -> bool:
    """Set ``target`` to the JSON value ``value``; False (``target`` half set) for anything JSON has no type for."""
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):  # before int: a bool is an int
        target.bool_value = value
    elif isinstance(value, int | float):
        target.number_value = value
    elif value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, dict):
        fields = target.struct_value.fields
        target.struct_value.SetInParent()  # {} is a struct too
        for key, item in value.items():
            if not isinstance(key, str) or not _fill(fields[key], item):
                return False
    elif isinstance(value, list):
        values = target.list_value.values
        target.list_value.SetInParent()
        for item in value:
            if not _fill(values.add(), item):
                return False
    else:
        return False
    return True


def to_value(result_json: bytes, result: Any = None) -> struct_pb2.Value:
    """The call's result as a protobuf Value: built from ``result`` when it holds only JSON's own types
    (lists, str-keyed dicts, str, numbers, bools, None: what ``result_json`` encodes), else parsed
    from the pipeline's already-encoded ``result_json``."""
    value = struct_pb2.Value()
    fill_value(value, result_json, result)
    return value


def fill_value(target: struct_pb2.Value, result_json: bytes, result: Any = None) -> None:
    """``to_value`` into ``target`` (a reply's own field: no Value built aside and then copied in)."""
    if result is not None and _fill(target, result):
        return
    target.Clear()
    json_format.Parse(result_json, target)
