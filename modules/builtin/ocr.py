"""``image.ocr``: text lines (text, confidence, box) in a PNG or JPEG, with PP-OCR (ONNX).

Options (``[modules.options."image.ocr"]``): ``max_pixels`` (25 M), ``max_side`` (10000),
``max_bytes`` (32 MiB), and the helper's ``providers`` / ``threads``.
"""

from __future__ import annotations

from typing import Any

from modules.image_input import decode_image
from modules.model_files import ModelLoadError
from modules.ocr_engine import OcrEngine
from modules.onnx_runtime import OnnxSettings, run_blocking
from modules.options import Option, read_options
from modules.sdk import Call, Module, ModuleRuntime, capability

OPTIONS = {
    "max_pixels": Option((int,), 25_000_000, minimum=1),
    "max_side": Option((int,), 10_000, minimum=32),
    "max_bytes": Option((int,), 32 << 20, minimum=1024),
}

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {"type": "string", "minLength": 1, "description": "base64 PNG or JPEG"},
        "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "additionalProperties": False,
}
POINT = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["lines", "text", "width", "height"],
    "properties": {
        "lines": {"type": "array", "items": {
            "type": "object",
            "required": ["text", "confidence", "box"],
            "properties": {
                "text": {"type": "string"},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                # four corners, clockwise from top-left, in the image's pixels
                "box": {"type": "array", "items": POINT, "minItems": 4, "maxItems": 4},
            },
        }},
        "text": {"type": "string"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
    },
}


class OcrModule(Module):
    """``image.ocr``: PP-OCR detection + recognition, one call at a time (the engine is not reentrant)."""

    name = "image.ocr"
    # rapidocr serializes its calls (per-call state on its components); more would only queue threads
    concurrency = 1

    def __init__(self) -> None:
        super().__init__()
        self._engine: OcrEngine | None = None
        self._options: dict[str, Any] = {}

    async def start(self, runtime: ModuleRuntime) -> None:
        """Read the options and load the OCR engine's ONNX sessions off the loop; ModelLoadError on failure."""
        await super().start(runtime)
        self._options = read_options(self.name, runtime.options, OPTIONS)
        settings = OnnxSettings.from_runtime(runtime, self._options)
        self._engine = await run_blocking(runtime, lambda: OcrEngine(settings, runtime.logger))

    async def stop(self) -> None:
        """Release the engine's sessions, if it was loaded."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def describe(self) -> dict[str, Any]:
        """Provider, threads, each model file's sha256 and the image limits; {} before start."""
        if self._engine is None:
            return {}
        first = self._engine.sessions[0].describe()
        return {"provider": self._engine.provider, "providers": first["providers"], "threads": first["threads"],
                "models": {s.model.path.name: s.sha256 for s in self._engine.sessions},
                "max_pixels": self._options["max_pixels"], "max_side": self._options["max_side"]}

    @capability("image.ocr", input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA,
                description="Text lines with confidence and box in a PNG or JPEG image.")
    def ocr(self, payload: dict[str, Any], call: Call) -> dict[str, Any]:
        """Lines at or above min_confidence (default 0.5), blank ones dropped; bills images=1 and pixels."""
        if self._engine is None:
            raise ModelLoadError("image.ocr is not started")
        picture = decode_image(payload["image"], "/image", self._options["max_bytes"],
                               self._options["max_pixels"], self._options["max_side"])
        min_confidence = float(payload.get("min_confidence", 0.5))
        found = [(box, text, score) for box, text, score in self._engine(picture.bgr)
                 if score >= min_confidence and text.strip()]
        lines = [{"text": text, "confidence": round(score, 4), "box": [[round(x, 1), round(y, 1)] for x, y in box]}
                 for box, text, score in found]
        call.report_usage(images=1, pixels=picture.width * picture.height)
        return {"lines": lines, "text": "\n".join(text for _, text, _ in found),
                "width": picture.width, "height": picture.height}
