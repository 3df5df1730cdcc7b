"""Messages by key: every catalogue says the same things, every error is raised by key, and the formats read right."""

from __future__ import annotations

import ast
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.core.errors import ERRORS_BY_CODE, NotFound, RateLimited, ValidationError, error_from_body
from daemon.core.i18n import (
    LANGUAGES,
    Text,
    catalogue,
    format_amount,
    format_date,
    language_from_env,
    pick_language,
    placeholders,
    t,
)

ROOT = Path(__file__).resolve().parents[3]
#: the classes whose first argument must be a catalogue key (the subclasses the hub defines count too)
#: raise sites that pass on a Text a t() call made earlier (a refusal built inside a transaction)
CARRIED = {("daemon/metering/central.py", "refusal.message"), ("daemon/tenancy/authn.py", "message")}
KEYED = {"HubError", *(cls.__name__ for cls in ERRORS_BY_CODE.values()), "HubStopped", "ModuleGone", "AckRefused"}


@pytest.mark.parametrize("section", ["errors", "cli", "console"])
def test_every_language_has_the_same_keys_and_placeholders_in_each_section(section: str) -> None:
    english = catalogue("en")[section]
    assert section == "console" or english, f"the English {section} section is empty"
    for lang in LANGUAGES[1:]:
        other = catalogue(lang)[section]
        assert set(other) == set(english), f"{lang}.{section}: missing {set(english) - set(other)}, " \
                                           f"extra {set(other) - set(english)}"
        for key, template in english.items():
            assert placeholders(other[key]) == placeholders(template), f"{lang}: {section}.{key}"


def test_translations_are_not_english_left_in_place() -> None:
    english = catalogue("en")["errors"]
    for lang in ("ja", "zh"):
        same = [k for k, v in catalogue(lang)["errors"].items()
                if v == english[k] and re.search("[A-Za-z]", re.sub(r"^[\w.]+:|{[^}]*}", "", v))]
        assert not same, f"{lang} keeps English for {same}"


