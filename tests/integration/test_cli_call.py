"""`democratic-ai call --via http|ws|h3|grpc`: the same answer through every door, from the shell."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import run_cli
from tests.support.hubproc import HubProcess


def run_call(hub: HubProcess, *args: str) -> tuple[int, list[dict]]:
    done = run_cli(hub.state_dir, "call", *args)
    decoder, text, values = json.JSONDecoder(), done.stdout.strip(), []
    while text:
        value, end = decoder.raw_decode(text)
        values.append(value)
        text = text[end:].strip()
    return done.returncode, values


@pytest.mark.parametrize("via", ["http", "ws", "h3", "grpc"])
def test_call_answers_the_same_through_every_door(hub: HubProcess, via: str) -> None:
    code, [answer] = run_call(hub, "echo", "--payload", '{"n": 3, "word": "edge"}', "--via", via)
    assert code == 0, answer
    # the WebSocket frame adds its type, the client's id and the hub's message id
    assert {k: answer[k] for k in ("module", "result")} == {"module": "echo", "result": {"n": 3, "word": "edge"}}
    assert answer["receipt"]["seq"] > 0 and len(answer["receipt"]["hash"]) == 64


@pytest.mark.parametrize("via", ["http", "ws", "h3", "grpc"])
def test_streamed_calls_print_progress_then_the_result(hub: HubProcess, via: str) -> None:
    code, lines = run_call(hub, "echo.stream", "--payload", '{"steps": 2}', "--stream", "--via", via)
    assert code == 0, lines
    assert [line["type"] for line in lines] == ["progress", "progress", "result"]
    assert lines[-1]["result"] == {"steps": 2}


@pytest.mark.parametrize("via", ["http", "grpc"])
def test_an_error_prints_the_contract_body_and_exits_1(hub: HubProcess, via: str) -> None:
    code, [answer] = run_call(hub, "no.such.action", "--via", via)
    assert code == 1
    assert answer["error"]["code"] == "CAPABILITY_NOT_FOUND"
