"""The one place that owns onnxruntime: providers, threads, cached sessions, warm-up.

* Providers come from ``ModuleRuntime.onnx_providers`` (the hub's ``[modules] providers``),
  overridable per module with the ``providers`` option.  Empty or ``["auto"]`` means CUDA
  when onnxruntime-gpu and a GPU are present, else CPU.  CPU is always kept last as the
  fallback, and the provider a session really got is what ``describe()`` reports.
* Intra-op threads come from ``ModuleRuntime.threads`` (0 = one per core available to
  this process), overridable with the ``threads`` option.  Inter-op is 1: the hub runs
  several calls at once through its thread pool, so one session needs no parallel graph.
* Sessions are cached per model content (sha256), providers and threads: two modules that
  load the same file share one session and its memory.  Loading happens in the caller's
  thread; modules call ``async_load`` so the event loop never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort

from modules.model_files import ModelFile, ModelLoadError, verify
from modules.sdk import ModuleRuntime

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
AUTO = "auto"

Feeds = Mapping[str, np.ndarray]
T = TypeVar("T")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity on Linux), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def gpu_present() -> bool:
    """CUDA usable: the onnxruntime-gpu build is installed and reports a GPU device."""
    return CUDA in ort.get_available_providers() and ort.get_device() == "GPU"


def default_providers() -> tuple[str, ...]:
    """What ``auto`` means here: CUDA then CPU when a GPU is usable, else CPU alone."""
    return (CUDA, CPU) if gpu_present() else (CPU,)


def resolve_providers(requested: Sequence[str], logger: logging.Logger) -> tuple[str, ...]:
    """Expand ``auto``, drop what this onnxruntime build lacks (logged), keep CPU last."""
    wanted = list(requested) or [AUTO]
    available = set(ort.get_available_providers())
    chosen: list[str] = []
    for name in wanted:
        expanded = default_providers() if name == AUTO else (name,)
        for provider in expanded:
            if provider not in available:
                logger.warning("execution provider %s is not available here (have %s); skipped",
                               provider, ", ".join(sorted(available)))
            elif provider not in chosen:
                chosen.append(provider)
    if CPU in chosen:
        chosen.remove(CPU)
    chosen.append(CPU)
    return tuple(chosen)


@dataclass(frozen=True, slots=True)
class OnnxSettings:
    """How sessions of one module are built."""

    providers: tuple[str, ...]
    threads: int

    @classmethod
    def from_runtime(cls, runtime: ModuleRuntime, options: Mapping[str, Any]) -> OnnxSettings:
        """The module's ``providers`` / ``threads`` options over the hub's; ModelLoadError for a bad value."""
        # an option left out (or None) falls back to what the hub lends every module
        requested = options.get("providers")
        if requested is None:
            requested = runtime.onnx_providers
        if isinstance(requested, str):
            requested = [requested]
        if not isinstance(requested, Sequence) or not all(isinstance(p, str) for p in requested):
            raise ModelLoadError(f"option providers must be a list of provider names, not {requested!r}")
        threads = options.get("threads")
        if threads is None:
            threads = runtime.threads
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise ModelLoadError(f"option threads must be an integer >= 0, not {threads!r}")
        return cls(resolve_providers(requested, runtime.logger), threads or available_cores())


@dataclass(slots=True)
class OnnxSession:
    """A loaded session and the facts /v1/capabilities shows about it."""

    session: ort.InferenceSession
    model: ModelFile
    sha256: str
    settings: OnnxSettings
    _key: tuple[str, tuple[str, ...], int] = field(repr=False)
    _released: bool = field(default=False, repr=False)

    @property
    def provider(self) -> str:
        """The provider that really runs the graph (CUDA can silently fall back to CPU)."""
        return str(self.session.get_providers()[0])

    def run(self, feeds: Feeds, outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        """One blocking inference; ``outputs`` None returns every output in graph order."""
        result: list[np.ndarray] = self.session.run(list(outputs) if outputs else None, dict(feeds))
        return result

    def describe(self) -> dict[str, Any]:
        """The facts a module's describe() shows: provider really used, threads, model file and sha256."""
        return {
            "provider": self.provider,
            "providers": list(self.session.get_providers()),
            "threads": self.settings.threads,
            "model": self.model.path.name,
            "sha256": self.sha256,
        }


