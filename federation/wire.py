"""The frames fleet peers exchange over their one link, as msgpack maps, and the bounds on reading them.

Every frame is a map with a type ``t``:

- ``hello``  — ``sealed``: the sender's node certificate, site, addresses and version, signed by it;
  the first frame each side sends on a new link, and nothing else is read before it is accepted.
- ``advert`` — ``sealed``: the sender's capabilities (``federation/adverts.py``), signed.
- ``call``   — ``id``, ``sealed``: a forwarded call, signed by the sender, with the origin's signed
  on-behalf-of assertion inside; or (sealed kind ``usage``) a site's usage batch for its central
  node, answered by a ``result`` with ``acked``.
- ``part``   — ``id``, ``progress``, ``message``, ``data``: progress of a streaming call.
- ``result`` — ``id``, ``module``, ``result_json``, ``usage``, ``compute_ms``, ``receipt``.
- ``error``  — ``id``, ``code``, ``message``, ``details``: the contract's error, end to end.
- ``cancel`` — ``id``: the origin gave up; the serving hub stops the call.

Requests are multiplexed over the link by ``id`` (chosen by the caller), so a peer keeps one
connection and one stream however many calls it carries.
"""

from __future__ import annotations

from typing import Any

import msgpack

#: the largest frame a peer may send (a call's payload or a result included)
MAX_FRAME = 8 << 20

HELLO, ADVERT, CALL, PART, RESULT, ERROR, CANCEL = "hello", "advert", "call", "part", "result", "error", "cancel"
#: the sealed kind of a usage batch a site sends its central node in a ``call`` frame (federation/sync/)
USAGE = "usage"
TYPES = frozenset((HELLO, ADVERT, CALL, PART, RESULT, ERROR, CANCEL))
#: the frames that answer a call, by the call's ``id``
REPLIES = frozenset((PART, RESULT, ERROR))


class WireError(ValueError):
    """A frame that is not one of ours: too large, not msgpack, not a map, an unknown type or a bad field."""


def encode(frame: dict[str, Any]) -> bytes:
    """A frame as bytes (binary kept binary)."""
    return msgpack.packb(frame, use_bin_type=True)


def decode(data: bytes, *, max_bytes: int = MAX_FRAME) -> dict[str, Any]:
    """A frame from a peer; WireError for anything that is not a well-formed frame of a known type."""
    if len(data) > max_bytes:
        raise WireError(f"frame of {len(data)} bytes is over the {max_bytes} byte limit")
    try:
        frame = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        raise WireError(f"frame is not msgpack: {type(exc).__name__}") from None
    if not isinstance(frame, dict) or frame.get("t") not in TYPES:
        raise WireError("frame is not a map with a known type")
    if frame["t"] in REPLIES or frame["t"] in (CALL, CANCEL):
        call_id = frame.get("id")
        if not isinstance(call_id, int) or isinstance(call_id, bool) or not 0 <= call_id < 1 << 63:
            raise WireError(f"{frame['t']} frame without a valid id")
    return frame


def field(frame: dict[str, Any], name: str, kind: type | tuple[type, ...], *, limit: int | None = None) -> Any:
    """``frame[name]`` checked for type (and length, for text, bytes and lists); WireError names the field."""
    value = frame.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise WireError(f"field {name!r} is missing or not {_names(kind)}")
    if limit is not None and isinstance(value, str | bytes | list) and len(value) > limit:
        raise WireError(f"field {name!r} is longer than {limit}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))
