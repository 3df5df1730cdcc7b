"""HttpApi without a transport: ApiRequest in, ApiResponse out, over an in-memory pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.fakes import InProcessHub, api_request, body_json, in_process_hub


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[InProcessHub]:
    async with in_process_hub(tmp_path) as parts:
        yield parts


async def test_post_call_answers_the_result_and_its_receipt(hub: InProcessHub) -> None:
    response = await hub.api.handle(api_request("POST", "/v1/call", {"action": "echo", "payload": {"x": 1}}))
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.headers["RateLimit-Remaining"] == "99"  # the gate's headers reach the reply
    assert response.headers["x-trace-id"] == "trace-1"
    body = body_json(response)
    assert (body["module"], body["result"], body["receipt"]) == ("echo", {"x": 1}, {"seq": 1, "hash": "h1"})
    assert len(hub.gate.recorded) == 1


async def test_a_body_that_is_not_json_is_a_400_validation_error(hub: InProcessHub) -> None:
    response = await hub.api.handle(api_request("POST", "/v1/call", raw=b"{not json"))
    assert response.status == 400
    error = body_json(response)["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["trace_id"] == "trace-1"
    assert hub.gate.admitted == []


async def test_a_call_without_a_valid_key_is_401(hub: InProcessHub) -> None:
    response = await hub.api.handle(api_request("POST", "/v1/call", {"action": "echo"}, key="dai_wrong"))
    assert (response.status, body_json(response)["error"]["code"]) == (401, "UNAUTHENTICATED")


async def test_an_unknown_route_is_404(hub: InProcessHub) -> None:
    response = await hub.api.handle(api_request("GET", "/v1/nothing-here"))
    assert response.status == 404
    assert body_json(response)["error"]["code"] == "NOT_FOUND"


async def test_a_wrong_method_is_405_naming_the_allowed_ones(hub: InProcessHub) -> None:
    response = await hub.api.handle(api_request("GET", "/v1/call"))
    assert response.status == 405
    assert response.headers["allow"] == "POST"
    assert body_json(response)["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_capabilities_list_echo_and_the_module_serving_it(hub: InProcessHub) -> None:
    response = await hub.api.handle(api_request("GET", "/v1/capabilities"))
    assert response.status == 200
    body = body_json(response)
    by_action = {c["action"]: c for c in body["capabilities"]}
    assert {"echo", "echo.stream", "order.run"} <= set(by_action)
    assert [m["id"] for m in by_action["echo"]["modules"]] == ["echo"]
    assert by_action["echo.stream"]["streaming"] is True
    assert body["failed_modules"] == []


async def test_a_streamed_call_answers_ndjson_lines(hub: InProcessHub) -> None:
    request = api_request("POST", "/v1/call", {"action": "echo.stream", "payload": {"steps": 2}},
                          headers={"accept": "application/x-ndjson"})
    response = await hub.api.handle(request)
    assert response.status == 200 and response.stream is not None
    lines = [line async for line in response.stream]
    await response.stream.aclose()
    assert len(lines) == 3
    assert lines[-1].startswith(b'{"type":"result","is_complete":true,')


@pytest.mark.parametrize(("story", "raw", "pointer"), [
    ("JSON nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, ""),
    ("a lone surrogate in the payload", b'{"action": "echo", "payload": {"text": "\\ud800"}}', "/payload/text"),
    ("a lone surrogate in the action", b'{"action": "\\udfff"}', "/action"),
    ("a NaN in the payload", b'{"action": "echo", "payload": {"n": NaN}}', ""),
])
async def test_hostile_json_is_a_400_validation_error_never_a_500(story: str, raw: bytes, pointer: str,
                                                                 hub: InProcessHub) -> None:
    response = await hub.api.handle(api_request("POST", "/v1/call", raw=raw))
    assert response.status == 400, story
    error = body_json(response)["error"]
    assert (error["code"], error["details"]["pointer"]) == ("VALIDATION_ERROR", pointer), story
    assert hub.gate.admitted == []
