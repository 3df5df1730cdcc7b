"""``audio.vad`` and ``audio.vad.stream``: speech segments with Silero VAD (ONNX).

Options (``[modules.options."audio.vad"]``): ``max_seconds`` (600), ``max_bytes``
(64 MiB of decoded audio), ``model`` / ``sha256`` (another Silero v5 ONNX file), and the
helper's ``providers`` / ``threads``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

from modules.audio_input import Audio, decode_audio
from modules.model_files import ModelLoadError
from modules.onnx_runtime import SESSIONS, OnnxSession, OnnxSettings, async_load, run_blocking
from modules.options import Option, model_override, read_options
from modules.sdk import Call, Module, ModuleRuntime, Progress, capability
from modules.silero import SileroStream, shipped_model, warm_up_feeds
from modules.vad_segments import Segment, Segmenter, SegmentParams

OPTIONS = {
    "max_seconds": Option((int, float), 600, minimum=1, maximum=86400),
    "max_bytes": Option((int,), 64 << 20, minimum=1024),
    "model": Option((str,), None),
    "sha256": Option((str,), None),
}
STREAM_BLOCK_WINDOWS = 32  # ~1 s of audio between two looks at the event loop

_MS = {"type": "number", "minimum": 0, "maximum": 60000}
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["audio"],
    "properties": {
        "audio": {"type": "string", "minLength": 1, "description": "base64 WAV (PCM16) or raw PCM16 LE"},
        "format": {"enum": ["auto", "wav", "pcm16"]},
        "sample_rate": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
        "channels": {"type": "integer", "minimum": 1, "maximum": 8},
        "threshold": {"type": "number", "minimum": 0.01, "maximum": 0.99},
        "min_speech_ms": _MS,
        "min_silence_ms": _MS,
        "speech_pad_ms": {"type": "number", "minimum": 0, "maximum": 5000},
    },
    "additionalProperties": False,
}
SEGMENT_SCHEMA = {
    "type": "object",
    "required": ["start", "end", "probability"],
    "properties": {"start": {"type": "number", "minimum": 0}, "end": {"type": "number", "minimum": 0},
                   "probability": {"type": "number", "minimum": 0, "maximum": 1}},
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["segments", "duration", "sample_rate", "speech_seconds"],
    "properties": {
        "segments": {"type": "array", "items": SEGMENT_SCHEMA},
        "duration": {"type": "number", "minimum": 0},
        "sample_rate": {"enum": [8000, 16000]},
        "source_sample_rate": {"type": "integer"},
        "speech_seconds": {"type": "number", "minimum": 0},
    },
}


def segment_params(payload: dict[str, Any]) -> SegmentParams:
    """The caller's threshold / min_speech_ms / min_silence_ms / speech_pad_ms over the silero-vad defaults."""
    defaults = SegmentParams()
    return SegmentParams(
        threshold=float(payload.get("threshold", defaults.threshold)),
        min_speech_ms=float(payload.get("min_speech_ms", defaults.min_speech_ms)),
        min_silence_ms=float(payload.get("min_silence_ms", defaults.min_silence_ms)),
        speech_pad_ms=float(payload.get("speech_pad_ms", defaults.speech_pad_ms)),
    )


def result(audio: Audio, segments: list[Segment]) -> dict[str, Any]:
    """The capability's result: segments, duration and speech_seconds rounded to ms, both sample rates."""
    return {
        "segments": [s.as_dict() for s in segments],
        "duration": round(audio.seconds, 3),
        "sample_rate": audio.rate,
        "source_sample_rate": audio.source_rate,
        "speech_seconds": round(sum(s.end - s.start for s in segments), 3),
    }


class VadModule(Module):
    """``audio.vad`` and its streaming twin over one Silero session (shared with other modules loading it)."""

    name = "audio.vad"
    concurrency = 4

    def __init__(self) -> None:
        super().__init__()
        self._session: OnnxSession | None = None
        self._options: dict[str, Any] = {}

    async def start(self, runtime: ModuleRuntime) -> None:
        """Load (verified, warmed up) the shipped model or the ``model`` option's file; ModelLoadError on failure."""
        await super().start(runtime)
        self._options = read_options(self.name, runtime.options, OPTIONS)
        settings = OnnxSettings.from_runtime(runtime, self._options)
        model = model_override(self._options, shipped_model())
        self._session = await async_load(runtime, model, settings, warm_up_feeds())

    async def stop(self) -> None:
        """Release this module's hold on the shared session."""
        session, self._session = self._session, None
        if session is not None:
            SESSIONS.release(session)

    def describe(self) -> dict[str, Any]:
        """The session's facts, the sample rates the model runs at and max_seconds; {} before start."""
        if self._session is None:
            return {}
        return {**self._session.describe(), "sample_rates": [8000, 16000],
                "max_seconds": self._options["max_seconds"]}

    def _decode(self, payload: dict[str, Any]) -> Audio:
        return decode_audio(payload, float(self._options["max_seconds"]), int(self._options["max_bytes"]))

    def _stream(self, audio: Audio) -> SileroStream:
        if self._session is None:
            raise ModelLoadError("audio.vad is not started")
        return SileroStream(self._session, audio.rate)

    @capability("audio.vad", input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA,
                description="Speech segments (start/end seconds, probability) in a WAV or PCM16 clip.")
    def vad(self, payload: dict[str, Any], call: Call) -> dict[str, Any]:
        """Runs in the pool over the whole clip; bills audio_seconds."""
        audio = self._decode(payload)
        stream = self._stream(audio)
        segmenter = Segmenter(segment_params(payload), audio.rate, stream.window, audio.seconds)
        segments = segmenter.push(stream.process(audio.samples))
        segments += segmenter.finish()
        call.report_usage(audio_seconds=audio.seconds)
        return result(audio, segments)

    @capability("audio.vad.stream", input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA,
                description="audio.vad that yields each speech segment as soon as it is found.")
    async def vad_stream(self, payload: dict[str, Any], call: Call) -> AsyncIterator[Any]:
        """About 1 s of audio per pool job; each segment a Progress part, then the whole result; bills audio_seconds."""
        runtime = self.runtime
        if runtime is None:
            raise ModelLoadError("audio.vad is not started")
        audio = await run_blocking(runtime, lambda: self._decode(payload))
        stream = self._stream(audio)
        segmenter = Segmenter(segment_params(payload), audio.rate, stream.window, audio.seconds)
        block = stream.window * STREAM_BLOCK_WINDOWS
        segments: list[Segment] = []
        total = len(audio.samples)
        for start in range(0, total, block):
            probs = await run_blocking(runtime, functools.partial(stream.process, audio.samples[start: start + block]))
            found = segmenter.push(probs)
            if start + block >= total:
                found += segmenter.finish()
            for segment in found:
                segments.append(segment)
                yield Progress(min(1.0, (start + block) / total), "segment", segment.as_dict())
        call.report_usage(audio_seconds=audio.seconds)
        yield result(audio, segments)
