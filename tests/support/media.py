"""Test media made on the spot: speech from espeak-ng, pages drawn with Pillow, and helpers."""

from __future__ import annotations

import base64
import io
import subprocess
import wave
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
              "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wav_bytes(pcm: np.ndarray, rate: int, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def espeak(text: str, tmp: Path) -> tuple[np.ndarray, int]:
    out = tmp / "phrase.wav"
    subprocess.run(["espeak-ng", "-w", str(out), text], check=True, capture_output=True, timeout=30)
    with wave.open(str(out), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy(), w.getframerate()


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in FONT_PATHS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def page(lines: list[str], fmt: str = "PNG", size: tuple[int, int] = (1000, 360)) -> bytes:
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((40, 40 + i * 110), line, font=font(48), fill="black")
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def squash(text: str) -> str:
    """The Chinese-trained recognizer often drops spaces between words: compare without them."""
    return "".join(text.split()).lower()


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
