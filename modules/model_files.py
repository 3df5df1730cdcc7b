"""Model files: where the shipped ones live and whether they are the files we expect.

Every model a built-in module loads is named in that module's manifest with its
sha256, so a truncated download or a swapped file fails at start() with a clear
message instead of producing wrong answers at call time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


class ModelLoadError(RuntimeError):
    """A model file is missing, corrupt or cannot be loaded; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A model file and the sha256 its manifest expects (None: not verified, logged by the caller)."""

    path: Path
    sha256: str | None = None


def package_dir(package: str) -> Path:
    """The directory of an installed package, found without importing it.

    ``silero_vad/__init__`` imports torch, which the hub does not install: only its
    data files are used, so the package is located, never executed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package {package!r} is not installed; it ships the model files")
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: str, relative: str, sha256: str | None) -> ModelFile:
    """``relative`` inside an installed package, to be checked against ``sha256``; not read here."""
    return ModelFile(package_dir(package) / relative, sha256)


class _DigestMemo:
    """sha256 per (path, size, mtime): a module restarted in the same process does not re-hash."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._digests: dict[tuple[str, int, int], str] = {}

    def digest(self, path: Path) -> str:
        try:
            st = path.stat()
        except OSError as exc:
            raise ModelLoadError(f"model file {path} cannot be read: {exc}") from exc
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._digests.get(key)
        if known is not None:
            return known
        digest = sha256_file(path)
        with self._lock:
            self._digests[key] = digest
        return digest


# process-wide on purpose: the digest of an unchanged file is a fact, not per-module state
_MEMO = _DigestMemo()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file, read in 1 MiB chunks; ModelLoadError when it cannot be read."""
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
    except OSError as exc:
        raise ModelLoadError(f"model file {path} cannot be read: {exc}") from exc
    return h.hexdigest()


def verify(model: ModelFile) -> str:
    """The file's sha256, after checking it against the manifest; raises ModelLoadError."""
    if not model.path.is_file():
        raise ModelLoadError(f"model file {model.path} does not exist")
    digest = _MEMO.digest(model.path)
    if model.sha256 is not None and digest != model.sha256.lower():
        raise ModelLoadError(
            f"model file {model.path} has sha256 {digest}, the manifest expects {model.sha256}: "
            "reinstall the package that ships it"
        )
    return digest


def shipped(module: str, options: dict[str, object] | None = None) -> list[ModelFile]:
    """The model files built-in ``module`` loads, each with its manifest's sha256 (``democratic-ai doctor``).

    [] for a module that loads none (echo, a module from an entry point: its files are its own).
    A ``model`` option (audio.vad) replaces the shipped file, with the option's ``sha256`` when set.
    ModelLoadError when the package that ships the files is not installed.  The modules are imported
    here, not above: each of them imports this file.
    """
    options = options or {}
    if module == "audio.vad":
        from modules.silero import shipped_model

        if options.get("model"):
            sha = options.get("sha256")
            return [ModelFile(Path(str(options["model"])).expanduser(), str(sha) if sha else None)]
        return [shipped_model()]
    if module == "image.ocr":
        from modules.ocr_engine import MANIFEST, PACKAGE

        base = package_dir(PACKAGE) / "models"
        return [ModelFile(base / name, sha) for name, sha in MANIFEST.items()]
    if module in ("text.embed", "text.summarize"):
        from modules.embedder import SAFETENSORS_SHA256, TOKENIZER_SHA256, model_dir

        base = model_dir()
        return [ModelFile(base / "model.safetensors", SAFETENSORS_SHA256),
                ModelFile(base / "tokenizer.json", TOKENIZER_SHA256)]
    return []
