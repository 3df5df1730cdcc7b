"""Speech segments from per-window speech probabilities: a small, incremental state machine.

Hysteresis as in silero-vad: a segment starts at a window >= ``threshold`` and ends once
the probability stays below ``threshold - 0.15`` for ``min_silence_ms``.  Segments
shorter than ``min_speech_ms`` are dropped; kept ones are widened by ``speech_pad_ms``
each side without overlapping the previous one.  Incremental, so a stream can report a
segment as soon as its closing silence has been seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Segment:
    """One speech segment, padded, in seconds from the start of the clip."""

    start: float  # seconds
    end: float
    probability: float  # mean speech probability of its windows

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: times rounded to ms, probability to 4 decimals."""
        return {"start": round(self.start, 3), "end": round(self.end, 3),
                "probability": round(self.probability, 4)}


@dataclass(frozen=True, slots=True)
class SegmentParams:
    """The segmenter's knobs (a caller may set each per call); the defaults are silero-vad's."""

    threshold: float = 0.5
    min_speech_ms: float = 250
    min_silence_ms: float = 100
    speech_pad_ms: float = 30

    @property
    def neg_threshold(self) -> float:
        """Below this a window counts as silence: threshold - 0.15, never under 0.01."""
        return max(self.threshold - 0.15, 0.01)


class Segmenter:
    """Feed probabilities in order with ``push``; call ``finish`` once at the end."""

    def __init__(self, params: SegmentParams, rate: int, window: int, duration: float) -> None:
        self._p = params
        self._duration = duration  # seconds of audio: no segment reaches past it
        self._window_s = window / rate
        self._index = 0  # windows seen
        self._start: int | None = None  # window where the open segment began
        self._silence_from: int | None = None  # first quiet window inside the open segment
        self._prob_sum = 0.0
        self._prob_count = 0
        self._last_end = 0.0  # end (padded) of the last emitted segment

    def push(self, probs: Any) -> list[Segment]:
        """The segments these window probabilities closed (possibly none); an open segment waits for more."""
        out: list[Segment] = []
        min_silence = self._p.min_silence_ms / 1000
        for prob in (float(p) for p in probs):
            i = self._index
            self._index += 1
            if prob >= self._p.threshold:
                self._silence_from = None
                if self._start is None:
                    self._start, self._prob_sum, self._prob_count = i, 0.0, 0
            elif self._start is not None and prob < self._p.neg_threshold:
                if self._silence_from is None:
                    self._silence_from = i
                if (i + 1 - self._silence_from) * self._window_s >= min_silence:
                    self._close(self._silence_from, out)
                    continue
            if self._start is not None and self._silence_from is None:
                self._prob_sum += prob
                self._prob_count += 1
        return out

    def finish(self) -> list[Segment]:
        """Close the segment still open at the end of the audio (kept if long enough); call once, last."""
        out: list[Segment] = []
        if self._start is not None:
            self._close(self._silence_from if self._silence_from is not None else self._index, out)
        return out

    def _close(self, end_window: int, out: list[Segment]) -> None:
        assert self._start is not None
        start_s = self._start * self._window_s
        end_s = min(end_window * self._window_s, self._duration)
        if end_s - start_s >= self._p.min_speech_ms / 1000:
            pad = self._p.speech_pad_ms / 1000
            start = max(start_s - pad, self._last_end, 0.0)
            end = min(end_s + pad, self._duration)
            probability = self._prob_sum / self._prob_count if self._prob_count else 0.0
            out.append(Segment(start, end, probability))
            self._last_end = end
        self._start = self._silence_from = None
