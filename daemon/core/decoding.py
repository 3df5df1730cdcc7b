"""The one JSON decoder for everything a caller sends, on every door.

A body, a WebSocket frame, a JSON-RPC message and a gRPC ``Struct`` all end as Python
values that the hub later re-encodes (to a module, to the ledger, back to the caller), so
all of them pass the same checks here, and a value that passes them always encodes again:

* UTF-8 text (RFC 8259 section 8.1), no byte order mark;
* at most ``MAX_DEPTH`` nested arrays and objects: Python's parser recurses, and 100,000
  levels would raise ``RecursionError`` (a 500) instead of a clear refusal;
* no lone UTF-16 surrogate (``"\\ud800"``): ``json`` accepts the escape, and the string
  then fails to encode as UTF-8 far from where it came in;
* no ``NaN`` or ``Infinity``: not JSON, and other parsers refuse what the hub would echo.

Every refusal is a ``ValidationError`` (400 / INVALID_ARGUMENT) whose ``details.pointer``
is the JSON pointer of the bad value.  Bodies over ``OFFLOAD_BYTES`` are decoded in a
worker thread (``decode_json_async``) so a large one never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from daemon.core.errors import ValidationError
from daemon.core.i18n import Text, t

#: nested arrays/objects a value may have (the top-level container is level 1)
MAX_DEPTH = 64
#: bodies larger than this are decoded (and checked against a schema) off the event loop
OFFLOAD_BYTES = 64 * 1024


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _NotFinite(Exception):
    """A number literal that overflows a float (``1e999``): decode again the slow way, which names it."""


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _NotFinite  # not a ValueError: the caller must not take it for bad JSON
    return value


#: the usual decoder: refuses NaN/Infinity, and stops at a float that overflows, so that a value it
#: returns holds only finite numbers and (``_bounded_depth``) needs no walk over every value
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
#: the same, letting an overflowing float through to ``check_value``, which refuses it with its pointer
_DECODER_ALL_FLOATS = json.JSONDecoder(parse_constant=_no_constant)


def decode_json(data: bytes | bytearray | memoryview | str, *, what: str | Text = t("errors.what.body"),
                pointer: str = "") -> Any:
    """``data`` as a checked JSON value; VALIDATION_ERROR naming ``what`` and the pointer of the bad part."""
    if isinstance(data, str):
        text = data
        escapes = not text.isascii()  # a str (a WebSocket frame) may already hold a surrogate
    else:
        try:
            text = bytes(data).decode("utf-8")  # strict: encoded surrogates and bad bytes are refused
        except UnicodeDecodeError as exc:
            raise ValidationError(t("errors.decoding.not_utf_text_byte", what=what, reason=exc.reason, start=exc.start),
                                  {"pointer": pointer}) from None
        escapes = False
    # from UTF-8 bytes a surrogate can only come from a \u escape: most bodies skip the string scan
    strings = escapes or "\\u" in text
    try:
        try:
            value = _DECODER.decode(text)
        except _NotFinite:
            value = _DECODER_ALL_FLOATS.decode(text)  # the walk below finds the number and names it
        else:
            if not strings and text.count("[") + text.count("{") <= MAX_DEPTH:
                return value  # no surrogate, no infinite number, and too few brackets to nest too deep
    except RecursionError:
        raise ValidationError(t("errors.decoding.nests_arrays_objects_deeper", what=what, max_depth=MAX_DEPTH),
                              {"pointer": pointer, "max_depth": MAX_DEPTH}) from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, an integer over Python's digit limit
        raise ValidationError(t("errors.decoding.not_valid_json", what=what, exc=exc), {"pointer": pointer}) from None
    check_value(value, what=what, pointer=pointer, strings=strings)
    return value


async def decode_json_async(data: bytes | bytearray | memoryview | str, *, what: str | Text = t("errors.what.body"),
                            pointer: str = "") -> Any:
    """``decode_json``, in a worker thread when ``data`` is over ``OFFLOAD_BYTES`` (the loop keeps serving)."""
    if len(data) <= OFFLOAD_BYTES:
        return decode_json(data, what=what, pointer=pointer)
    return await asyncio.to_thread(decode_json, data, what=what, pointer=pointer)


def check_value(value: Any, *, what: str | Text = t("errors.what.value"), pointer: str = "",
                strings: bool = True) -> None:
    """Refuse a decoded value deeper than ``MAX_DEPTH``, with a lone surrogate (``strings``) or a non-finite number.

    Iterative, so it cannot itself run out of stack; used as is on values another parser
    built (a gRPC ``Struct``).
    """
    # a node's place is (its parent's place, its key): the pointer text is built only for a refusal,
    # so a body that passes (nearly all) costs no string per value
    stack: list[tuple[Any, int, _Place]] = [(value, 1, None)]
    while stack:
        node, depth, place = stack.pop()
        if isinstance(node, dict):
            entries: Any = node.items()
        elif isinstance(node, list):
            entries = enumerate(node)
        else:
            _check_scalar(node, what, _pointer(pointer, place), strings)
            continue
        if depth > MAX_DEPTH:
            raise ValidationError(t("errors.decoding.nests_arrays_objects_deeper", what=what, max_depth=MAX_DEPTH),
                                  {"pointer": _pointer(pointer, place), "max_depth": MAX_DEPTH})
        for key, item in entries:
            if strings and isinstance(key, str) and not _encodable(key):
                raise ValidationError(t("errors.decoding.key_lone_utf_surrogate", what=what),
                                      {"pointer": _pointer(pointer, (place, key))})
            if isinstance(item, dict | list):
                stack.append((item, depth + 1, (place, key)))
            elif isinstance(item, float):
                if not math.isfinite(item):
                    _check_scalar(item, what, _pointer(pointer, (place, key)), strings)
            elif strings and isinstance(item, str) and not _encodable(item):
                _check_scalar(item, what, _pointer(pointer, (place, key)), strings)


#: where a value sits: None for the root, else (the parent's place, the key or index in it)
_Place = tuple[Any, Any] | None


def _pointer(prefix: str, place: _Place) -> str:
    """The JSON pointer of ``place`` under ``prefix``."""
    tokens: list[str] = []
    while place is not None:
        place, key = place
        tokens.append(_escape(key))
    return prefix + "".join(f"/{token}" for token in reversed(tokens))


def _check_scalar(node: Any, what: str | Text, where: str, strings: bool) -> None:
    if strings and isinstance(node, str) and not _encodable(node):
        raise ValidationError(t("errors.decoding.string_lone_utf_surrogate", what=what),
                              {"pointer": where})
    if isinstance(node, float) and not math.isfinite(node):
        raise ValidationError(t("errors.decoding.number_not_finite", what=what), {"pointer": where})


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escape(key: Any) -> str:
    """One JSON-pointer reference token (RFC 6901); a lone surrogate is shown escaped so the pointer encodes."""
    token = str(key).replace("~", "~0").replace("/", "~1")
    return token if _encodable(token) else token.encode("utf-8", "backslashreplace").decode("ascii")
