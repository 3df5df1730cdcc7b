"""``democratic-ai call --via grpc``: the hub's gRPC door, answered in the HTTP door's JSON shapes.

The conversions (:func:`call_response_as_json`, :func:`stream_part_as_json`,
:func:`grpc_error_body`) are shared with the conformance tests, which compare every door's
answers as the HTTP door would print them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.protobuf import any_pb2, json_format, struct_pb2

from daemon.cli.output import print_json
from daemon.core.i18n import language_from_env
from proto import mcp_v2_pb2 as pb

DEFAULT_PORT = 50051


def open_channel(url: str, cafile: Path | None = None) -> grpc.aio.Channel:
    """A channel to ``grpc://`` (plain text) or ``grpcs://`` (TLS: ``cafile`` when given, else the system's CAs)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORT
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if parts.scheme != "grpcs":
        return grpc.aio.insecure_channel(target)
    roots = cafile.read_bytes() if cafile is not None else None
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots))


async def call_grpc(url: str, body: dict[str, Any], api_key: str, stream: bool, *, cafile: Path | None = None) -> int:
    """Send ``body`` (a /v1/call body) to the gRPC door at ``url``, print each answer; 0 when it succeeded."""
    payload = any_pb2.Any()
    value = body.get("payload", {})
    if isinstance(value, dict):
        payload.Pack(json_format.ParseDict(value, struct_pb2.Struct()))
    else:
        payload.Pack(json_format.ParseDict(value, struct_pb2.Value()))
    message = pb.MCPMessage(action=body["action"], payload=payload, target_module_id=body.get("target", ""),
                            priority=int(body.get("priority", 5)), type=pb.REQUEST)
    ttl = body.get("ttl")
    async with open_channel(url, cafile) as channel:
        # the hub renders its errors in the language of the user's locale
        metadata = (("x-api-key", api_key), ("lang", language_from_env(os.environ)))
        serialize = pb.MCPMessage.SerializeToString
        try:
            if stream:
                call_stream = channel.unary_stream("/democratic_ai.v2.Hub/CallStream", request_serializer=serialize,
                                                   response_deserializer=pb.StreamPart.FromString)
                async for part in call_stream(message, metadata=metadata, timeout=ttl):
                    print_json(stream_part_as_json(part))
            else:
                unary = channel.unary_unary("/democratic_ai.v2.Hub/Call", request_serializer=serialize,
                                            response_deserializer=pb.CallResponse.FromString)
                reply = await unary(message, metadata=metadata, timeout=ttl)
                print_json(call_response_as_json(reply))
        except grpc.aio.AioRpcError as exc:
            print_json(grpc_error_body(exc))
            return 1
    return 0


def _json_numbers(value: Any) -> Any:
    """protobuf's Value holds every number as a double: show 3 as 3, as the HTTP door does."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    return value


def call_response_as_json(reply: Any) -> dict[str, Any]:
    """A CallResponse in the shape of the HTTP door's /v1/call answer."""
    receipt = {"seq": reply.receipt.seq, "hash": reply.receipt.hash} if reply.HasField("receipt") else None
    return {"id": reply.id, "correlation_id": reply.correlation_id, "module": reply.module,
            "result": _json_numbers(json_format.MessageToDict(reply.result)), "receipt": receipt}


def stream_part_as_json(part: Any) -> dict[str, Any]:
    """A StreamPart as the HTTP door's NDJSON line."""
    if part.HasField("final"):
        return {"type": "result", "is_complete": True, **call_response_as_json(part.final)}
    line: dict[str, Any] = {"type": "progress", "progress": part.progress.progress,
                            "message": part.progress.message, "is_complete": False}
    if part.progress.HasField("data"):
        line["data"] = _json_numbers(json_format.MessageToDict(part.progress.data))
    return line


def grpc_error_body(exc: Any) -> dict[str, Any]:
    """The contract's error body from a failed RPC's trailers (else built from the status)."""
    for key, value in exc.trailing_metadata() or ():
        if key == "democratic-ai-error-bin" and isinstance(value, bytes):
            body = pb.ErrorBody.FromString(value)
            return {"error": {"code": body.code, "message": body.message,
                              "details": json_format.MessageToDict(body.details), "trace_id": body.trace_id}}
    return {"error": {"code": exc.code().name, "message": exc.details() or "", "details": {}, "trace_id": ""}}
