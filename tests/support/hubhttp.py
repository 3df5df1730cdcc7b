"""One HTTP request to a hub, as a test's user makes it: status, JSON body and headers back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp


async def send(url: str, method: str, path: str, *, key: str | None = None, token: str | None = None,
               json_body: object = None) -> tuple[int, Any, Mapping[str, str]]:
    """``method path`` on the hub at ``url`` with an API key and/or a bearer token."""
    headers = {}
    if key:
        headers["X-API-Key"] = key
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{url}{path}", headers=headers, json=json_body) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers.copy()
