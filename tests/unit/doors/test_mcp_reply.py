"""A tools/call answer spliced from the pipeline's encoded result is the answer the dict path writes."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.api.http_api import ApiRequest, encode
from daemon.api.mcp import tools
from daemon.api.mcp.jsonrpc import Rpc, message
from daemon.api.mcp.versions import SERVER_INFO, SERVER_INFO_KEY
from daemon.core.envelope import CallResult, Receipt
from daemon.core.pipeline import encode_json


def _dict_path(rpc: Rpc, result: CallResult) -> bytes:
    """What the endpoint wrote before it spliced: tool_result, then _result's modern additions, encoded."""
    out = tools.tool_result(rpc, result)
    if rpc.modern:
        out.setdefault("resultType", "complete")
        out.setdefault("_meta", {})[SERVER_INFO_KEY] = SERVER_INFO
    return encode(message(rpc.id, out))


def _rpc(rpc_id: str | int, modern: bool) -> Rpc:
    return Rpc(rpc_id, "tools/call", {"name": "echo"}, ApiRequest("POST", "/mcp", {}), None,  # type: ignore[arg-type]
               modern=modern, version="2026-07-28" if modern else "2025-11-25")


@pytest.mark.parametrize("value", [{"n": 1, "text": "hello"}, {"text": "こんにちは", "q": "a\"b\\c\n</script>"},
                                   [1, 2.5, None, True], "x", 3, None, {}, {"deep": [{"k": 1e100, "u": "\u2028"}]}])
@pytest.mark.parametrize("rpc_id", [1, "req-é", 0])
@pytest.mark.parametrize("modern", [True, False])
def test_a_spliced_tool_reply_is_byte_for_byte_the_dict_reply(value: Any, rpc_id: str | int, modern: bool) -> None:
    result = CallResult(id="m-1", correlation_id="c-1", module="echo", result=value, receipt=Receipt(1, "ab"),
                        result_json=encode_json(value))
    rpc = _rpc(rpc_id, modern)
    assert tools.tool_reply(rpc, result) == _dict_path(rpc, result)


def test_a_forwarded_result_takes_the_dict_path() -> None:
    result = CallResult(id="m-1", correlation_id="c-1", module="echo", result={"n": 1}, receipt=None,
                        result_json=b'{"n": 1}', served_by="node-b")
    assert tools.tool_reply(_rpc(1, True), result) is None
