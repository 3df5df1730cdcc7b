"""PP-OCR (detection, direction, recognition) from rapidocr-onnxruntime, on the helper's sessions.

rapidocr's pre- and post-processing is used as shipped; only its onnxruntime sessions are
ours, so providers, threads, sha256 checks and session sharing follow the helper.  Its
components build their sessions in their constructors (``OrtInferSession(config)``), so
for the length of construction that name is pointed at a factory that hands out the
helper's sessions: the models are loaded once, by us, and never by rapidocr.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modules.model_files import ModelFile, package_dir
from modules.onnx_runtime import SESSIONS, OnnxSession, OnnxSettings, load

PACKAGE = "rapidocr_onnxruntime"
# the manifest: file name under rapidocr_onnxruntime/models -> sha256
MANIFEST = {
    "ch_PP-OCRv4_det_infer.onnx": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    "ch_PP-OCRv4_rec_infer.onnx": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
}
_CONSTRUCTION = threading.Lock()  # the name swap below must not interleave with another build


def _session_adapter(loaded: OnnxSession) -> Any:
    """An ``OrtInferSession`` look-alike (rapidocr's session wrapper) over a helper session."""
    from rapidocr_onnxruntime.utils.infer_engine import OrtInferSession

    adapter = OrtInferSession.__new__(OrtInferSession)
    adapter.session = loaded.session
    adapter.logger = logging.getLogger("rapidocr")
    adapter.use_cuda = adapter.use_directml = False  # only read by rapidocr's own provider checks
    return adapter


@contextlib.contextmanager
def _sessions_from(factory: Callable[[dict[str, Any]], Any]) -> Iterator[None]:
    from rapidocr_onnxruntime.ch_ppocr_cls import text_cls
    from rapidocr_onnxruntime.ch_ppocr_det import text_detect
    from rapidocr_onnxruntime.ch_ppocr_rec import text_recognize

    targets = (text_detect, text_cls, text_recognize)
    with _CONSTRUCTION:
        saved = [m.OrtInferSession for m in targets]
        for m in targets:
            m.OrtInferSession = factory  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for m, original in zip(targets, saved, strict=True):
                m.OrtInferSession = original  # type: ignore[attr-defined]


class OcrEngine:
    """A RapidOCR pipeline whose three sessions come from the helper.  ``__call__`` is blocking."""

    def __init__(self, settings: OnnxSettings, logger: logging.Logger,
                 models: dict[str, ModelFile] | None = None) -> None:
        from rapidocr_onnxruntime import RapidOCR

        if models is None:
            base = package_dir(PACKAGE) / "models"
            models = {name: ModelFile(base / name, sha) for name, sha in MANIFEST.items()}
        self.sessions: list[OnnxSession] = []
        by_name = {Path(name).name: model for name, model in models.items()}

        def factory(config: dict[str, Any]) -> Any:
            model = by_name[Path(config["model_path"]).name]
            loaded = load(model, settings, logger)
            self.sessions.append(loaded)
            return _session_adapter(loaded)

        try:
            with _sessions_from(factory):
                # text_score 0: every line comes back; the capability filters by the caller's threshold
                self._engine = RapidOCR(text_score=0.0)
        except BaseException:
            self.close()
            raise
        # rapidocr keeps per-call state on its components (preprocess_op): one call at a time
        self._lock = threading.Lock()
        self.warm_up()

    def warm_up(self) -> None:
        """One run on a tiny synthetic page, so the first caller does not pay for graph initialisation."""
        # small and square: detection scales the short side up to 736 px, so a wide page costs seconds.
        # It warms detection (the heavy graph); the first recognition run is cheap on its own.
        page = np.full((48, 48, 3), 255, dtype=np.uint8)
        page[18:30, 6:42] = 0
        self(page)

    def __call__(self, bgr: np.ndarray) -> list[tuple[list[list[float]], str, float]]:
        """Every line found, unfiltered: (four box corners, text, score); calls are serialised by a lock."""
        with self._lock:
            found, _ = self._engine(bgr)
        lines: list[tuple[list[list[float]], str, float]] = []
        for box, text, score in found or []:
            lines.append(([[float(x), float(y)] for x, y in box], str(text), float(score)))
        return lines

    @property
    def provider(self) -> str:
        """The provider the first (detection) session really got; "none" once closed."""
        return self.sessions[0].provider if self.sessions else "none"

    def close(self) -> None:
        """Release every session this engine holds; idempotent."""
        sessions, self.sessions = self.sessions, []
        for loaded in sessions:
            SESSIONS.release(loaded)
