"""The HTTPS fallback of the sync: a sealed batch POSTed to the central node's HTTP door.

``POST {central_url}/v1/sync/batch`` with the sealed bytes as the body (``application/msgpack``);
the centre answers ``{"acked": seq}``, or the contract's error body, which becomes the same
``HubError`` here (``daemon.core.errors.error_from_body``).  A network failure, a timeout or an
answer that is not one of those is ``UNAVAILABLE``: the outbox backs off and sends again.
"""

from __future__ import annotations

import json
import ssl as ssl_lib
from typing import Any

import aiohttp

from daemon.core.errors import HubError, Unavailable, error_from_body
from daemon.core.i18n import t

SYNC_PATH = "/v1/sync/batch"
CONTENT_TYPE = "application/msgpack"
#: the largest answer read from the centre: an ack or an error body is far smaller
MAX_REPLY_BYTES = 64 << 10


def batch_url(central_url: str) -> str:
    """Where batches go: ``central_url`` (the centre's HTTP door, ``https://host:port``) and the sync path."""
    return central_url.rstrip("/") + SYNC_PATH


async def post_batch(url: str, data: bytes, ssl: ssl_lib.SSLContext | bool | None = None, *,
                     session: aiohttp.ClientSession | None = None, timeout_s: float = 30.0) -> int:
    """POST the sealed batch ``data`` to the centre at ``url`` (its base URL); the seq it acknowledged.

    ``ssl``: the context that checks the centre's certificate (None: the system's defaults;
    False: no check, for tests only).  ``session``: one to reuse across batches; without it a
    session is made for this one post.  Raises the centre's error as a HubError, or Unavailable.
    """
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await _post(own, url, data, ssl, timeout_s)
    return await _post(session, url, data, ssl, timeout_s)


async def _post(session: aiohttp.ClientSession, url: str, data: bytes, ssl: ssl_lib.SSLContext | bool | None,
                timeout_s: float) -> int:
    target = batch_url(url)
    try:
        async with session.post(target, data=data, headers={"Content-Type": CONTENT_TYPE},
                                ssl=True if ssl is None else ssl,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            raw = await response.content.read(MAX_REPLY_BYTES + 1)
            status = response.status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise Unavailable(t("errors.sync_http.central_node_cannot_reached", target=target,
                            type_name=type(exc).__name__, exc=exc)) from None
    body = _json(raw)
    if 200 <= status < 300:
        acked = body.get("acked") if isinstance(body, dict) else None
        if type(acked) is not int or acked < 0:
            raise Unavailable(t("errors.sync_http.central_node_answered_without", target=target))
        return acked
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error: HubError = error_from_body(body)
        raise error
    raise Unavailable(t("errors.sync_http.central_node_answered_http", target=target, status=status),
                      {"status": status})


def _json(raw: bytes) -> Any:
    if len(raw) > MAX_REPLY_BYTES:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
