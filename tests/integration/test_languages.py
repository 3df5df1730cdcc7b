"""A Japanese, a Chinese and an English caller hit the same mistakes on one real hub.

Each reads the message in its own language (Accept-Language over HTTP and MCP, metadata
``lang`` over gRPC, the POSIX locale for the CLI); the error ``code`` never changes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

import aiohttp
import grpc
import pytest

from daemon.core.i18n import t
from proto import mcp_v2_pb2 as pb
from proto import mcp_v2_pb2_grpc as pb_grpc
from tests.support.cli import cli_argv
from tests.support.doorclients import Hub, mcp_message
from tests.support.hubproc import ROOT, HubProcess

KANA = re.compile(r"[\u3040-\u30ff]")  # hiragana and katakana: Japanese, never Chinese
HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def doors(hub: HubProcess) -> Hub:
    return Hub(hub.endpoints, hub.state_dir)


async def post_call(doors: Hub, key: str, body: dict[str, Any], lang: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"X-API-Key": key, **({"Accept-Language": lang} if lang is not None else {})}
    async with aiohttp.ClientSession() as session, \
            session.post(f"{doors.http}/v1/call", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_a_bad_call_answers_in_the_callers_language_with_the_same_code(doors: Hub, hub: HubProcess) -> None:
    body = {"action": "no.such.capability", "payload": {}}
    status, english = await post_call(doors, hub.admin_key, body, None)
    assert status == 404 and english["error"]["code"] == "CAPABILITY_NOT_FOUND"
    assert "no.such.capability" in english["error"]["message"] and not HAN.search(english["error"]["message"])

    status, japanese = await post_call(doors, hub.admin_key, body, "ja-JP,ja;q=0.9,en;q=0.8")
    assert status == 404 and japanese["error"]["code"] == "CAPABILITY_NOT_FOUND"
    assert japanese["error"]["details"] == english["error"]["details"]
    assert KANA.search(japanese["error"]["message"]) and "no.such.capability" in japanese["error"]["message"]

    status, chinese = await post_call(doors, hub.admin_key, body, "zh-CN")
    assert status == 404 and chinese["error"]["code"] == "CAPABILITY_NOT_FOUND"
    assert HAN.search(chinese["error"]["message"]) and not KANA.search(chinese["error"]["message"])

    status, french = await post_call(doors, hub.admin_key, body, "fr-FR, de;q=0.5")
    assert (status, french["error"]["message"]) == (404, english["error"]["message"])


async def test_a_schema_error_and_a_bad_key_are_translated_too(doors: Hub, hub: HubProcess) -> None:
    status, answer = await post_call(doors, hub.admin_key, {"action": "echo", "priority": 42}, "ja")
    assert (status, answer["error"]["code"]) == (400, "VALIDATION_ERROR")
    assert answer["error"]["message"] == t("errors.http_api.priority_integer").render("ja")

    status, answer = await post_call(doors, "dai_not-a-real-key-at-all", {"action": "echo"}, "zh-Hans")
    assert (status, answer["error"]["code"]) == (401, "UNAUTHENTICATED")
    assert answer["error"]["message"] == "API 密钥无效"


async def test_grpc_metadata_lang_picks_the_language_of_the_status_and_the_trailer(
        doors: Hub, hub: HubProcess) -> None:
    host, port = doors.hostport("grpc")
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        stub = pb_grpc.HubStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as japanese:
            await stub.Call(mcp_message("no.such.capability", {}),
                            metadata=(("x-api-key", hub.admin_key), ("lang", "ja")), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as english:
            await stub.Call(mcp_message("no.such.capability", {}), metadata=(("x-api-key", hub.admin_key),),
                            timeout=30)
    assert japanese.value.code() is english.value.code() is grpc.StatusCode.NOT_FOUND
    body = pb.ErrorBody.FromString(dict(japanese.value.trailing_metadata() or ())["democratic-ai-error-bin"])
    assert body.code == "CAPABILITY_NOT_FOUND" and KANA.search(body.message)
    assert japanese.value.details() == body.message != english.value.details()


def run_cli_in(lang: str, hub: HubProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LANG": lang, "LC_ALL": "", "LC_MESSAGES": ""}
    return subprocess.run(cli_argv(hub.state_dir, *args), cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def test_the_cli_speaks_the_locales_language_and_keeps_its_exit_codes(hub: HubProcess) -> None:
    japanese = run_cli_in("ja_JP.UTF-8", hub, "call", "echo", "--payload", "{not json")
    english = run_cli_in("C.UTF-8", hub, "call", "echo", "--payload", "{not json")
    assert japanese.returncode == english.returncode == 2
    assert english.stderr.startswith("democratic-ai: --payload is not valid JSON")
    assert japanese.stderr.startswith("democratic-ai: --payload が有効な JSON ではありません")

    # the hub's own refusal comes back in the locale's language as well
    chinese = run_cli_in("zh_CN.UTF-8", hub, "call", "no.such.capability", "--key", hub.admin_key)
    assert chinese.returncode == 1
    answer = json.loads(chinese.stdout)
    assert answer["error"]["code"] == "CAPABILITY_NOT_FOUND" and HAN.search(answer["error"]["message"])


async def test_mcp_answers_in_the_accept_language(doors: Hub) -> None:
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "X-API-Key": "dai_not-a-real-key-at-all"}
    async with aiohttp.ClientSession() as session:
        answers = {}
        for lang in ("ja", "zh-TW", "en"):
            async with session.post(f"{doors.http}/mcp", json=request,
                                    headers={**headers, "Accept-Language": lang}) as resp:
                assert resp.status == 401 and resp.headers["www-authenticate"].startswith("Bearer")
                answers[lang] = (await resp.json())["error"]
    assert {a["code"] for a in answers.values()} == {"UNAUTHENTICATED"}
    assert answers["ja"]["message"] == "API キーが無効です"
    assert answers["zh-TW"]["message"] == "API 密钥无效"
    assert answers["en"]["message"] == "invalid API key"


def test_the_clis_notes_follow_the_locale_but_what_scripts_read_does_not(hub: HubProcess) -> None:
    created = run_cli_in("ja_JP.UTF-8", hub, "key", "create", "--tenant", "default", "--role", "viewer")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("dai_") and "\n" not in key  # stdout: the key alone, as `KEY=$(...)` expects
    assert "表示は一度きりです" in created.stderr and "(viewer)" not in created.stderr

    refused = run_cli_in("zh_CN.UTF-8", hub, "tenant", "create", "kobe", "--plan", "no-such-plan")
    assert refused.returncode == 2
    assert refused.stderr.startswith("democratic-ai: plan：'no-such-plan' 不在 ")
