"""Silero VAD v5 over onnxruntime: speech probability per 32 ms window.

The model is recurrent: each window of 512 samples (16 kHz) or 256 (8 kHz) is run with
the state the previous window left and with the previous window's last 64 (or 32)
samples prepended as context, as the silero-vad package does.  Windows of one stream
are therefore sequential; the stream object carries state between blocks so a long
clip can be processed a block at a time (the streaming capability yields in between).
"""

from __future__ import annotations

import numpy as np

from modules.model_files import ModelFile, package_file
from modules.onnx_runtime import OnnxSession

MODEL_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"


def shipped_model() -> ModelFile:
    """The silero_vad package's ONNX file, pinned to MODEL_SHA256 (the package is located, never imported)."""
    return package_file("silero_vad", "data/silero_vad.onnx", MODEL_SHA256)


def window_size(rate: int) -> int:
    """Samples a window: 512 at 16 kHz, else 256 (8 kHz): 32 ms either way."""
    return 512 if rate == 16000 else 256


def warm_up_feeds(rate: int = 16000) -> dict[str, np.ndarray]:
    """Silent input (context + one window), zero state and the rate: feeds that run the graph once."""
    width = window_size(rate) + (64 if rate == 16000 else 32)
    return {"input": np.zeros((1, width), dtype=np.float32), "state": np.zeros((2, 1, 128), dtype=np.float32),
            "sr": np.array(rate, dtype=np.int64)}


def frames_with_context(samples: np.ndarray, rate: int, context: np.ndarray) -> np.ndarray:
    """[windows, context + window] rows: each window preceded by the samples before it.

    Built once per block, so the per-window loop only slices a row (the loop is the cost).
    """
    win = window_size(rate)
    n = -(-len(samples) // win)
    padded = np.zeros(n * win + len(context), dtype=np.float32)
    padded[: len(context)] = context
    padded[len(context): len(context) + len(samples)] = samples
    ctx = len(context)
    view = np.lib.stride_tricks.sliding_window_view(padded, ctx + win)[::win]
    return np.ascontiguousarray(view[:n])


class SileroStream:
    """Speech probabilities of one audio stream, fed block by block.  Not thread-safe."""

    def __init__(self, session: OnnxSession, rate: int) -> None:
        if rate not in (8000, 16000):
            raise ValueError(f"silero runs at 8000 or 16000 Hz, not {rate}")
        self._session = session
        self.rate = rate
        self.window = window_size(rate)
        self._context = np.zeros(64 if rate == 16000 else 32, dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._sr = np.array(rate, dtype=np.int64)
        self.windows_done = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for ``samples`` (a whole number of windows, except for the last block)."""
        if len(samples) == 0:
            return np.zeros(0, dtype=np.float32)
        frames = frames_with_context(samples, self.rate, self._context)
        probs = np.empty(len(frames), dtype=np.float32)
        run = self._session.session.run  # bound once: this loop is the whole cost of a call
        state, sr = self._state, self._sr
        for i in range(len(frames)):
            out, state = run(None, {"input": frames[i: i + 1], "state": state, "sr": sr})
            probs[i] = out[0, 0]
        self._state = state
        self._context = frames[-1, -len(self._context):].copy()
        self.windows_done += len(frames)
        return probs
