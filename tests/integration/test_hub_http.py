"""A user's story of the HTTP/1.1 + WebSocket door against a real hub process."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.support.hubproc import HubProcess


def key_headers(hub: HubProcess) -> dict[str, str]:
    return {"X-API-Key": hub.admin_key}


async def post_call(hub: HubProcess, body: object, headers: dict[str, str] | None = None,
                    raw: bytes | None = None) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as session:
        kwargs = {"data": raw} if raw is not None else {"json": body}
        async with session.post(f"{hub.url}/v1/call", headers=headers if headers is not None else key_headers(hub),
                                **kwargs) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers.copy()


async def test_health_and_ready_answer_without_credentials(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hub.url}/health") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        async with session.get(f"{hub.url}/ready") as resp:
            ready = await resp.json()
            assert resp.status == 200 and ready["ready"] is True
            assert {"echo", "text.summarize"} <= set(ready["modules"])


async def test_echo_returns_the_payload_with_a_receipt(hub: HubProcess) -> None:
    status, body, headers = await post_call(hub, {"action": "echo", "payload": {"hello": "edge"},
                                                  "correlation_id": "c-1"})
    assert status == 200, body
    assert body["result"] == {"hello": "edge"}
    assert body["module"] == "echo"
    assert body["correlation_id"] == "c-1"
    assert isinstance(body["receipt"]["seq"], int) and len(body["receipt"]["hash"]) == 64
    assert headers.get("X-Trace-Id")


async def test_receipts_increase_call_after_call(hub: HubProcess) -> None:
    seqs = []
    for _ in range(3):
        status, body, _ = await post_call(hub, {"action": "echo", "payload": {}})
        assert status == 200
        seqs.append(body["receipt"]["seq"])
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


async def test_summarize_keeps_within_max_length(hub: HubProcess) -> None:
    text = ("The hub runs on a small box at the edge. It serves AI capabilities to local apps. "
            "Billing is exact and durable. The weather today is mild. Apps call the hub over HTTP, "
            "gRPC and HTTP/3. The hub routes each call to a module.")
    status, body, _ = await post_call(hub, {"action": "text.summarize", "payload": {"text": text, "max_length": 120}})
    assert status == 200, body
    summary = body["result"]["summary"]
    assert 0 < len(summary) <= 120
    assert summary in text or all(s.strip(". ") in text for s in summary.split(". "))
    assert 0 < body["result"]["compression_ratio"] < 1


async def test_a_streamed_call_sends_progress_then_the_result(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{hub.url}/v1/call", headers={**key_headers(hub), "Accept": "application/x-ndjson"},
                                json={"action": "echo.stream", "payload": {"steps": 3, "x": 1}}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/x-ndjson")
            lines = [json.loads(line) async for line in resp.content if line.strip()]
    assert [p["type"] for p in lines] == ["progress", "progress", "progress", "result"]
    progress = [p["progress"] for p in lines[:3]]
    assert progress == sorted(progress) and all(0 < p < 1 for p in progress)
    assert lines[-1]["result"] == {"steps": 3, "x": 1} and lines[-1]["receipt"]["seq"] > 0


async def test_websocket_carries_several_calls_and_streams(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{hub.url}/v1/ws", headers=key_headers(hub)) as ws:
            await ws.send_json({"id": "a", "action": "echo", "payload": {"n": 1}})
            await ws.send_json({"id": "b", "action": "echo.stream", "payload": {"steps": 2}, "stream": True})
            await ws.send_json({"id": "c", "action": "no.such.thing", "payload": {}})
            frames: dict[str, list] = {"a": [], "b": [], "c": []}
            done = set()
            while done != {"a", "b", "c"}:
                frame = await ws.receive_json(timeout=10)
                frames[frame["id"]].append(frame)
                if frame["type"] in ("result", "error"):
                    done.add(frame["id"])
    assert frames["a"][-1]["result"] == {"n": 1}
    assert [f["type"] for f in frames["b"]] == ["progress", "progress", "result"]
    assert frames["c"][-1]["error"]["code"] == "CAPABILITY_NOT_FOUND"


async def test_capabilities_list_schemas(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hub.url}/v1/capabilities", headers=key_headers(hub)) as resp:
            assert resp.status == 200
            caps = {c["action"]: c for c in (await resp.json())["capabilities"]}
    assert {"echo", "echo.stream", "text.summarize"} <= set(caps)
    assert caps["text.summarize"]["input_schema"]["required"] == ["text"]
    assert caps["echo.stream"]["streaming"] is True


@pytest.mark.parametrize(
    ("body", "raw", "code", "status", "pointer"),
    [
        (None, b"{not json", "VALIDATION_ERROR", 400, ""),
        (["a", "list"], None, "VALIDATION_ERROR", 400, ""),
        ({"payload": {}}, None, "VALIDATION_ERROR", 400, "/action"),
        ({"action": 7}, None, "VALIDATION_ERROR", 400, "/action"),
        ({"action": "echo", "priority": 12}, None, "VALIDATION_ERROR", 400, "/priority"),
        ({"action": "echo", "ttl": -1}, None, "VALIDATION_ERROR", 400, "/ttl"),
        ({"action": "text.summarize", "payload": {"text": "x", "max_length": "long"}}, None, "VALIDATION_ERROR",
         400, "/max_length"),
        ({"action": "text.summarize", "payload": {}}, None, "VALIDATION_ERROR", 400, "/text"),
        ({"action": "does.not.exist", "payload": {}}, None, "CAPABILITY_NOT_FOUND", 404, None),
        ({"action": "echo", "target": "ghost"}, None, "MODULE_NOT_FOUND", 404, None),
    ],
)
async def test_bad_calls_get_the_contract_error(hub: HubProcess, body, raw, code, status, pointer) -> None:
    got_status, answer, _ = await post_call(hub, body, raw=raw)
    assert got_status == status, answer
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]
    assert answer["error"]["trace_id"]
    if pointer is not None:
        assert answer["error"]["details"]["pointer"] == pointer


async def test_an_oversized_body_is_payload_too_large_and_the_hub_keeps_serving(hub: HubProcess) -> None:
    big = b'{"action":"echo","payload":{"blob":"' + b"x" * (9 * 1024 * 1024) + b'"}}'
    status, answer, _ = await post_call(hub, None, raw=big)
    assert status == 413 and answer["error"]["code"] == "PAYLOAD_TOO_LARGE"
    status, _, _ = await post_call(hub, {"action": "echo", "payload": {}})
    assert status == 200


async def test_routes_that_do_not_exist_or_wrong_methods_answer_the_error_body(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hub.url}/v2/nothing") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "NOT_FOUND"
        async with session.get(f"{hub.url}/v1/call", headers=key_headers(hub)) as resp:
            assert resp.status == 405 and (await resp.json())["error"]["code"] == "METHOD_NOT_ALLOWED"
            assert "POST" in resp.headers["Allow"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "dai_not_a_real_key"},
        {"Authorization": "Bearer not.a.jwt"},
        # alg=none: header {"alg":"none","typ":"JWT"}, claims of a super admin, no signature
        {"Authorization": "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
                          "eyJzdWIiOiJ4IiwidGVuYW50X2lkIjoieCIsInJvbGUiOiJzdXBlcl9hZG1pbiIsInR5cCI6ImFjY2VzcyJ9."},
    ],
    ids=["missing", "unknown-key", "garbage-jwt", "alg-none-jwt"],
)
async def test_missing_or_bad_credentials_are_unauthenticated(hub: HubProcess, headers) -> None:
    status, answer, _ = await post_call(hub, {"action": "echo", "payload": {}}, headers=headers)
    assert status == 401 and answer["error"]["code"] == "UNAUTHENTICATED"


async def test_metrics_count_calls_by_door_action_and_code(hub: HubProcess) -> None:
    await post_call(hub, {"action": "echo", "payload": {}})
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hub.url}/metrics") as resp:
            text = await resp.text()
    assert 'democratic_ai_requests_total{action="echo",code="OK",door="http"}' in text
    assert "democratic_ai_request_seconds_bucket" in text
    assert 'democratic_ai_in_flight{module="echo"}' in text


async def test_metrics_include_the_ledger_writers_own_samples(hub: HubProcess) -> None:
    import asyncio

    await post_call(hub, {"action": "echo", "payload": {}})
    for _ in range(30):  # the writer process reports every half second
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{hub.url}/metrics") as resp:
                text = await resp.text()
        if "democratic_ai_ledger_commit_seconds_count" in text:
            break
        await asyncio.sleep(0.1)
    assert "democratic_ai_ledger_commit_seconds_count" in text
    assert "democratic_ai_ledger_batch_size_bucket" in text


async def test_log_lines_about_a_request_carry_its_trace_id(hub: HubProcess) -> None:
    status, answer, _ = await post_call(hub, {"action": "echo", "target": "ghost-module"},
                                        headers={**key_headers(hub), "X-Trace-Id": "trace-abc-123"})
    assert status == 404 and answer["error"]["trace_id"] == "trace-abc-123"
    lines = [json.loads(line) for line in hub.log().splitlines() if "trace-abc-123" in line]
    assert lines and all(line["trace_id"] == "trace-abc-123" for line in lines)


def _token(secret: bytes, **overrides: object) -> str:
    import time
    import uuid

    import jwt

    now = int(time.time())
    claims = {"sub": "nobody", "tenant_id": "x", "role": "super_admin", "typ": "access",
              "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex, **overrides}
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_forged_and_expired_tokens_are_unauthenticated(hub: HubProcess) -> None:
    secret = bytes.fromhex((hub.state_dir / "jwt.secret").read_text().strip())
    forged = _token(b"an attacker's secret, 32 bytes long!!")
    expired = _token(secret, iat=1_000_000, exp=1_000_600)
    for token in (forged, expired):
        status, answer, _ = await post_call(hub, {"action": "echo", "payload": {}},
                                            headers={"Authorization": f"Bearer {token}"})
        assert status == 401 and answer["error"]["code"] == "UNAUTHENTICATED", answer
    # the hub keeps serving
    status, _, _ = await post_call(hub, {"action": "echo", "payload": {}})
    assert status == 200


async def test_a_caller_that_hangs_up_cancels_its_call(hub: HubProcess) -> None:
    import asyncio

    from tests.support.doorclients import Hub, metric

    doors = Hub(hub.endpoints, hub.state_dir)
    labels = {"action": "echo.stream", "code": "CANCELLED", "door": "http"}
    before = await metric(doors, "democratic_ai_requests_total", **labels)
    async with aiohttp.ClientSession(headers=key_headers(hub)) as session:
        slow = asyncio.ensure_future(session.post(f"{hub.url}/v1/call", json={
            "action": "echo.stream", "payload": {"steps": 3, "delay_ms": 3000}}))
        for _ in range(100):  # until the call is running in the hub
            if await metric(doors, "democratic_ai_in_flight", module="echo") >= 1:
                break
            await asyncio.sleep(0.05)
        slow.cancel()  # the client gives up and closes the connection
        with pytest.raises(asyncio.CancelledError):
            await slow
    for _ in range(50):
        if await metric(doors, "democratic_ai_requests_total", **labels) == before + 1:
            break
        await asyncio.sleep(0.1)
    assert await metric(doors, "democratic_ai_requests_total", **labels) == before + 1