def _raise_sites(classes: set[str]) -> list[tuple[str, ast.expr | None]]:
    sites = []
    for package in ("daemon", "modules", "federation"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name in classes:
                    first = node.args[0] if node.args else None
                    if first is not None and (str(path.relative_to(ROOT)), ast.unparse(first)) in CARRIED:
                        continue
                    sites.append((f"{path.relative_to(ROOT)}:{node.lineno}", first))
    return sites


@pytest.mark.parametrize(("classes", "section"), [(KEYED, "errors"), ({"CliError"}, "cli")])
def test_every_error_is_raised_with_a_catalogue_key(classes: set[str], section: str) -> None:
    english = catalogue("en")[section]
    sites = _raise_sites(classes)
    assert len(sites) > 20 if section == "errors" else len(sites) > 5
    bad = []
    for where, first in sites:
        ok = (isinstance(first, ast.Call) and isinstance(first.func, ast.Name) and first.func.id == "t"
              and len(first.args) == 1 and isinstance(first.args[0], ast.Constant)
              and isinstance(first.args[0].value, str))
        if not ok:
            bad.append(f"{where}: not t('literal.key', ...)")
            continue
        assert isinstance(first, ast.Call)
        key = first.args[0].value  # type: ignore[attr-defined]
        sec, _, name = key.partition(".")
        if sec != section or name not in english:
            bad.append(f"{where}: {key} is not in en.json's {section} section")
            continue
        given = {kw.arg for kw in first.keywords}
        if given != placeholders(english[name]):
            needs = sorted(placeholders(english[name]))
            bad.append(f"{where}: {key} passes {sorted(given)}, the template needs {needs}")
    assert not bad, "\n".join(bad)


def test_an_error_keeps_its_english_message_and_renders_the_callers_language() -> None:
    error = NotFound(t("errors.store.tenant_not_found", tenant_id="acme"), {"tenant": "acme"})
    assert error.message == "tenant 'acme' not found" == str(error)
    japanese = error.to_body("trace-1", lang="ja")["error"]
    assert japanese["code"] == "NOT_FOUND" and japanese["trace_id"] == "trace-1"
    assert "acme" in japanese["message"] and japanese["message"] != error.message
    assert error.to_body("trace-1")["error"]["message"] == error.message
    assert error.to_body(lang="fr")["error"]["message"] == error.message


def test_a_plain_string_and_a_remote_body_are_relayed_unchanged_in_every_language() -> None:
    error = ValidationError("a library said {this}")
    assert error.message == "a library said {this}" == error.render("ja")
    remote = error_from_body({"error": {"code": "RATE_LIMITED", "message": "遅すぎる", "details": {"retry_after": 2}}})
    assert isinstance(remote, RateLimited) and remote.retry_after == 2 and remote.render("en") == "遅すぎる"


def test_a_missing_key_or_parameter_never_raises() -> None:
    assert Text("errors.no_such_key", {}).render("ja") == "errors.no_such_key"
    assert t("nonsense").render() == "nonsense"
    # the template needs tenant_id: the English fallback fails too, so the key is what is left
    assert t("errors.store.tenant_not_found").render("ja") == "errors.store.tenant_not_found"
    assert catalogue("fr") == {}


@pytest.mark.parametrize(("header", "lang"), [
    ("ja", "ja"), ("ja-JP", "ja"), ("ja-JP,ja;q=0.9,en;q=0.8", "ja"), ("en-US,en;q=0.9,ja;q=0.8", "en"),
    ("zh-CN", "zh"), ("zh-TW", "zh"), ("zh-Hans-CN", "zh"), ("fr-FR, de;q=0.9", "en"), ("fr, ja;q=0.5", "ja"),
    ("en;q=0.2, zh;q=0.7", "zh"), ("ja;q=0", "en"), ("*", "en"), ("", "en"), (None, "en"), ("ja;q=bogus, zh", "zh"),
])
def test_pick_language_honours_q_values_and_falls_back_to_english(header: str | None, lang: str) -> None:
    assert pick_language(header) == lang


@pytest.mark.parametrize(("environ", "lang"), [
    ({"LANG": "ja_JP.UTF-8"}, "ja"), ({"LANG": "zh_CN.UTF-8"}, "zh"), ({"LANG": "en_GB.UTF-8"}, "en"),
    ({"LC_ALL": "C", "LANG": "ja_JP.UTF-8"}, "en"), ({"LC_MESSAGES": "zh_TW.UTF-8", "LANG": "ja_JP.UTF-8"}, "zh"),
    ({"LANG": "de_DE@euro"}, "en"), ({}, "en"), ({"LC_ALL": "", "LANG": "ja_JP"}, "ja"),
])
def test_the_cli_language_follows_the_posix_locale(environ: dict[str, str], lang: str) -> None:
    assert language_from_env(environ) == lang


def test_dates_read_as_each_language_writes_them() -> None:
    day = date(2026, 11, 30)
    assert format_date(day, "ja") == "2026年11月30日"
    assert format_date(day, "zh") == "2026年11月30日"
    assert format_date(day, "en") == "November 30, 2026"
    assert format_date(datetime(2026, 3, 1, 23, 59), "fr") == "March 1, 2026"


def test_amounts_yen_without_decimals_and_others_with_two() -> None:
    assert format_amount(Decimal("1234"), "JPY", "ja") == "¥1,234"
    assert format_amount(Decimal("1234.6"), "jpy", "en") == "¥1,235"
    assert format_amount(Decimal("12.5"), "USD", "en") == "$12.50"
    assert format_amount(-3, "EUR", "ja") == "-€3.00"
    assert format_amount("1000000.126", "CHF", "zh") == "1,000,000.13 CHF"
    assert format_amount(8, "CNY", "zh") == "¥8.00"
    assert format_amount(8, "CNY", "en") == "CN¥8.00"


def test_a_parameter_that_is_a_text_is_said_in_the_same_language() -> None:
    error = ValidationError(t("errors.decoding.not_valid_json", what=t("errors.what.frame"), exc="line 1"))
    assert error.message == "the frame is not valid JSON: line 1"
    assert error.render("ja") == "フレームは有効な JSON ではありません: line 1"
    assert error.render("zh") == "帧不是有效的 JSON：line 1"
