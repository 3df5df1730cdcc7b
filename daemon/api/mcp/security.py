"""Transport security of ``/mcp``: which browser origins may call it, and which Host names the hub.

A request without ``Origin`` is not from a browser and passes; a browser ``Origin`` must be
loopback (any port, http or https) or listed in ``http.allowed_origins`` (compared without a
trailing slash, case-insensitively), else the request is PERMISSION_DENIED (403) before its
credentials or body are read: DNS rebinding must not reach a hub listening on localhost.
The URLs the hub hands out name it by ``http.public_url`` or a trusted Host, never by
whatever Host a caller sent (``public_base``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from daemon.api.http_api import ApiRequest, ApiResponse, error_response
from daemon.core.envelope import trace_id_var
from daemon.core.errors import PermissionDenied
from daemon.core.i18n import t

_LOOPBACK_ORIGIN = re.compile(r"^https?://(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d+)?$", re.I)
_B64_SENTINEL = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")
_HOST = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]{0,252}))(?::(?P<port>\d{1,5}))?")
_LOOPBACK_NAME = re.compile(r"localhost|127(\.\d{1,3}){3}|\[::1\]")


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
    exc = PermissionDenied(t("errors.security.origin_not_use_mcp", origin=origin), {"origin": origin})
    return error_response(exc, trace_id_var.get())


def normalize_hosts(hosts: Iterable[str]) -> frozenset[str]:
    """Configured ``http.allowed_hosts`` in the form ``public_base`` compares: lower case, stripped."""
    return frozenset(h.strip().lower() for h in hosts if h.strip())


def public_base(request: ApiRequest, public_url: str, allowed_hosts: frozenset[str]) -> str | None:
    """This hub's base URL for the URLs it hands out (RFC 9728 metadata, ``WWW-Authenticate``).

    ``http.public_url`` when configured.  Otherwise the request's ``Host``, but only when it is
    loopback or listed in ``http.allowed_hosts`` (a name without a port allows any port): a Host
    is whatever the caller typed, and reflecting it would let anyone point a client's token at
    their own server.  None: no trusted name, so no URL is handed out.
    """
    if public_url:
        return public_url.rstrip("/")
    host = request.header("host").strip().lower()
    match = _HOST.fullmatch(host)
    if match is None:
        return None
    if not (_LOOPBACK_NAME.fullmatch(match.group("name")) or host in allowed_hosts
            or match.group("name") in allowed_hosts):
        return None
    scheme = "https" if request.secure or request.door == "http3" else "http"
    return f"{scheme}://{host}"


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
