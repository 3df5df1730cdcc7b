"""The console's page, assets and catalogue: files read once at start, served with strict headers.

The page runs under a Content-Security-Policy that allows only the hub's own scripts, styles
and connections (no inline code, no other origin), may not be framed, and every answer is
revalidated (``no-cache`` with an ETag): an upgraded hub's page is never mixed with old assets.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from types import MappingProxyType

from daemon.api.http_api import ApiRequest, ApiResponse, encode
from daemon.core.errors import NotFound
from daemon.core.i18n import LANGUAGES, catalogue, t

CSP = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS: Mapping[str, str] = MappingProxyType({
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
})
#: what the assets route serves, by extension; anything else in static/ is not served
CONTENT_TYPES: Mapping[str, str] = MappingProxyType({
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
})
PAGE = "index.html"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Asset:
    """One file's bytes, its content type and its ETag."""

    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        """``body`` with a strong ETag of its sha256."""
        return cls(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    def response(self, request: ApiRequest) -> ApiResponse:
        """200 with the body, or 304 when the browser's copy (If-None-Match) is this one."""
        headers = {"content-type": self.content_type, "etag": self.etag, "cache-control": "no-cache",
                   **SECURITY_HEADERS}
        if self.etag in request.header("if-none-match"):
            return ApiResponse(304, headers)
        return ApiResponse(200, headers, self.body)


def _read_dir(folder: Traversable) -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    if not folder.is_dir():
        return assets
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2] if "." in entry.name else ""
        if entry.is_file() and _NAME.match(entry.name) and (suffix in CONTENT_TYPES or entry.name == PAGE):
            kind = "text/html; charset=utf-8" if entry.name == PAGE else CONTENT_TYPES[suffix]
            assets[entry.name] = Asset.of(entry.read_bytes(), kind)
    return assets


class StaticFiles:
    """``static/`` and the console sections of the catalogues, read once (the hub serves what it started with)."""

    def __init__(self, folder: Traversable | None = None) -> None:
        folder = folder if folder is not None else resources.files("daemon.console").joinpath("static")
        self._assets: Mapping[str, Asset] = MappingProxyType(_read_dir(folder))
        self._languages: Mapping[str, Asset] = MappingProxyType({
            lang: Asset.of(encode(dict(catalogue(lang).get("console", {}))), "application/json")
            for lang in LANGUAGES})

    @property
    def names(self) -> list[str]:
        """The files served, page included."""
        return sorted(self._assets)

    def page(self, request: ApiRequest) -> ApiResponse:
        """``GET /console``: the page; NOT_FOUND when this build ships none."""
        asset = self._assets.get(PAGE)
        if asset is None:
            raise NotFound(t("errors.console.no_page"))
        return asset.response(request)

    def asset(self, request: ApiRequest, name: str) -> ApiResponse:
        """``GET /console/assets/{name}``: a script, style or image; NOT_FOUND for anything else."""
        asset = self._assets.get(name) if name != PAGE else None
        if asset is None:
            raise NotFound(t("errors.console.no_asset", name=name[:128]), {"name": name[:128]})
        return asset.response(request)

    def language(self, request: ApiRequest, lang: str) -> ApiResponse:
        """``GET /console/i18n/{lang}.json``: the console's strings in ``lang``; NOT_FOUND for another."""
        asset = self._languages.get(lang)
        if asset is None:
            raise NotFound(t("errors.console.no_language", lang=lang[:16], languages=", ".join(LANGUAGES)),
                           {"languages": list(LANGUAGES)})
        return asset.response(request)
