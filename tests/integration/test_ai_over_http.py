"""Real AI through the hub: speech, a page and sentences sent to `POST /v1/call`.

One hub with the four ONNX-backed modules; the inputs are made here (espeak-ng speaks,
Pillow draws).  The ledger must carry each module's own usage units.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest

from tests.support.hubproc import HubProcess, write_config
from tests.support.media import b64, cosine, espeak, page, squash, wav_bytes

MODULES = ("audio.vad", "image.ocr", "text.embed", "text.summarize")


@pytest.fixture(scope="module")
def ai_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    state = tmp_path_factory.mktemp("ai-hub")
    hub = HubProcess(state, write_config(state / "hub.toml", modules=MODULES)).start(timeout=120)
    yield hub
    hub.stop()


async def call(hub: HubProcess, action: str, payload: dict, *, stream: bool = False) -> tuple[int, dict | list]:
    headers = {"X-API-Key": hub.admin_key}
    if stream:
        headers["Accept"] = "application/x-ndjson"
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async with session.post(f"{hub.url}/v1/call", json={"action": action, "payload": payload}) as resp:
            if stream and resp.status == 200:
                return resp.status, [json.loads(line) async for line in resp.content if line.strip()]
            return resp.status, await resp.json()


def ledger_units(hub: HubProcess, seq: int) -> dict:
    conn = sqlite3.connect(f"file:{hub.state_dir / 'ledger.db'}?mode=ro", uri=True)
    with contextlib.closing(conn):
        (units,) = conn.execute("SELECT units FROM events WHERE seq = ?", (seq,)).fetchone()
    return json.loads(units)


async def test_the_four_models_are_ready_and_listed(ai_hub: HubProcess) -> None:
    async with aiohttp.ClientSession(headers={"X-API-Key": ai_hub.admin_key}) as session:
        async with session.get(f"{ai_hub.url}/ready") as resp:
            ready = await resp.json()
        async with session.get(f"{ai_hub.url}/v1/capabilities") as resp:
            caps = {c["action"]: c for c in (await resp.json())["capabilities"]}
    assert ready["ready"] and ready["failed_modules"] == []
    for action in ("audio.vad", "audio.vad.stream", "image.ocr", "text.embed", "text.summarize"):
        assert action in caps
    # the execution provider each model really got is shown
    assert caps["text.embed"]["modules"][0]["provider"] == "CPUExecutionProvider"


async def test_speech_is_found_in_a_spoken_clip(ai_hub: HubProcess, tmp_path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    phrase, rate = espeak("The edge hub hears this sentence clearly.", tmp_path)
    silence = np.zeros(rate, dtype=np.int16)
    clip = np.concatenate([silence, phrase, silence])
    status, body = await call(ai_hub, "audio.vad", {"audio": b64(wav_bytes(clip, rate))})
    assert status == 200, body
    segments = body["result"]["segments"]
    assert len(segments) >= 1
    assert 0.7 < segments[0]["start"] < 1.4  # the speech starts after one second of silence
    assert abs(segments[-1]["end"] - (1 + len(phrase) / rate)) < 0.6
    assert ledger_units(ai_hub, body["receipt"]["seq"])["audio_seconds"] == pytest.approx(len(clip) / rate, 0.01)

    status, parts = await call(ai_hub, "audio.vad.stream", {"audio": b64(wav_bytes(clip, rate))}, stream=True)
    assert status == 200 and parts[-1]["type"] == "result"
    assert [p["type"] for p in parts[:-1]] and all(p["type"] == "progress" for p in parts[:-1])


async def test_text_is_read_off_a_drawn_page(ai_hub: HubProcess) -> None:
    status, body = await call(ai_hub, "image.ocr", {"image": b64(page(["Democratic edge hub", "Total 42"]))})
    assert status == 200, body
    text = squash(body["result"]["text"])
    for word in ("democratic", "edge", "hub", "total", "42"):
        assert word in text, body["result"]
    assert ledger_units(ai_hub, body["receipt"]["seq"]) == {"images": 1.0, "pixels": 360000.0}


async def test_embeddings_put_a_paraphrase_closer_than_an_unrelated_sentence(ai_hub: HubProcess) -> None:
    texts = ["How do I reset my password?", "I forgot my password and need to change it.",
             "The giraffe is the tallest land animal."]
    status, body = await call(ai_hub, "text.embed", {"texts": texts})
    assert status == 200, body
    anchor, paraphrase, unrelated = body["result"]["embeddings"]
    assert body["result"]["dimensions"] == 384
    assert cosine(anchor, paraphrase) > cosine(anchor, unrelated) + 0.3
    assert ledger_units(ai_hub, body["receipt"]["seq"])["tokens"] == body["result"]["tokens"]


async def test_summaries_rank_by_meaning_within_max_length(ai_hub: HubProcess) -> None:
    text = ("Edge hubs run AI models next to the people who use them. They answer quickly because nothing "
            "leaves the building. A hub on a small box can transcribe, read documents and search text. "
            "My neighbour's cat prefers the sunny side of the garden. Running models at the edge keeps data "
            "private and costs predictable.")
    status, body = await call(ai_hub, "text.summarize", {"text": text, "max_length": 160})
    assert status == 200, body
    result = body["result"]
    assert result["method"] == "centrality" and 0 < len(result["summary"]) <= 160
    assert "cat" not in result["summary"]  # the off-topic sentence is the least central


@pytest.mark.parametrize(("action", "payload", "pointer"), [
    ("audio.vad", {"audio": "%%%not base64"}, "/audio"),
    ("audio.vad", {"audio": b64(b"RIFF....WAVEnot really")}, "/audio"),
    ("image.ocr", {"image": b64(b"GIF89a" + bytes(64))}, "/image"),
    ("text.embed", {"text": ""}, "/text"),
    ("text.summarize", {"text": ""}, "/text"),
])
async def test_bad_media_is_a_validation_error_naming_the_field(ai_hub: HubProcess, action: str, payload: dict,
                                                               pointer: str) -> None:
    status, body = await call(ai_hub, action, payload)
    assert status == 400, body
    assert body["error"]["code"] == "VALIDATION_ERROR" and body["error"]["details"]["pointer"] == pointer
    status, _ = await call(ai_hub, "text.embed", {"text": "still serving"})
    assert status == 200
