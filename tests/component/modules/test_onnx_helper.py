"""The ONNX runtime helper without the big models: providers, threads, the session cache,
model verification, options, the dynamic batcher, audio decoding and the VAD segmenter."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from daemon.core.errors import ConfigError, Unavailable
from modules import onnx_runtime
from modules.audio_input import resample
from modules.batching import DynamicBatcher
from modules.builtin.vad import VadModule
from modules.model_files import ModelFile, ModelLoadError, verify
from modules.onnx_runtime import CPU, CUDA, SESSIONS, OnnxSettings, available_cores, resolve_providers
from modules.sdk import ModuleRuntime
from modules.silero import shipped_model
from modules.vad_segments import Segmenter, SegmentParams

LOG = logging.getLogger("test.onnx")


@pytest.fixture(scope="module")
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(2)
    yield pool
    pool.shutdown(wait=True)


def runtime(executor: concurrent.futures.Executor, tmp: Path, **options: object) -> ModuleRuntime:
    return ModuleRuntime(executor=executor, state_dir=tmp, options=dict(options), logger=LOG,
                         onnx_providers=(CPU,), threads=1)


# -- providers and threads ------------------------------------------------------------------
def test_auto_means_cuda_only_with_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_runtime, "gpu_present", lambda: False)
    assert resolve_providers([], LOG) == (CPU,)
    assert resolve_providers(["auto"], LOG) == (CPU,)
    monkeypatch.setattr(onnx_runtime, "gpu_present", lambda: True)
    monkeypatch.setattr(onnx_runtime.ort, "get_available_providers", lambda: [CUDA, CPU])
    assert resolve_providers([], LOG) == (CUDA, CPU)


def test_unavailable_providers_are_skipped_and_cpu_stays_last(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        chosen = resolve_providers([CPU, "NoSuchExecutionProvider"], LOG)
    assert chosen == (CPU,)
    assert "NoSuchExecutionProvider" in caplog.text


def test_threads_follow_the_runtime_and_the_option(executor: concurrent.futures.Executor, tmp_path: Path) -> None:
    rt = ModuleRuntime(executor=executor, state_dir=tmp_path, options={}, logger=LOG, threads=0)
    assert OnnxSettings.from_runtime(rt, {}).threads == available_cores()
    assert OnnxSettings.from_runtime(rt, {"threads": 3}).threads == 3
    assert OnnxSettings.from_runtime(rt, {"providers": "CPUExecutionProvider"}).providers == (CPU,)
    with pytest.raises(ModelLoadError):
        OnnxSettings.from_runtime(rt, {"threads": -1})


# -- model files and the session cache ------------------------------------------------------
def test_sessions_are_shared_per_model_and_released(tmp_path: Path) -> None:
    settings = OnnxSettings((CPU,), 1)
    before = len(SESSIONS)
    a = onnx_runtime.load(shipped_model(), settings, LOG)
    b = onnx_runtime.load(shipped_model(), settings, LOG)
    assert a.session is b.session and len(SESSIONS) == before + 1
    other = onnx_runtime.load(shipped_model(), OnnxSettings((CPU,), 2), LOG)
    assert other.session is not a.session  # other threads, other session
    SESSIONS.release(a)
    SESSIONS.release(a)  # twice by mistake: b's share must survive it
    assert len(SESSIONS) == before + 2
    for loaded in (b, other):
        SESSIONS.release(loaded)
    assert len(SESSIONS) == before


def test_a_file_that_is_not_the_manifests_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "silero_vad.onnx"
    data = bytearray(shipped_model().path.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        verify(ModelFile(copy, shipped_model().sha256))
    with pytest.raises(ModelLoadError, match="does not exist"):
        verify(ModelFile(tmp_path / "absent.onnx", None))


def test_a_file_that_is_not_a_model_fails_to_load(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load"):
        onnx_runtime.load(ModelFile(junk, None), OnnxSettings((CPU,), 1), LOG)


async def test_a_module_whose_model_fails_raises_in_start(executor: concurrent.futures.Executor,
                                                          tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        await VadModule().start(runtime(executor, tmp_path, model=str(tmp_path / "absent.onnx")))
    with pytest.raises(ModelLoadError, match="sha256"):
        await VadModule().start(runtime(executor, tmp_path, model=str(shipped_model().path), sha256="0" * 64))


async def test_unknown_or_mistyped_options_are_config_errors(executor: concurrent.futures.Executor,
                                                             tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_secs"):
        await VadModule().start(runtime(executor, tmp_path, max_secs=3))
    with pytest.raises(ConfigError, match="max_seconds"):
        await VadModule().start(runtime(executor, tmp_path, max_seconds="long"))


# -- the dynamic batcher --------------------------------------------------------------------
class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay = delay

    def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.sizes.append(len(items))
        time.sleep(self.delay)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_concurrent_items_share_a_run(executor: concurrent.futures.Executor) -> None:
    fn = Recorder()
    async with DynamicBatcher(fn, executor, max_batch=8, max_delay_ms=20) as batcher:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert fn.sizes == [8, 8, 4]


async def test_a_lone_caller_does_not_wait_for_the_delay(executor: concurrent.futures.Executor) -> None:
    async with DynamicBatcher(Recorder(), executor, max_batch=8, max_delay_ms=5000) as batcher:
        started = time.perf_counter()
        assert await batcher.submit(1) == 10
        assert time.perf_counter() - started < 1.0


async def test_one_bad_item_fails_only_its_caller(executor: concurrent.futures.Executor) -> None:
    async with DynamicBatcher(Recorder(), executor, max_batch=8) as batcher:
        results = await asyncio.gather(batcher.submit(1), batcher.submit(-1), batcher.submit(2),
                                       return_exceptions=True)
    assert results[0] == 10 and results[2] == 20 and isinstance(results[1], ValueError)


async def test_a_cancelled_caller_leaves_the_others_alone(executor: concurrent.futures.Executor) -> None:
    fn = Recorder(delay=0.05)
    async with DynamicBatcher(fn, executor, max_batch=4) as batcher:
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)  # the first batch is running; these two queue behind it
        doomed = asyncio.ensure_future(batcher.submit(2))
        kept = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0)
        doomed.cancel()
        assert await first == 10 and await kept == 30
        with pytest.raises(asyncio.CancelledError):
            await doomed
    assert sum(fn.sizes) == 2  # the cancelled item never reached the model


async def test_closing_fails_waiting_callers_instead_of_hanging(executor: concurrent.futures.Executor) -> None:
    batcher = DynamicBatcher(Recorder(delay=0.2), executor, max_batch=1)
    batcher.start()
    running = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    await batcher.aclose()
    for task in (running, queued):
        with pytest.raises(Unavailable):
            await task
    with pytest.raises(Unavailable):
        await batcher.submit(3)


# -- audio decoding and segmentation --------------------------------------------------------
@pytest.mark.parametrize(("rate", "out_rate"), [(8000, 8000), (16000, 16000), (22050, 16000), (48000, 16000),
                                                (11025, 16000)])
def test_resample_to_a_silero_rate(rate: int, out_rate: int) -> None:
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out, got = resample(tone, rate)
    assert got == out_rate and abs(len(out) - out_rate) <= 1
    assert 0.3 < float(np.abs(out).max()) <= 0.51  # a 440 Hz tone keeps its level


def test_segmenter_hysteresis_min_speech_and_padding() -> None:
    params = SegmentParams(threshold=0.5, min_speech_ms=100, min_silence_ms=64, speech_pad_ms=32)
    seg = Segmenter(params, rate=16000, window=512, duration=2.0)  # 32 ms windows
    probs = [0.0] * 5 + [0.9] * 10 + [0.4] * 1 + [0.9] * 2 + [0.1] * 3 + [0.9] * 2 + [0.0] * 5
    found = seg.push(probs) + seg.finish()
    # 0.4 is above the exit threshold (0.35): the first segment holds; the 2-window blip is too short
    assert len(found) == 1
    first = found[0]
    assert first.start == pytest.approx(5 * 0.032 - 0.032)
    assert first.end == pytest.approx(18 * 0.032 + 0.032)
    assert 0.85 < first.probability <= 0.9


def test_segmenter_closes_an_open_segment_at_the_end() -> None:
    seg = Segmenter(SegmentParams(min_speech_ms=0), rate=8000, window=256, duration=0.128)
    assert seg.push([0.1, 0.9, 0.9, 0.9]) == []
    (last,) = seg.finish()
    # padded at the start, cut at the end of the audio rather than padded past it
    assert last.start == pytest.approx(0.032 - 0.03) and last.end == pytest.approx(0.128)
