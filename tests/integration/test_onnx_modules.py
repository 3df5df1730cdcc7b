"""The ONNX modules with their real models: audio.vad, image.ocr, text.embed, text.summarize.

Capabilities are called through BoundCapability (schema checks included) with a real
ModuleRuntime and thread pool.  Models load once per file (module-scoped fixtures); the
embedding conversion is cached in a temporary directory for the session of this file.

With DEMOCRATIC_AI_TEST_GPU=1 (``make test-gpu``) the providers are left to the helper's
default and every session must really run on CUDAExecutionProvider.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from daemon.core.errors import ValidationError
from modules import bert_onnx, embedder
from modules.builtin.embed import EmbedModule
from modules.builtin.ocr import OcrModule
from modules.builtin.summarize import SummarizeModule
from modules.builtin.vad import VadModule
from modules.model_files import ModelLoadError
from modules.sdk import BoundCapability, Call, Module, ModuleRuntime, Progress
from tests.support.media import b64, cosine, espeak, page, squash, wav_bytes

pytestmark = pytest.mark.asyncio(loop_scope="module")

GPU = os.environ.get("DEMOCRATIC_AI_TEST_GPU") == "1"
EXPECTED_PROVIDER = "CUDAExecutionProvider" if GPU else "CPUExecutionProvider"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PHRASE_A = "Hello world, this is the first phrase."
PHRASE_B = "And here comes the second phrase."
LEAD, GAP, TAIL = 1.0, 1.5, 1.0


# -- helpers --------------------------------------------------------------------------------
def cap(module: Module, action: str) -> BoundCapability:
    return next(c for c in module.capabilities() if c.spec.action == action)


async def call(module: Module, action: str, payload: dict[str, Any]) -> tuple[Any, Call]:
    c = Call(id="t", action=action)
    return await cap(module, action).invoke(payload, c), c


async def bad_input(module: Module, action: str, payload: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        await call(module, action, payload)
    assert info.value.code == "VALIDATION_ERROR"
    return info.value


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, int, float, float]:
    """PCM16 mono: silence, phrase A, a pause, phrase B, silence; and where the phrases start."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): no spoken test clip")
    tmp = tmp_path_factory.mktemp("speech")
    a, rate = espeak(PHRASE_A, tmp)
    b, rate_b = espeak(PHRASE_B, tmp)
    assert rate == rate_b

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(rate * seconds), dtype=np.int16)

    pcm = np.concatenate([silence(LEAD), a, silence(GAP), b, silence(TAIL)])
    return pcm, rate, LEAD, LEAD + len(a) / rate + GAP


@pytest.fixture(scope="module")
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="test-inference")
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


def runtime(executor: concurrent.futures.Executor, state_dir: Path, name: str, **options: Any) -> ModuleRuntime:
    # providers () and threads 0: the helper's defaults (CUDA when present, one thread per core)
    return ModuleRuntime(executor=executor, state_dir=state_dir, options=options,
                         logger=logging.getLogger(f"test.{name}"), onnx_providers=(), threads=0)


async def started(module: Module, rt: ModuleRuntime) -> AsyncIterator[Any]:
    await module.start(rt)
    try:
        yield module
    finally:
        await module.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vad(executor: concurrent.futures.Executor, state_dir: Path) -> AsyncIterator[VadModule]:
    async for m in started(VadModule(), runtime(executor, state_dir, "vad")):
        yield m


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ocr(executor: concurrent.futures.Executor, state_dir: Path) -> AsyncIterator[OcrModule]:
    async for m in started(OcrModule(), runtime(executor, state_dir, "ocr")):
        yield m


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def embed(executor: concurrent.futures.Executor, state_dir: Path) -> AsyncIterator[EmbedModule]:
    async for m in started(EmbedModule(), runtime(executor, state_dir, "embed")):
        yield m


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def summarize(executor: concurrent.futures.Executor, state_dir: Path,
                    embed: EmbedModule) -> AsyncIterator[SummarizeModule]:
    # after text.embed: the conversion is cached in the shared state dir and the session shared
    async for m in started(SummarizeModule(), runtime(executor, state_dir, "summarize")):
        yield m


# -- providers ------------------------------------------------------------------------------
async def test_every_session_runs_on_the_expected_provider(
    vad: VadModule, ocr: OcrModule, embed: EmbedModule, summarize: SummarizeModule
) -> None:
    for module in (vad, ocr, embed, summarize):
        facts = module.describe()
        assert facts["provider"] == EXPECTED_PROVIDER, (module.name, facts)
        assert facts["providers"][-1] == "CPUExecutionProvider"  # the fallback is always there
    assert ocr._engine is not None
    assert {s.provider for s in ocr._engine.sessions} == {EXPECTED_PROVIDER}


