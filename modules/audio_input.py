"""Callers' audio: WAV or raw PCM16 (base64) to float32 mono at 8 or 16 kHz.

Silero VAD runs at 8000 or 16000 Hz.  Other rates from 8 to 48 kHz are resampled to
16 kHz (box low-pass, then linear interpolation: ample for speech/no-speech decisions);
rates outside that range are refused with a VALIDATION_ERROR naming the field.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np

from modules.inputs import decode_base64, invalid

NATIVE_RATES = (8000, 16000)
MIN_RATE, MAX_RATE = 8000, 48000
MAX_CHANNELS = 8


@dataclass(frozen=True, slots=True)
class Audio:
    """Decoded audio ready for the VAD: float32 mono at a native rate; ``source_rate`` as the caller sent it."""

    samples: np.ndarray  # float32 mono in [-1, 1] at ``rate``
    rate: int  # 8000 or 16000
    source_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        """Duration in seconds (resampling keeps it, to within a sample)."""
        return len(self.samples) / self.rate


def decode_audio(payload: dict[str, Any], max_seconds: float, max_bytes: int) -> Audio:
    """``payload["audio"]`` (WAV, or PCM16 with ``sample_rate``) as Audio; VALIDATION_ERROR names the pointer."""
    data = decode_base64(payload["audio"], "/audio", max_bytes)
    fmt = payload.get("format", "auto")
    is_wav = data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    if fmt == "wav" or (fmt == "auto" and is_wav):
        if not is_wav:
            raise invalid("/audio", "not a WAV file (no RIFF/WAVE header)")
        pcm, rate, channels = _read_wav(data)
        rate_pointer = "/audio"
    else:
        if "sample_rate" not in payload:
            pointer = "/sample_rate" if fmt == "pcm16" else "/audio"
            raise invalid(pointer, "not a WAV file; raw PCM16 needs sample_rate (and format: pcm16)")
        rate, channels, rate_pointer = int(payload["sample_rate"]), int(payload.get("channels", 1)), "/sample_rate"
        if len(data) % (2 * channels):
            raise invalid("/audio", f"raw PCM16 with {channels} channel(s) needs a multiple of "
                          f"{2 * channels} bytes, got {len(data)}")
        pcm = np.frombuffer(data, dtype="<i2")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise invalid(rate_pointer, f"sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz",
                      sample_rate=rate, supported=[MIN_RATE, MAX_RATE])
    frames = len(pcm) // channels
    if frames == 0:
        raise invalid("/audio", "no audio samples")
    if frames / rate > max_seconds:
        raise invalid("/audio", f"{frames / rate:.1f} s of audio is more than the {max_seconds:g} s limit",
                      max_seconds=max_seconds)
    mono = pcm.reshape(frames, channels).mean(axis=1, dtype=np.float32) if channels > 1 \
        else pcm.astype(np.float32)
    mono /= 32768.0
    samples, out_rate = resample(mono, rate)
    return Audio(samples, out_rate, rate, channels)


def _read_wav(data: bytes) -> tuple[np.ndarray, int, int]:
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            width, rate, channels, frames = w.getsampwidth(), w.getframerate(), w.getnchannels(), w.getnframes()
            if width != 2:
                raise invalid("/audio", f"WAV sample width is {8 * width} bits; only 16-bit PCM is supported")
            if not 1 <= channels <= MAX_CHANNELS:
                raise invalid("/audio", f"WAV has {channels} channels")
            raw = w.readframes(frames)
    except (wave.Error, EOFError, RuntimeError, struct.error) as exc:
        # the stdlib reader raises a bare RuntimeError or struct.error on a torn header
        raise invalid("/audio", f"not a readable PCM WAV file ({exc or 'a broken header'})") from exc
    usable = len(raw) - len(raw) % (2 * channels)  # a truncated last frame is dropped
    return np.frombuffer(raw[:usable], dtype="<i2"), rate, channels


def resample(samples: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """To 8 or 16 kHz: native rates pass through, others go to 16 kHz."""
    if rate in NATIVE_RATES:
        return np.ascontiguousarray(samples, dtype=np.float32), rate
    target = 16000
    if rate > target:
        # a box filter as wide as the rate ratio keeps most of what would alias above 8 kHz out
        width = round(rate / target)
        if width > 1:
            samples = np.convolve(samples, np.full(width, 1 / width, dtype=np.float32), mode="same")
    n_out = int(len(samples) * target / rate)
    positions = np.arange(n_out, dtype=np.float64) * (rate / target)
    out = np.interp(positions, np.arange(len(samples), dtype=np.float64), samples).astype(np.float32)
    return out, target