class SessionCache:
    """Sessions shared by content digest, providers and threads; released by reference count."""

    def __init__(self) -> None:
        # one lock for loads too: two modules asking for the same model load it once
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, tuple[str, ...], int], tuple[ort.InferenceSession, int]] = {}

    def acquire(self, model: ModelFile, settings: OnnxSettings, logger: logging.Logger) -> OnnxSession:
        """Verify ``model`` and return a (possibly shared) session.  Blocking: call from a thread."""
        digest = verify(model)
        if model.sha256 is None:
            logger.warning("model %s is not pinned in a manifest; loaded unverified (sha256 %s)",
                           model.path, digest)
        key = (digest, settings.providers, settings.threads)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                session = _new_session(model, settings)
                if CUDA in settings.providers and session.get_providers()[0] != CUDA:
                    logger.warning("%s: CUDA was asked for but onnxruntime fell back to %s",
                                   model.path.name, session.get_providers()[0])
            else:
                session = entry[0]
            self._entries[key] = (session, (entry[1] if entry else 0) + 1)
        logger.info("onnx model %s on %s, %d intra-op threads", model.path.name,
                    session.get_providers()[0], settings.threads)
        return OnnxSession(session, model, digest, settings, key)

    def release(self, loaded: OnnxSession) -> None:
        """Drop one reference; the last one frees the session.  A second release of the same handle is a no-op."""
        with self._lock:
            entry = self._entries.get(loaded._key)
            if entry is None or loaded._released:  # a second release must not free a neighbour's
                return
            loaded._released = True
            if entry[1] <= 1:
                del self._entries[loaded._key]
            else:
                self._entries[loaded._key] = (entry[0], entry[1] - 1)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _new_session(model: ModelFile, settings: OnnxSettings) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # shipped graphs carry unused initializers: not worth a warning each
    # idle intra-op threads sleep instead of spinning: on a 2-core box the spinning threads of one
    # session steal the cores that the event loop and the other sessions need (measured: a 2-thread
    # embedding run took 3x longer under load with spinning on)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model.path), sess_options=opts, providers=list(settings.providers))
    except Exception as exc:  # onnxruntime raises its own untyped errors for a bad graph
        raise ModelLoadError(f"onnxruntime cannot load {model.path}: {exc}") from exc


# process-wide on purpose: sharing sessions between modules is the point of the cache
SESSIONS = SessionCache()


def load(
    model: ModelFile,
    settings: OnnxSettings,
    logger: logging.Logger,
    warm_up: Feeds | None = None,
) -> OnnxSession:
    """Verify, load (or share) and warm up a session.  Blocking."""
    loaded = SESSIONS.acquire(model, settings, logger)
    if warm_up is not None:
        try:
            loaded.run(warm_up)
        except Exception as exc:  # a graph that loads but cannot run is a load failure
            SESSIONS.release(loaded)
            raise ModelLoadError(f"warm-up of {model.path.name} failed: {exc}") from exc
    return loaded


async def async_load(
    runtime: ModuleRuntime,
    model: ModelFile,
    settings: OnnxSettings,
    warm_up: Feeds | None = None,
) -> OnnxSession:
    """``load`` in the module's thread pool: start() never blocks the event loop."""
    return await run_blocking(runtime, lambda: load(model, settings, runtime.logger, warm_up))


async def run_blocking(runtime: ModuleRuntime, fn: Callable[[], T]) -> T:
    """``fn()`` in the hub's inference pool, awaited: the event loop stays free while it runs."""
    return await asyncio.get_running_loop().run_in_executor(runtime.executor, fn)
