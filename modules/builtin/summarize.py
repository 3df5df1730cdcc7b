"""``text.summarize``: extractive summary, pure Python.

Sentences are scored by the document frequency of their content words (a classic
Luhn-style scorer), the best are kept in their original order until ``max_length``
characters are used.  The ONNX issue adds a centrality ranker over text.embed
embeddings; this scorer stays as the fallback when that model is absent.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from modules.sdk import Call, Module, capability

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
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s and s.strip()]


def content_words(sentence: str) -> list[str]:
    return [w for w in (m.lower() for m in _WORD.findall(sentence)) if w not in _STOPWORDS and len(w) > 1]


def frequency_scores(sentences: list[str]) -> list[float]:
    """Mean document frequency of a sentence's content words."""
    freq = Counter(w for s in sentences for w in set(content_words(s)))
    scores = []
    for sentence in sentences:
        words = content_words(sentence)
        scores.append(sum(freq[w] for w in words) / len(words) if words else 0.0)
    return scores


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


class SummarizeModule(Module):
    name = "text.summarize"
    concurrency = 4

    @capability(
        "text.summarize",
        input_schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        description="Extractive summary: the most central sentences, in order, within max_length characters.",
    )
    def summarize(self, payload: dict[str, Any], call: Call) -> dict[str, Any]:
        text = payload["text"]
        max_length = int(payload.get("max_length", max(80, len(text) // 3)))
        max_sentences = int(payload.get("max_sentences", 1000))
        return summarize(text, max_length, max_sentences)
