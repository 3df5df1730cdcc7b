"""Messages by key, rendered in the caller's language (en, ja, zh), and the locale-aware formats.

A message is a :class:`Text`: a catalogue key and its parameters, rendered late so one error can
answer an English and a Japanese caller alike.  The catalogues are ``locales/<lang>.json``, one
section per audience (``errors``, ``cli``, ``console``), loaded once through importlib.resources.
Rendering never raises: a missing key or parameter falls back to English, then to the key itself,
because a broken translation must not turn a clear error into a crash.
"""

from __future__ import annotations

import contextvars
import functools
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from types import MappingProxyType
from typing import Any

#: the languages the hub speaks; the first is the fallback
LANGUAGES: tuple[str, ...] = ("en", "ja", "zh")
DEFAULT_LANGUAGE = "en"

_EMPTY: Mapping[str, Any] = MappingProxyType({})

#: the language of the request being handled (set by the doors), read where an error is rendered
language_var: contextvars.ContextVar[str] = contextvars.ContextVar("language", default=DEFAULT_LANGUAGE)


@dataclass(frozen=True, slots=True)
class Text:
    """A catalogue key (``section.name``) and the values its template interpolates."""

    key: str
    params: Mapping[str, Any]

    def render(self, lang: str = DEFAULT_LANGUAGE) -> str:
        """The message in ``lang``; English when that language lacks it or fails, the key when English does too."""
        for candidate in dict.fromkeys((lang, DEFAULT_LANGUAGE)):
            template = template_of(self.key, candidate)
            if template is None:
                continue
            try:
                # a parameter that is itself a Text ("the body") is said in the same language
                return template.format_map({name: value.render(candidate) if isinstance(value, Text) else value
                                            for name, value in self.params.items()})
            except (KeyError, IndexError, ValueError, TypeError, AttributeError):
                continue  # a translation naming a parameter the raise site does not pass
        return self.key

    def __str__(self) -> str:
        return self.render(DEFAULT_LANGUAGE)


def t(key: str, /, **params: Any) -> Text:
    """The message ``key`` with ``params``: what every raise site passes instead of an English string."""
    return Text(key, params)  # a plain dict: an error holding it still pickles


@functools.cache
def catalogue(lang: str) -> Mapping[str, Mapping[str, str]]:
    """The sections of ``locales/<lang>.json`` (read once); empty for a language the hub does not ship."""
    if lang not in LANGUAGES:
        return MappingProxyType({})
    raw = resources.files("daemon.core").joinpath("locales", f"{lang}.json").read_text(encoding="utf-8")
    data = json.loads(raw)
    return MappingProxyType({name: MappingProxyType(dict(section)) for name, section in data.items()
                             if isinstance(section, dict)})


def template_of(key: str, lang: str) -> str | None:
    """The template of ``section.name`` in ``lang``, or None."""
    section, _, name = key.partition(".")
    value = catalogue(lang).get(section, _EMPTY).get(name)
    return value if isinstance(value, str) else None


def placeholders(template: str) -> frozenset[str]:
    """The parameter names a template interpolates (``{name!r}`` -> ``name``)."""
    return frozenset(field_name.split(".")[0].split("[")[0]
                     for _, field_name, _, _ in string.Formatter().parse(template) if field_name)


def pick_language(accept_language: str | None) -> str:
    """The best of en/ja/zh for an ``Accept-Language`` header (q-values honoured); English when none fits."""
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for item in (accept_language or "").split(","):
        tag, _, rest = item.strip().partition(";")
        lang = _base_language(tag)
        if lang is None:
            continue
        q = 1.0
        for param in rest.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        # on equal q the earlier tag wins, as the header lists them by preference
        if q > best_q:
            best, best_q = lang, q
    return best if best_q > 0 else DEFAULT_LANGUAGE


def language_from_env(environ: Mapping[str, str]) -> str:
    """The language of a POSIX locale (LC_ALL, then LC_MESSAGES, then LANG): ``ja_JP.UTF-8`` -> ``ja``."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(name, "")
        if value:
            # the first variable set decides, as in setlocale(3); C/POSIX mean English
            return _base_language(value.split(".")[0].split("@")[0]) or DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def _base_language(tag: str) -> str | None:
    primary = tag.strip().replace("_", "-").split("-")[0].lower()
    return primary if primary in LANGUAGES else None


_EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December")


def format_date(d: date | datetime, lang: str = DEFAULT_LANGUAGE) -> str:
    """A day as people write it: ``2026年11月30日`` (ja, zh), ``November 30, 2026`` (en)."""
    if lang in ("ja", "zh"):
        return f"{d.year}年{d.month}月{d.day}日"
    return f"{_EN_MONTHS[d.month - 1]} {d.day}, {d.year}"


#: currencies written without minor units (ISO 4217 exponent 0)
_NO_DECIMALS = frozenset({"JPY", "KRW", "VND", "CLP", "ISK"})
_SYMBOLS = {"JPY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "CNY": "¥"}


def format_amount(amount: Decimal | int | float | str, currency: str, lang: str = DEFAULT_LANGUAGE) -> str:
    """Money as a reader of ``lang`` expects: ``¥1,234`` for JPY in every language, ``$12.50``, ``12.50 CHF``."""
    code = currency.upper()
    value = Decimal(str(amount))
    places = 0 if code in _NO_DECIMALS else 2
    quantum = Decimal(1).scaleb(-places)
    digits = f"{abs(value.quantize(quantum)):,.{places}f}"
    sign = "-" if value < 0 else ""
    symbol = _SYMBOLS.get(code)
    if symbol is None:
        return f"{sign}{digits} {code}"
    if code == "CNY" and lang != "zh":
        # ¥ alone reads as yen outside Chinese text
        return f"{sign}CN¥{digits}"
    return f"{sign}{symbol}{digits}"
