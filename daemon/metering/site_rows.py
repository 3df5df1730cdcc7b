"""A site's ledger rows as the central node receives them: exact types, bounds, consecutive seqs.

The columns and their types are ``ledger/rows.py``'s (``LedgerRow``); this module adds what a row
from another machine must also satisfy before the centre stores it.  Sans-IO: lists in, LedgerRows
or ValidationError out.
"""

from __future__ import annotations

import json
import operator
import typing
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from daemon.core.errors import ValidationError
from daemon.core.i18n import t
from daemon.metering.ledger.events import KINDS, MAX_BYTES, MAX_CALLS, MAX_COMPUTE_MS, MAX_UNIT, MAX_UNITS
from daemon.metering.ledger.rows import COLUMNS, LedgerRow

#: the most rows one ingest takes (a sync batch is at most federation's MAX_BATCH_ROWS)
MAX_INGEST_ROWS = 10_000
#: bounds on a row's text fields, in characters
MAX_SITE_ID = 128
MAX_TEXT = 256
MAX_UNITS_TEXT = 4096
MAX_CREDITS_TEXT = 64
#: a timestamp past this (year 5138) is not a clock reading
MAX_TS_US = 10**17

#: the type each column must have, in column order, as ledger/rows.py declares it (exact: a bool is not an int)
TYPES: tuple[type, ...] = tuple(typing.get_type_hints(LedgerRow)[column] for column in COLUMNS)
_MAX_LEN: tuple[int, ...] = (0, MAX_TEXT, MAX_TEXT, MAX_TEXT, MAX_TEXT, MAX_TEXT, MAX_TEXT, MAX_TEXT, 0, 0, 0, 0,
                             MAX_UNITS_TEXT, MAX_CREDITS_TEXT, 0, MAX_TEXT, 64, 64)
_KINDS = frozenset(KINDS)
#: the text columns capped at MAX_TEXT (ids, names, trace id); units and credits have their own caps
_short_texts = operator.itemgetter(*(i for i, cap in enumerate(_MAX_LEN) if cap == MAX_TEXT))


def checked_batch(site: str, site_name: str, rows: Sequence[Sequence[Any]]) -> list[LedgerRow]:
    """The batch as LedgerRows, or ValidationError naming the first thing wrong (sans-IO)."""
    if not isinstance(site, str) or not 0 < len(site) <= MAX_SITE_ID:
        raise ValidationError(t("errors.site_rows.sync_site_id_characters", max_site_id=MAX_SITE_ID))
    if not isinstance(site_name, str) or len(site_name) > MAX_TEXT:
        raise ValidationError(t("errors.site_rows.sync_site_name_most", max_text=MAX_TEXT))
    if not 0 < len(rows) <= MAX_INGEST_ROWS:
        raise ValidationError(t("errors.site_rows.sync_batch_holds_rows", max_ingest_rows=MAX_INGEST_ROWS,
                                count=len(rows)))
    out: list[LedgerRow] = []
    seen_units: set[str] = {"{}"}
    seen_credits: set[str] = {"0"}
    expected = None
    for raw in rows:
        row = _checked_row(raw, site)
        if expected is not None and row.seq != expected:
            raise ValidationError(t("errors.site_rows.sync_site_rows_consecutive", site=site, seq=row.seq,
                                    previous=expected - 1), {"site": site, "seq": row.seq})
        expected = row.seq + 1
        if row.units not in seen_units:
            _check_units(row.units, site, row.seq)
            seen_units.add(row.units)
        if row.credits not in seen_credits:
            _check_credits(row.credits, site, row.seq)
            seen_credits.add(row.credits)
        out.append(row)
    return out


def _checked_row(raw: Sequence[Any], site: str) -> LedgerRow:
    # the common case is checked in bulk (one C-level pass per test); the column-by-column walk
    # runs only to name what is wrong
    if not isinstance(raw, list | tuple) or len(raw) != len(COLUMNS):
        raise ValidationError(t("errors.site_rows.sync_site_row_list", site=site, columns=len(COLUMNS)),
                              {"site": site})
    if tuple(map(type, raw)) != TYPES or max(map(len, _short_texts(raw))) > MAX_TEXT or (
            len(raw[12]) > MAX_UNITS_TEXT or len(raw[13]) > MAX_CREDITS_TEXT):
        _name_bad_column(raw, site)
    row = LedgerRow._make(raw)
    if (row.seq < 1 or row.kind not in _KINDS or not row.event_id or not row.tenant_id
            or not 0 <= row.api_calls <= MAX_CALLS or not 0 <= row.bytes_in <= MAX_BYTES
            or not 0 <= row.bytes_out <= MAX_BYTES or not 0 <= row.compute_ms <= MAX_COMPUTE_MS
            or not 0 <= row.ts_us <= MAX_TS_US or len(row.hash) != 64 or len(row.prev_hash) != 64):
        # compute_ms: a NaN fails the range test too
        raise ValidationError(t("errors.site_rows.sync_site_row_out", site=site, seq=row.seq), {"site": site,
                                "seq": row.seq})
    return row


def _name_bad_column(raw: Sequence[Any], site: str) -> None:
    """ValidationError naming the first column of the wrong type or length."""
    for name, value, kind, cap in zip(COLUMNS, raw, TYPES, _MAX_LEN, strict=True):
        if type(value) is not kind:
            raise ValidationError(t("errors.site_rows.sync_site_column", site=site, name=name, type_name=kind.__name__),
                                  {"site": site, "seq": raw[0], "field": name})
        if cap and isinstance(value, str) and len(value) > cap:
            raise ValidationError(t("errors.site_rows.sync_site_column_longer", site=site, name=name, cap=cap),
                                  {"site": site, "seq": raw[0], "field": name})


def _check_units(text: str, site: str, seq: int) -> None:
    try:
        units = json.loads(text)
    except (ValueError, RecursionError):  # 4 KiB of brackets nests past the decoder's depth
        units = None
    if (not isinstance(units, dict) or len(units) > MAX_UNITS
            or not all(type(v) in (int, float) and 0 <= v <= MAX_UNIT for v in units.values())):
        raise ValidationError(t("errors.site_rows.sync_site_row_units", site=site, seq=seq, max_units=MAX_UNITS,
                                max_unit=MAX_UNIT), {"site": site, "seq": seq, "field": "units"})


def _check_credits(text: str, site: str, seq: int) -> None:
    try:
        ok = Decimal(text).is_finite()
    except InvalidOperation:
        ok = False
    if not ok:
        raise ValidationError(t("errors.site_rows.sync_site_row_credits", site=site, seq=seq, text=text),
                              {"site": site, "seq": seq, "field": "credits"})