# -- audio.vad ------------------------------------------------------------------------------
async def test_vad_finds_both_phrases_in_a_wav(vad: VadModule, speech: tuple[np.ndarray, int, float, float]) -> None:
    pcm, rate, start_a, start_b = speech
    result, c = await call(vad, "audio.vad", {"audio": b64(wav_bytes(pcm, rate)), "min_silence_ms": 500})
    segments = result["segments"]
    assert len(segments) == 2, segments
    assert abs(segments[0]["start"] - start_a) < 0.25 and abs(segments[1]["start"] - start_b) < 0.25
    assert all(s["probability"] > 0.5 and s["end"] > s["start"] for s in segments)
    assert result["sample_rate"] == 16000 and result["source_sample_rate"] == rate  # 22050 resampled
    assert c.usage["audio_seconds"] == pytest.approx(len(pcm) / rate, abs=0.01)


async def test_vad_takes_raw_pcm16_at_8khz(vad: VadModule, speech: tuple[np.ndarray, int, float, float]) -> None:
    pcm, rate, start_a, start_b = speech
    positions = np.arange(int(len(pcm) * 8000 / rate)) * (rate / 8000)
    pcm8 = np.interp(positions, np.arange(len(pcm)), pcm.astype(np.float64)).astype("<i2")
    result, _ = await call(vad, "audio.vad", {"audio": b64(pcm8.tobytes()), "format": "pcm16",
                                              "sample_rate": 8000, "min_silence_ms": 500})
    assert result["sample_rate"] == 8000
    assert [abs(s["start"] - t) < 0.3 for s, t in zip(result["segments"], (start_a, start_b), strict=True)] \
        == [True, True]


async def test_vad_threshold_and_min_duration_parameters(
    vad: VadModule, speech: tuple[np.ndarray, int, float, float]
) -> None:
    pcm, rate, *_ = speech
    audio = b64(wav_bytes(pcm, rate))
    fine, _ = await call(vad, "audio.vad", {"audio": audio, "min_silence_ms": 50})
    coarse, _ = await call(vad, "audio.vad", {"audio": audio, "min_silence_ms": 500})
    assert len(fine["segments"]) >= len(coarse["segments"])
    none, _ = await call(vad, "audio.vad", {"audio": audio, "min_speech_ms": 10_000})
    assert none["segments"] == []
    strict, _ = await call(vad, "audio.vad", {"audio": audio, "threshold": 0.99, "min_silence_ms": 500})
    assert strict["speech_seconds"] <= coarse["speech_seconds"]


async def test_vad_finds_nothing_in_silence(vad: VadModule) -> None:
    result, _ = await call(vad, "audio.vad", {"audio": b64(wav_bytes(np.zeros(16000 * 3, np.int16), 16000))})
    assert result["segments"] == [] and result["duration"] == 3.0


async def test_vad_stream_yields_segments_before_its_result(
    vad: VadModule, speech: tuple[np.ndarray, int, float, float]
) -> None:
    pcm, rate, *_ = speech
    payload = {"audio": b64(wav_bytes(pcm, rate)), "min_silence_ms": 500}
    parts = [p async for p in cap(vad, "audio.vad.stream").stream(payload, Call(id="s", action="audio.vad.stream"))]
    progress = [p for p in parts if isinstance(p, Progress)]
    final = parts[-1]
    assert not isinstance(final, Progress)
    assert [p.data for p in progress] == final["segments"] and len(progress) == 2
    assert progress[0].progress < progress[1].progress <= 1.0
    unary, _ = await call(vad, "audio.vad", payload)
    assert unary == final


@pytest.mark.parametrize(("payload", "pointer", "words"), [
    ({"audio": "%%% not base64 %%%"}, "/audio", "base64"),
    ({"audio": b64(b"this is not audio at all")}, "/audio", "not a WAV"),
    ({"audio": b64(b"RIFF\x10\x00\x00\x00WAVEjunk")}, "/audio", "WAV"),
    ({"audio": b64(wav_bytes(np.zeros(9600, np.int16), 96000))}, "/audio", "96000"),
    ({"audio": b64(wav_bytes(np.zeros(800, np.uint8), 8000, width=1))}, "/audio", "16-bit"),
    ({"audio": b64(b"\x00\x00" * 400), "format": "pcm16", "sample_rate": 4000}, "/sample_rate", "4000"),
    ({"audio": b64(b"\x00\x00" * 400), "format": "pcm16"}, "/sample_rate", "sample_rate"),
    ({"audio": b64(b"\x00" * 401), "format": "pcm16", "sample_rate": 16000}, "/audio", "multiple"),
    ({"audio": b64(wav_bytes(np.zeros(0, np.int16), 16000))}, "/audio", "no audio"),
    ({"audio": b64(wav_bytes(np.zeros(16000, np.int16), 16000)), "threshold": 2}, "/threshold", ""),
])
async def test_vad_bad_input_names_the_field(vad: VadModule, payload: dict[str, Any], pointer: str,
                                             words: str) -> None:
    for action in ("audio.vad", "audio.vad.stream"):
        error = await bad_input(vad, action, payload)
        assert error.details["pointer"] == pointer, error.details
        assert words in error.message, error.message
    # the inference thread survived: a good call still answers
    ok, _ = await call(vad, "audio.vad", {"audio": b64(wav_bytes(np.zeros(8000, np.int16), 16000))})
    assert ok["segments"] == []


