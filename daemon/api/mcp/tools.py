"""Capabilities as MCP tools: listing, ``tools/call`` params -> ``CallRequest``, results and errors back.

MCP wants object schemas both ways: a capability whose schema is not an object is listed
with ``{"type": "object"}``, and a non-object result travels as ``{"result": ...}`` in
``structuredContent``.  A HubError from a call keeps the hub's code: a capability the
caller may not see or that does not exist (HTTP 403/404) is the protocol's "unknown tool",
JSON-RPC -32602 with the contract body as ``data``; any other is a tool result with
``isError`` and the contract body as ``structuredContent``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from daemon.api.mcp.jsonrpc import INVALID_PARAMS, Rpc, RpcError, message, sse_event
from daemon.api.mcp.versions import SERVER_INFO, SERVER_INFO_KEY
from daemon.core.envelope import CallRequest, CallResult, CapabilityEntry, ProgressPart, trace_id_var
from daemon.core.errors import HubError

# params._meta keys of this hub
TTL_KEY = "democratic-ai/ttl"  # the call's TTL in seconds
PRIORITY_KEY = "democratic-ai/priority"  # 0-9, as /v1/call's priority

#: http_api.encode's JSON (compact, non-ASCII kept), without building an encoder per call
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
#: the tail every modern reply ends its result with (endpoint._result adds it to the others)
_MODERN_TAIL = b',"resultType":"complete","_meta":' + _json({SERVER_INFO_KEY: SERVER_INFO}).encode() + b"}}"


def object_schema(schema: Any) -> dict[str, Any]:
    """``schema`` when it describes an object, else the any-object schema."""
    if isinstance(schema, dict) and schema.get("type") == "object":
        return schema
    return {"type": "object"}


def tool(capability: CapabilityEntry) -> dict[str, Any]:
    """One ``tools/list`` entry: named after the action, described by it when it has no description."""
    return {
        "name": capability.action,
        "description": capability.description or capability.action,
        "inputSchema": object_schema(capability.input_schema),
        "outputSchema": object_schema(capability.output_schema),
    }


def call_request(rpc: Rpc) -> CallRequest:
    """The pipeline's call for a ``tools/call``: name, arguments, and TTL / priority from ``_meta``."""
    name = rpc.params.get("name")
    if not isinstance(name, str) or not name:
        raise RpcError(INVALID_PARAMS, "tools/call needs params.name")
    arguments = rpc.params.get("arguments", {})
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise RpcError(INVALID_PARAMS, "params.arguments must be an object")
    ttl = rpc.meta.get(TTL_KEY)
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise RpcError(INVALID_PARAMS, f"params._meta[{TTL_KEY!r}] must be a positive number of seconds")
    priority = rpc.meta.get(PRIORITY_KEY, 5)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise RpcError(INVALID_PARAMS, f"params._meta[{PRIORITY_KEY!r}] must be an integer 0-9")
    return CallRequest(action=name, payload=arguments, priority=priority,
                       ttl=float(ttl) if ttl is not None else None, door="mcp",
                       trace_id=trace_id_var.get(), bytes_in=len(rpc.request.body))


def tool_result(rpc: Rpc, result: CallResult) -> dict[str, Any]:
    """A successful call as a tool result: the JSON as text, and as ``structuredContent``."""
    text = result.result_json.decode()
    structured = result.result if isinstance(result.result, dict) else {"result": result.result}
    out: dict[str, Any] = {"content": [{"type": "text", "text": text}], "structuredContent": structured,
                           "isError": False}
    if rpc.modern:
        out["resultType"] = "complete"
    if result.served_by:
        out["_meta"] = {"democratic-ai/served_by": result.served_by}
    return out


def tool_reply(rpc: Rpc, result: CallResult) -> bytes | None:
    """The whole JSON-RPC answer to a successful tools/call, with the pipeline's encoded result spliced in.

    Byte for byte what ``encode(message(rpc.id, tool_result(...)))`` with the endpoint's modern
    ``_meta`` gives (``result_json`` is encoded as ``encode`` does): the result is not encoded
    again, twice (as text and as ``structuredContent``).  None for a forwarded call (its
    ``result_json`` is the peer's bytes): the dict path answers it.
    """
    if result.served_by:
        return None
    text = result.result_json.decode()
    structured = result.result_json if isinstance(result.result, dict) else \
        b'{"result":' + result.result_json + b"}"
    return b"".join((b'{"jsonrpc":"2.0","id":', _json(rpc.id).encode(),
                     b',"result":{"content":[{"type":"text","text":', _json(text).encode(),
                     b'}],"structuredContent":', structured, b',"isError":false',
                     _MODERN_TAIL if rpc.modern else b"}}"))


def call_error(rpc: Rpc, exc: HubError) -> dict[str, Any]:
    """A HubError from a tools/call as the JSON-RPC message that answers it."""
    body = exc.to_body(trace_id_var.get())
    if exc.http_status in (403, 404):
        # not a tool this caller has: the protocol's "unknown tool"
        error = RpcError(INVALID_PARAMS, f"Unknown tool: {rpc.params.get('name')}", body["error"])
        return message(rpc.id, error=error)
    result: dict[str, Any] = {
        "content": [{"type": "text", "text": f"{exc.code}: {exc.render()}"}],
        "structuredContent": body,
        "isError": True,
    }
    if rpc.modern:
        result["resultType"] = "complete"
    return message(rpc.id, result)


class ToolStream:
    """SSE body of a streamed tools/call: progress notifications, then the response; ``aclose`` ends the call."""

    def __init__(self, rpc: Rpc, token: str | int, first: ProgressPart | CallResult,
                 parts: AsyncIterator[ProgressPart | CallResult]) -> None:
        self._rpc = rpc
        self._token = token
        self._pending: ProgressPart | CallResult | None = first
        self._parts = parts
        self._done = False

    def __aiter__(self) -> ToolStream:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        part = self._pending
        self._pending = None
        try:
            if part is None:
                part = await anext(self._parts)
        except StopAsyncIteration:
            self._done = True
            raise
        except HubError as exc:
            self._done = True
            return sse_event(call_error(self._rpc, exc))
        if isinstance(part, CallResult):
            self._done = True
            return sse_event(message(self._rpc.id, tool_result(self._rpc, part)))
        params: dict[str, Any] = {"progressToken": self._token, "progress": part.progress, "total": 1.0}
        if part.message:
            params["message"] = part.message
        return sse_event({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    async def aclose(self) -> None:
        """End the stream and the pipeline's call behind it (the client went away or read to the end)."""
        self._done = True
        await self._parts.aclose()  # type: ignore[attr-defined]
