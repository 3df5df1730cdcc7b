"""JSON-RPC 2.0 framing for ``/mcp``: decoding one request, building answers, SSE events.

One JSON-RPC message per POST: a batch, a body that is not one 2.0 message object, or a
request whose ``id`` / ``method`` / ``params`` have the wrong type is refused before any
method runs.  Error answers ride HTTP 200 in the handshake era; on the modern path the
transport's table (``MODERN_ERROR_STATUS``) gives each code its own status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.api.http_api import ApiRequest, ApiResponse, encode
from daemon.core.decoding import decode_json_async
from daemon.core.envelope import Principal, trace_id_var
from daemon.core.errors import ValidationError

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
INTERNAL_ERROR = -32603
HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION = -32020, -32022
#: HTTP status of a JSON-RPC error on the 2026-07-28 path (its transport's table); handshake-era errors ride 200
MODERN_ERROR_STATUS = {PARSE_ERROR: 400, INVALID_REQUEST: 400, INVALID_PARAMS: 400, HEADER_MISMATCH: 400,
                       UNSUPPORTED_PROTOCOL_VERSION: 400, METHOD_NOT_FOUND: 404}

SSE = "text/event-stream"


class RpcError(Exception):
    """A JSON-RPC error answer; ``http_status``, when set, overrides the era's status for it."""

    def __init__(self, code: int, message: str, data: Any = None, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class Rpc:
    """One decoded JSON-RPC request and where it came from (its era, version and caller)."""

    id: str | int
    method: str
    params: dict[str, Any]
    request: ApiRequest
    principal: Principal
    modern: bool
    version: str

    @property
    def meta(self) -> dict[str, Any]:
        """``params._meta``, or an empty dict when it is absent or not an object."""
        meta = self.params.get("_meta")
        return meta if isinstance(meta, dict) else {}


def message(rpc_id: Any, result: dict[str, Any] | None = None, error: RpcError | None = None) -> dict[str, Any]:
    """The JSON-RPC response object: ``error`` when given (``data`` only when set), else ``result``."""
    if error is not None:
        body: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.data is not None:
            body["data"] = error.data
        return {"jsonrpc": "2.0", "id": rpc_id, "error": body}
    return {"jsonrpc": "2.0", "id": rpc_id, "result": result}


def sse_event(value: dict[str, Any]) -> bytes:
    """One JSON-RPC message as a complete SSE ``message`` event (blank-line terminated)."""
    return b"event: message\ndata: " + encode(value) + b"\n\n"


async def decode_message(request: ApiRequest) -> dict[str, Any]:
    """The POST body as one JSON-RPC 2.0 message object; ``RpcError`` (with its HTTP status) otherwise.

    Checked in order: Content-Type (415), Accept (406), JSON (400: the hub's one decoder, so too
    deep or a lone surrogate is a parse error too), no batch (400), a 2.0 object (400).
    """
    content_type = request.header("content-type").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise RpcError(INVALID_REQUEST, "Content-Type must be application/json", http_status=415)
    accept = request.header("accept")
    if accept and not any(t in accept for t in ("application/json", SSE, "*/*", "application/*")):
        raise RpcError(INVALID_REQUEST, "Accept must allow application/json and text/event-stream",
                       http_status=406)
    try:
        decoded = await decode_json_async(request.body)  # a large body off the loop
    except ValidationError as exc:
        # JSON-RPC's own code, and the contract's body (VALIDATION_ERROR, the pointer) as its data
        raise RpcError(PARSE_ERROR, f"Parse error: {exc.render()}", exc.to_body(trace_id_var.get()),
                       http_status=400) from None
    if isinstance(decoded, list):
        raise RpcError(INVALID_REQUEST, "batches are not supported: send one JSON-RPC message per POST",
                       http_status=400)
    if not isinstance(decoded, dict) or decoded.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, "the body must be one JSON-RPC 2.0 message object", http_status=400)
    return decoded


def request_parts(decoded: dict[str, Any]) -> tuple[str | int, str, dict[str, Any]]:
    """``(id, method, params)`` of a message that has an ``id``; 400 when one has the wrong type."""
    rpc_id = decoded["id"]
    if isinstance(rpc_id, bool) or not isinstance(rpc_id, str | int):
        raise RpcError(INVALID_REQUEST, "`id` must be a string or an integer", http_status=400)
    method = decoded.get("method")
    if not isinstance(method, str):
        raise RpcError(INVALID_REQUEST, "a request needs a `method` (this endpoint takes no responses)",
                       http_status=400)
    params = decoded.get("params", {})
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "`params` must be an object", http_status=400)
    return rpc_id, method, params


def error_reply(rpc_id: Any, exc: RpcError, *, modern: bool) -> ApiResponse:
    """``exc`` as the HTTP answer: its own status, else the modern table's, else 200."""
    status = exc.http_status or (MODERN_ERROR_STATUS.get(exc.code, 200) if modern else 200)
    return ApiResponse(status, {"content-type": "application/json"}, encode(message(rpc_id, error=exc)))
