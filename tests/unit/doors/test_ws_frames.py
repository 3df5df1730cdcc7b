"""The /v1/ws result frame spliced from the pipeline's encoded result is the frame the dict path writes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from daemon.core.envelope import CallResult, PeerReceipt, Receipt
from daemon.core.pipeline import encode_json
from daemon.doors.ws_clients import _encode, _part_frame


def _dict_path(result: CallResult, call_id: Any) -> str:
    """What the door wrote before it spliced: the whole frame as a dict, through json.dumps."""
    frame = {"type": "result", **result.to_dict()}
    return json.dumps({**frame, "id": call_id, "message_id": result.id}, separators=(",", ":"))


@pytest.mark.parametrize("value", [{"n": 1, "text": "hello"}, [1, 2.5, None, True], "x", 3, None,
                                   {"quote": "a\"b\\c\n", "nested": {"deep": [{"k": 1e100}]}}])
@pytest.mark.parametrize("receipt", [None, Receipt(7, "ab" * 32), Receipt(8, "cd" * 32, PeerReceipt("n1", 3, "ef"))])
@pytest.mark.parametrize("call_id", ["1", 42, None, "é"])
@pytest.mark.parametrize("served_by", ["", "node-b"])
def test_a_spliced_result_frame_is_byte_for_byte_the_dict_frame(value: Any, receipt: Receipt | None,
                                                                call_id: Any, served_by: str) -> None:
    result = CallResult(id="m-1", correlation_id="c-1", module="echo", result=value, receipt=receipt,
                        result_json=encode_json(value), served_by=served_by)
    frame = _part_frame(result, call_id)
    assert isinstance(frame, str)
    assert frame == _dict_path(result, call_id)


def test_a_non_ascii_result_takes_the_dict_path_and_keeps_its_escapes() -> None:
    value = {"text": "こんにちは"}
    result = CallResult(id="m-1", correlation_id="c-1", module="echo", result=value, receipt=None,
                        result_json=encode_json(value))
    frame = _part_frame(result, "1")
    assert isinstance(frame, dict)
    assert _encode(frame) == _dict_path(result, "1")
