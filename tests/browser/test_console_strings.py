"""Every string the console page asks for is in the catalogues (no browser needed: read the page's files)."""

from __future__ import annotations

import re

from daemon.core.i18n import LANGUAGES, catalogue
from daemon.tenancy.rbac import ROLE_NAMES
from tests.support.hubproc import ROOT

STATIC = ROOT / "daemon" / "console" / "static"


def keys_the_page_uses() -> set[str]:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    script = (STATIC / "console.js").read_text(encoding="utf-8")
    keys = set(re.findall(r'data-i18n="([\w.]+)"', html))
    keys |= set(re.findall(r"\btr\('([\w.]+)'", script))
    keys |= {f"role_{role}" for role in ROLE_NAMES} | {"tenant_active", "tenant_suspended"}
    return keys


def test_the_page_finds_every_string_it_shows_in_every_language() -> None:
    used = keys_the_page_uses()
    assert len(used) > 60
    for lang in LANGUAGES:
        missing = used - set(catalogue(lang)["console"])
        assert not missing, f"{lang}.json console section lacks {sorted(missing)}"


def test_the_page_stays_small_and_self_contained() -> None:
    files = list(STATIC.iterdir())
    assert sum(f.stat().st_size for f in files) < 200 * 1024
    for f in files:
        body = f.read_text(encoding="utf-8")
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", body), f"{f.name} reaches outside the hub"
        assert "eval(" not in body and "new Function" not in body and "innerHTML" not in body, f.name
