"""``text.embed``: sentence embeddings (all-MiniLM-L6-v2, 384 dimensions, unit length).

Concurrent callers' texts are batched dynamically into one model run.  Texts longer than
the 256-token window are truncated and listed in ``truncated`` (or refused, with
``"truncate": false``).

Options (``[modules.options."text.embed"]``): ``max_batch`` (32 texts a run),
``max_delay_ms`` (2: how long a forming batch waits for more, only under concurrency),
``max_batch_tokens`` (4096: texts x padded length of one run, bounds memory),
``cache_dir`` (where the ONNX conversion is cached; default ``<state_dir>/models``), and
the helper's ``providers`` / ``threads``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemon.core.errors import ValidationError
from modules.batching import DynamicBatcher
from modules.embedder import DIMENSIONS, MAX_TOKENS, MODEL_NAME, Embedder, Embedding, cache_path
from modules.inputs import invalid
from modules.model_files import ModelLoadError
from modules.onnx_runtime import OnnxSettings, run_blocking
from modules.options import Option, read_options
from modules.sdk import Call, Module, ModuleRuntime, capability

MAX_TEXTS = 256
OPTIONS = {
    "max_batch": Option((int,), 32, minimum=1, maximum=1024),
    "max_delay_ms": Option((int, float), 2.0, minimum=0, maximum=1000),
    "max_batch_tokens": Option((int,), 4096, minimum=MAX_TOKENS),
    "cache_dir": Option((str,), None),
}

TEXT = {"type": "string", "minLength": 1, "maxLength": 100_000, "pattern": r"\S"}
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": TEXT,
        "texts": {"type": "array", "minItems": 1, "maxItems": MAX_TEXTS, "items": TEXT},
        "truncate": {"type": "boolean"},
    },
    "additionalProperties": False,
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["embeddings", "dimensions", "model", "tokens", "truncated"],
    "properties": {
        # the vectors' numbers are not checked one by one: the SDK validates every result, and 384
        # floats a text made output validation cost more than the model run
        "embeddings": {"type": "array", "items": {"type": "array", "minItems": DIMENSIONS, "maxItems": DIMENSIONS}},
        "dimensions": {"const": DIMENSIONS},
        "model": {"type": "string"},
        "tokens": {"type": "integer", "minimum": 0},
        "truncated": {"type": "array", "items": {"type": "integer"}},
    },
}


@dataclass(frozen=True, slots=True)
class _Item:
    text: str
    pointer: str
    truncate: bool


def texts_of(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """``(text, pointer)`` pairs from ``text`` or ``texts`` (exactly one of them)."""
    if "text" in payload and "texts" in payload:
        raise invalid("/texts", "give text or texts, not both")
    if "text" in payload:
        return [(payload["text"], "/text")]
    if "texts" in payload:
        return [(t, f"/texts/{i}") for i, t in enumerate(payload["texts"])]
    raise invalid("/text", "text (a string) or texts (a list of strings) is required")


class EmbedModule(Module):
    """``text.embed``: callers' texts go through one DynamicBatcher into shared model runs."""

    name = "text.embed"
    concurrency = 64  # calls mostly wait for their batch; the batcher bounds the real work

    def __init__(self) -> None:
        super().__init__()
        self._embedder: Embedder | None = None
        self._batcher: DynamicBatcher[_Item, Embedding] | None = None
        self._options: dict[str, Any] = {}

    async def start(self, runtime: ModuleRuntime) -> None:
        """Load (converting and caching on first use) the model off the loop, then start the batcher."""
        await super().start(runtime)
        self._options = read_options(self.name, runtime.options, OPTIONS)
        settings = OnnxSettings.from_runtime(runtime, self._options)
        cache_dir, tokens = self._options["cache_dir"], int(self._options["max_batch_tokens"])
        self._embedder = await run_blocking(runtime, lambda: Embedder.load(
            cache_path(runtime.state_dir, cache_dir), settings, runtime.logger, tokens))
        self._batcher = DynamicBatcher(self._run_batch, runtime.executor, int(self._options["max_batch"]),
                                       float(self._options["max_delay_ms"]), runtime.logger)
        self._batcher.start()

    async def stop(self) -> None:
        """Stop the batcher (queued callers get UNAVAILABLE), then close the ONNX session."""
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            await batcher.aclose()
        embedder, self._embedder = self._embedder, None
        if embedder is not None:
            embedder.close()

    def describe(self) -> dict[str, Any]:
        """Provider, dimensions, token window and batching stats; {} before start."""
        if self._embedder is None or self._batcher is None:
            return {}
        return {**self._embedder.session.describe(), "dimensions": DIMENSIONS, "max_tokens": MAX_TOKENS,
                "batching": {"max_batch": self._batcher.max_batch,
                             "max_delay_ms": self._options["max_delay_ms"], **self._batcher.stats.as_dict()}}

    def _run_batch(self, items: Sequence[_Item]) -> list[Embedding | BaseException]:
        """In a pool thread: one model run (or a few, bounded by max_batch_tokens) for many callers."""
        assert self._embedder is not None
        out: list[Embedding | BaseException] = []
        for item, emb in zip(items, self._embedder.embed([i.text for i in items]), strict=True):
            if emb.truncated and not item.truncate:
                out.append(invalid(item.pointer, f"longer than the model's {MAX_TOKENS}-token window",
                                   max_tokens=MAX_TOKENS))
            else:
                out.append(emb)
        return out

    @capability("text.embed", input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA,
                description="Sentence embeddings (all-MiniLM-L6-v2, 384-d, L2-normalized) of text or texts.")
    async def embed(self, payload: dict[str, Any], call: Call) -> dict[str, Any]:
        """One vector a text, in order; the caller's own VALIDATION_ERROR wins over other failures.  Bills tokens."""
        batcher = self._batcher
        if batcher is None:
            raise ModelLoadError("text.embed is not started")
        truncate = bool(payload.get("truncate", True))
        items = [_Item(text, pointer, truncate) for text, pointer in texts_of(payload)]
        results = await asyncio.gather(*(batcher.submit(item) for item in items), return_exceptions=True)
        for res in results:
            if isinstance(res, asyncio.CancelledError):
                raise res
        for res in results:  # a caller's own bad input first, before any other failure
            if isinstance(res, ValidationError):
                raise res
        for res in results:
            if isinstance(res, BaseException):
                raise res
        embeddings = [r for r in results if isinstance(r, Embedding)]
        call.report_usage(tokens=sum(e.tokens for e in embeddings))
        return {
            "embeddings": [e.vector.tolist() for e in embeddings],
            "dimensions": DIMENSIONS,
            "model": MODEL_NAME,
            "tokens": sum(e.tokens for e in embeddings),
            "truncated": [i for i, e in enumerate(embeddings) if e.truncated],
        }
