"""Callers' images: PNG or JPEG (base64) to a BGR array, size checked before decoding."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from modules.inputs import decode_base64, invalid

FORMATS = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}


@dataclass(frozen=True, slots=True)
class Picture:
    """A decoded image as a contiguous BGR uint8 array (what the OCR engine takes); ``format`` PNG or JPEG."""

    bgr: np.ndarray  # uint8 [height, width, 3]
    format: str

    @property
    def width(self) -> int:
        """In pixels."""
        return int(self.bgr.shape[1])

    @property
    def height(self) -> int:
        """In pixels."""
        return int(self.bgr.shape[0])


def decode_image(value: str, pointer: str, max_bytes: int, max_pixels: int, max_side: int) -> Picture:
    """Base64 PNG/JPEG to a Picture; size limits are checked on the header, before pixels are decoded."""
    data = decode_base64(value, pointer, max_bytes)
    if not any(data.startswith(magic) for magic in FORMATS.values()):
        raise invalid(pointer, "not a PNG or JPEG image", formats=sorted(FORMATS))
    try:
        # Pillow's own decompression-bomb guard warns (or raises) at sizes far above ours
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(FORMATS)) as img:
                width, height = img.size
                if width < 1 or height < 1 or max(width, height) > max_side or width * height > max_pixels:
                    raise invalid(pointer, f"image is {width}x{height}; the limit is {max_side} px a side "
                                  f"and {max_pixels} pixels", width=width, height=height,
                                  max_side=max_side, max_pixels=max_pixels)
                fmt = str(img.format)
                rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        # truncated or corrupt files surface as any of these, depending on where decoding stops
        raise invalid(pointer, f"the image cannot be decoded ({exc})") from exc
    return Picture(np.ascontiguousarray(rgb[:, :, ::-1]), fmt)