async def test_vad_refuses_audio_longer_than_its_limit(executor: concurrent.futures.Executor,
                                                       state_dir: Path) -> None:
    async for short in started(VadModule(), runtime(executor, state_dir, "vad-short", max_seconds=2)):
        error = await bad_input(short, "audio.vad", {"audio": b64(wav_bytes(np.zeros(16000 * 3, np.int16), 16000))})
        assert error.details["pointer"] == "/audio" and error.details["max_seconds"] == 2


# -- image.ocr ------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
async def test_ocr_reads_the_known_words(ocr: OcrModule, fmt: str) -> None:
    image = page(["Democratic edge hub", "Invoice 2024 total 42"], fmt)
    result, c = await call(ocr, "image.ocr", {"image": b64(image)})
    text = squash(result["text"])
    for word in ("democratic", "edge", "hub", "invoice", "2024", "total", "42"):
        assert word in text, result
    assert len(result["lines"]) == 2
    first = result["lines"][0]
    xs, ys = [p[0] for p in first["box"]], [p[1] for p in first["box"]]
    assert 0 <= min(xs) < 100 and 20 <= min(ys) < 120 and max(xs) <= 1000  # the top line, where it was drawn
    assert all(line["confidence"] >= 0.5 for line in result["lines"])
    assert (result["width"], result["height"]) == (1000, 360)
    assert c.usage == {"images": 1.0, "pixels": 360_000.0}


async def test_ocr_blank_page_has_no_lines(ocr: OcrModule) -> None:
    result, _ = await call(ocr, "image.ocr", {"image": b64(page([]))})
    assert result["lines"] == [] and result["text"] == ""


def _huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (6000, 5000)).save(buf, "PNG")  # 30 M pixels, a few kB
    return buf.getvalue()


@pytest.mark.parametrize(("image", "words"), [
    ("not/base64!!", "base64"),
    (b64(b"GIF89a" + b"\x00" * 64), "not a PNG or JPEG"),
    (b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), "cannot be decoded"),
    (b64(page(["Truncated"])[:400]), "cannot be decoded"),
    (b64(b"\xff\xd8\xff\xe0" + b"\x00" * 100), "cannot be decoded"),
    (b64(_huge_png()), "6000x5000"),
])
async def test_ocr_bad_input_names_the_field(ocr: OcrModule, image: str, words: str) -> None:
    error = await bad_input(ocr, "image.ocr", {"image": image})
    assert error.details["pointer"] == "/image" and words in error.message, error.message
    ok, _ = await call(ocr, "image.ocr", {"image": b64(page([], size=(64, 64)))})  # small: quick
    assert ok["lines"] == []


# -- text.embed -----------------------------------------------------------------------------
async def test_embed_matches_the_reference_implementation(embed: EmbedModule) -> None:
    reference = json.loads((FIXTURES / "embed_reference.json").read_text(encoding="utf-8"))
    assert len(reference["sentences"]) >= 20
    result, c = await call(embed, "text.embed", {"texts": reference["sentences"]})
    sims = [cosine(a, b) for a, b in zip(result["embeddings"], reference["embeddings"], strict=True)]
    assert min(sims) >= 0.9999, sims
    assert all(abs(np.linalg.norm(v) - 1) < 1e-4 for v in result["embeddings"])
    long_one = next(i for i, s in enumerate(reference["sentences"]) if len(s) > 1000)
    assert result["truncated"] == [long_one]  # cut to the 256-token window, like the reference
    assert c.usage["tokens"] == result["tokens"] > 256


