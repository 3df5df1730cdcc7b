"""Decoding callers' bytes: every failure is a VALIDATION_ERROR that names the field."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from daemon.core.errors import ValidationError
from daemon.core.i18n import t


def invalid(pointer: str, message: str, **details: Any) -> ValidationError:
    """The VALIDATION_ERROR (returned, not raised) for the field at ``pointer``; ``details`` join the body."""
    return ValidationError(t("errors.inputs.payload_invalid", pointer=pointer, message=message), {"pointer": pointer,
                             "reason": message,
                                                                       **details})


def decode_base64(value: str, pointer: str, max_bytes: int) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, whitespace ignored)."""
    # cheap bound before decoding: 4 characters carry 3 bytes, plus room for line breaks
    if len(value) > max_bytes * 14 // 10 + 16:
        raise invalid(pointer, f"larger than {max_bytes} bytes", max_bytes=max_bytes)
    text = "".join(value.split())
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4) if "=" not in text else ""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(pointer, f"not valid base64 ({exc})") from exc
    if not data:
        raise invalid(pointer, "empty")
    if len(data) > max_bytes:
        raise invalid(pointer, f"larger than {max_bytes} bytes", max_bytes=max_bytes)
    return data
