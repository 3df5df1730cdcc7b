"""Transport security of ``/mcp``: which browser origins may call it, and what the Host says.

A request without ``Origin`` is not from a browser and passes; a browser ``Origin`` must be
loopback (any port, http or https) or listed in ``http.allowed_origins`` (compared without a
trailing slash, case-insensitively), else the request is PERMISSION_DENIED (403) before its
credentials or body are read: DNS rebinding must not reach a hub listening on localhost.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from daemon.api.http_api import ApiRequest, ApiResponse, error_response
from daemon.core.envelope import trace_id_var
from daemon.core.errors import PermissionDenied

_LOOPBACK_ORIGIN = re.compile(r"^https?://(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d+)?$", re.I)
_B64_SENTINEL = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")


def normalize_origins(origins: Iterable[str]) -> frozenset[str]:
    """Configured origins in the form ``origin_refused`` compares: lower case, no trailing slash."""
    return frozenset(o.rstrip("/").lower() for o in origins)


def origin_allowed(origin: str, allowed: frozenset[str]) -> bool:
    """True for a loopback origin or one of ``allowed`` (already normalized)."""
    return bool(_LOOPBACK_ORIGIN.match(origin)) or origin.rstrip("/").lower() in allowed


def origin_refused(request: ApiRequest, allowed: frozenset[str]) -> ApiResponse | None:
    """The 403 answer for a browser origin that may not use /mcp; None when the request may go on."""
    origin = request.header("origin")
    if not origin or origin_allowed(origin, allowed):
        return None
    exc = PermissionDenied(f"origin {origin!r} may not use /mcp", {"origin": origin})
    return error_response(exc, trace_id_var.get())


def base_url(request: ApiRequest) -> str:
    """This hub as the caller addressed it (``Host``; https on the HTTP/3 door): for metadata URLs."""
    scheme = "https" if request.door == "http3" else "http"
    return f"{scheme}://{request.header('host', 'localhost')}"


def decode_header_value(value: str | None) -> str | None:
    """``=?base64?…?=`` header values (non-ASCII names) decoded; anything else verbatim.

    None when the value is absent, or is a sentinel whose payload is not base64 of UTF-8.
    """
    if value is None:
        return None
    match = _B64_SENTINEL.fullmatch(value)
    if match is None:
        return value
    try:
        return base64.b64decode(match.group("payload"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