async def test_a_paraphrase_is_closer_than_an_unrelated_sentence(embed: EmbedModule) -> None:
    pairs = [("How do I reset my password?", "I forgot my password and need to change it.",
              "The giraffe is the tallest land animal."),
             ("The meeting was moved to Thursday afternoon.", "We rescheduled the meeting for Thursday at 3 pm.",
              "Photosynthesis converts light into chemical energy.")]
    for anchor, paraphrase, unrelated in pairs:
        result, _ = await call(embed, "text.embed", {"texts": [anchor, paraphrase, unrelated]})
        a, p, u = result["embeddings"]
        assert cosine(a, p) > cosine(a, u) + 0.3


async def test_concurrent_callers_are_batched_with_unchanged_results(embed: EmbedModule) -> None:
    texts = [f"Sentence number {i} about {'cats' if i % 2 else 'the weather'} and more." for i in range(32)]
    alone = [(await call(embed, "text.embed", {"text": t}))[0]["embeddings"][0] for t in texts[:4]]
    before = embed.describe()["batching"]
    together = await asyncio.gather(*(call(embed, "text.embed", {"text": t}) for t in texts))
    after = embed.describe()["batching"]
    runs, items = after["batches"] - before["batches"], after["items"] - before["items"]
    assert items == 32 and runs < 8, after  # 32 callers shared a few model runs
    for single, (res, _) in zip(alone, together[:4], strict=False):
        assert cosine(single, res["embeddings"][0]) >= 0.9999  # padding in a batch changes nothing


@pytest.mark.parametrize(("payload", "pointer"), [
    ({"text": ""}, "/text"),
    ({"text": "   \n\t "}, "/text"),
    ({"texts": ["fine", ""]}, "/texts/1"),
    ({"texts": []}, "/texts"),
    ({"texts": ["x"] * 257}, "/texts"),
    ({}, "/text"),
    ({"text": "a", "texts": ["b"]}, "/texts"),
    ({"text": "word " * 400, "truncate": False}, "/text"),
    ({"texts": ["short", "word " * 400], "truncate": False}, "/texts/1"),
    ({"text": 42}, "/text"),
])
async def test_embed_bad_input_names_the_field(embed: EmbedModule, payload: dict[str, Any], pointer: str) -> None:
    error = await bad_input(embed, "text.embed", payload)
    assert error.details["pointer"] == pointer, error.details
    ok, _ = await call(embed, "text.embed", {"text": "still answering"})
    assert len(ok["embeddings"][0]) == 384


async def test_the_conversion_is_cached_and_reproducible(embed: EmbedModule, state_dir: Path) -> None:
    cached = sorted((state_dir / "models").glob("*.onnx"))
    assert len(cached) == 1
    fresh = await asyncio.to_thread(bert_onnx.convert, embedder.model_dir() / "model.safetensors",
                                    embedder.model_dir() / "config.json")
    assert fresh == cached[0].read_bytes()  # same input, same bytes


# -- text.summarize -------------------------------------------------------------------------
ARTICLE = (
    "The hub runs AI capabilities on a small box at the edge of the network. "
    "Local apps call the hub to detect speech, read text in images and embed sentences. "
    "My neighbour's cat enjoys sleeping in the sun on warm afternoons. "
    "Each capability of the hub runs as an ONNX model in the hub's own process. "
    "The hub records the usage of every capability call before it answers. "
    "Bananas are a good source of potassium."
)


async def test_summarize_ranks_by_centrality_within_max_length(summarize: SummarizeModule) -> None:
    assert summarize.describe()["ranker"] == "centrality"
    result, _ = await call(summarize, "text.summarize", {"text": ARTICLE, "max_length": 160})
    assert result["method"] == "centrality"
    assert len(result["summary"]) <= 160 and result["sentences"] >= 1
    assert "cat" not in result["summary"] and "Bananas" not in result["summary"]  # off-topic ones lose
    assert "hub" in result["summary"]


async def test_summarize_falls_back_to_frequency(executor: concurrent.futures.Executor, state_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async for chosen in started(SummarizeModule(), runtime(executor, state_dir, "sum-f", ranker="frequency")):
        result, _ = await call(chosen, "text.summarize", {"text": ARTICLE, "max_length": 160})
        assert result["method"] == "frequency" and len(result["summary"]) <= 160
    monkeypatch.setattr("modules.builtin.summarize.models_present", lambda: False)
    async for absent in started(SummarizeModule(), runtime(executor, state_dir, "sum-a")):
        assert absent.describe() == {"ranker": "frequency"}
        result, _ = await call(absent, "text.summarize", {"text": ARTICLE, "max_length": 160})
        assert result["method"] == "frequency"
    with pytest.raises(ModelLoadError, match="not installed"):
        await SummarizeModule().start(runtime(executor, state_dir, "sum-c", ranker="centrality"))
