"""The central billing ledger on real SQLite files, fed from real site ledgers.

Each site's rows are written by the real ledger writer (UsageLedger) and read back with the
sync reader, exactly what a site's outbox sends; the centre then ingests, refuses, bills,
settles and exports them.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from daemon.core.errors import Conflict, NotFound, ValidationError
from daemon.metering.central import (
    CENTRAL_FILE,
    CentralLedger,
    CentralReader,
    combine_totals,
)
from daemon.metering.cloudevents import CLOUDEVENT_TYPE, cloudevents
from daemon.metering.ledger.chain import GENESIS, entry_hash
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.reader import ledger_head, rows_after
from daemon.metering.ledger.rows import LedgerRow
from daemon.metering.ledger.writer import UsageLedger

SCHEMA_FILE = Path(__file__).parents[2] / "fixtures" / "cloudevents-1.0.schema.json"

OSAKA = "12D3KooWGzBvGkQ5cQ8iX1b2m3N4p5Q6r7S8t9U1v2W3x4Y5z6Aa"
KOBE = "12D3KooWHaCwHmR6dR9jY2c3n4P5q6R7s8T9u1V2w3X4y5Z6a7Bb"
TENANT = "6f1c1c52-5d1e-4c55-9a43-3f0c4b1d2e10"


def at(day: int, month: int = 3, hour: int = 12) -> float:
    """A moment of 2026, epoch seconds."""
    return datetime(2026, month, day, hour, tzinfo=UTC).timestamp()


class Clock:
    """The centre's wall clock, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def call(ts: float, **kw: Any) -> UsageEvent:
    fields: dict[str, Any] = {"tenant_id": TENANT, "subject": "key:abc123", "action": "echo", "module": "echo",
                              "plan": "starter", "ts": ts, "compute_ms": 12.5, "bytes_in": 10, "bytes_out": 20}
    fields.update(kw)
    return UsageEvent(**fields)


async def site_ledger(path: Path, events: Iterable[UsageEvent]) -> list[LedgerRow]:
    """A site's real ledger holding these events, in order; its rows as the outbox reads them."""
    async with UsageLedger(path) as ledger:
        for event in events:
            await ledger.append(event)
    return rows_after(path, 0, 1000)


async def calls_at(path: Path, n: int, ts: float = 0.0, **kw: Any) -> list[LedgerRow]:
    return await site_ledger(path, (call(ts or at(10), **kw) for _ in range(n)))


def held(central: Path) -> int:
    with sqlite3.connect(central) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


@pytest.fixture
def clock() -> Clock:
    return Clock(at(15))


@pytest.fixture
def centre(tmp_path: Path, clock: Clock) -> Iterable[CentralLedger]:
    with CentralLedger(tmp_path / "central" / CENTRAL_FILE, clock=clock, registry=CollectorRegistry()) as ledger:
        yield ledger


# -- ingest and acknowledgement -----------------------------------------------------------------


async def test_a_site_s_rows_are_stored_durably_and_acknowledged(tmp_path: Path, centre: CentralLedger) -> None:
    rows = await calls_at(tmp_path / "osaka.db", 5)
    assert ledger_head(tmp_path / "osaka.db") == (5, rows[-1].ts_us)
    assert centre.ingest(OSAKA, "osaka", rows[:3]) == 3
    assert centre.ingest(OSAKA, "osaka", rows[3:]) == 5
    assert centre.acked(OSAKA) == 5 and centre.acked(KOBE) == 0
    assert centre.durability == {"journal_mode": "wal", "synchronous": "FULL"}
    files = {f.name: f.stat().st_mode & 0o777 for f in centre.path.parent.iterdir()}
    assert all(mode == 0o600 for mode in files.values()), files
    [status] = centre.sites()
    assert (status.node_id, status.name, status.acked_seq, status.acked_hash) == (OSAKA, "osaka", 5, rows[-1].hash)
    assert status.lag_seconds == pytest.approx(at(15) - at(10))
    assert status.to_dict()["last_error"] == ""
    assert centre.verify() == {"ok": True, "sites": {OSAKA: {"ok": True, "rows": 5, "first_bad_seq": None,
                                                             "reason": "5 rows, chain intact"}}}


async def test_a_re_sent_batch_and_overlaps_are_acknowledged_without_storing_twice(
        tmp_path: Path, centre: CentralLedger) -> None:
    rows = await calls_at(tmp_path / "osaka.db", 12)
    assert centre.ingest(OSAKA, "osaka", rows[:8]) == 8
    assert centre.ingest(OSAKA, "osaka", rows[:8]) == 8  # the ack was lost: the same batch again
    assert centre.ingest(OSAKA, "osaka", rows[2:5]) == 8  # an old batch, replayed by a relay
    assert centre.ingest(OSAKA, "osaka", [list(r) for r in rows[5:]]) == 12  # overlap, then new (msgpack lists)
    assert held(centre.path) == 12
    assert centre.verify()["ok"]


async def test_the_same_seq_from_two_sites_are_two_rows(tmp_path: Path, centre: CentralLedger) -> None:
    osaka = await calls_at(tmp_path / "osaka.db", 3)
    kobe = await calls_at(tmp_path / "kobe.db", 2)
    assert centre.ingest(OSAKA, "osaka", osaka) == 3
    assert centre.ingest(KOBE, "kobe", kobe) == 2
    # a site speaks only for itself: Kobe sending Osaka's rows under its own id is a broken chain
    with pytest.raises(Conflict):
        centre.ingest(KOBE, "kobe", osaka)
    assert [s.node_id for s in centre.sites()] == sorted([OSAKA, KOBE])
    assert held(centre.path) == 5


# -- refusals -----------------------------------------------------------------------------------


def relinked(rows: list[LedgerRow], index: int, **change: Any) -> list[LedgerRow]:
    """The rows with one changed and the chain re-hashed from it: a rewritten but self-consistent history."""
    out = list(rows[:index])
    prev = out[-1].hash if out else GENESIS
    for i, row in enumerate(rows[index:]):
        fields = row._replace(**change) if i == 0 else row
        digest = entry_hash(prev, fields.hashed)
        out.append(fields._replace(prev_hash=prev, hash=digest))
        prev = digest
    return out


async def test_a_row_that_differs_from_the_one_held_is_refused_with_both_hashes(
        tmp_path: Path, centre: CentralLedger) -> None:
    registry = CollectorRegistry()
    with CentralLedger(tmp_path / "c2.db", clock=centre._clock, registry=registry) as ledger:
        rows = await calls_at(tmp_path / "osaka.db", 6)
        assert ledger.ingest(OSAKA, "osaka", rows[:4]) == 4
        rewritten = relinked(rows, 2, api_calls=5)
        with pytest.raises(Conflict) as refused:
            ledger.ingest(OSAKA, "osaka", rewritten[1:])
        assert refused.value.details == {"reason": "differs", "site": OSAKA, "seq": 3, "held_hash": rows[2].hash,
                                         "sent_hash": rewritten[2].hash}
        assert OSAKA in refused.value.message and rows[2].hash in refused.value.message
        assert rewritten[2].hash in refused.value.message
        assert ledger.acked(OSAKA) == 4 and held(ledger.path) == 4  # rows 5, 6 of that batch: not stored
        [status] = ledger.sites()
        assert "seq 3 differs" in status.last_error and status.error_at == centre._clock()
        assert registry.get_sample_value("democratic_ai_central_refused_batches_total",
                                         {"reason": "differs"}) == 1
        # the true rows still go through, and a success clears the error
        assert ledger.ingest(OSAKA, "osaka", rows[3:]) == 6
        assert ledger.sites()[0].last_error == ""


async def test_a_gap_is_refused(tmp_path: Path, centre: CentralLedger) -> None:
    rows = await calls_at(tmp_path / "osaka.db", 10)
    centre.ingest(OSAKA, "osaka", rows[:5])
    with pytest.raises(Conflict) as refused:
        centre.ingest(OSAKA, "osaka", rows[7:])
    assert refused.value.details == {"reason": "gap", "site": OSAKA, "seq": 8, "held_hash": rows[4].hash,
                                     "sent_hash": rows[7].prev_hash, "acked": 5}  # where the site resumes
    assert "missing" in refused.value.message
    assert centre.acked(OSAKA) == 5 and held(centre.path) == 5
    with pytest.raises(Conflict):  # a first batch must start at seq 1
        centre.ingest(KOBE, "kobe", rows[1:])


async def test_a_broken_chain_is_refused(tmp_path: Path, centre: CentralLedger) -> None:
    rows = await calls_at(tmp_path / "osaka.db", 6)
    other = await calls_at(tmp_path / "other.db", 6)  # another history: its seq 4 links to its own seq 3
    centre.ingest(OSAKA, "osaka", rows[:3])
    with pytest.raises(Conflict) as refused:
        centre.ingest(OSAKA, "osaka", other[3:])
    assert refused.value.details == {"reason": "broken_chain", "site": OSAKA, "seq": 4, "held_hash": rows[2].hash,
                                     "sent_hash": other[3].prev_hash}
    assert "does not link" in refused.value.message
    assert held(centre.path) == 3


async def test_an_altered_row_refuses_its_whole_batch(tmp_path: Path, centre: CentralLedger) -> None:
    rows = await calls_at(tmp_path / "osaka.db", 5)
    altered = [*rows[:4], rows[4]._replace(api_calls=0)]  # the hash still the original's
    with pytest.raises(Conflict) as refused:
        centre.ingest(OSAKA, "osaka", altered)
    details = refused.value.details
    assert (details["site"], details["seq"], details["sent_hash"]) == (OSAKA, 5, rows[4].hash)
    assert details["held_hash"] == entry_hash(rows[3].hash, altered[4].hashed)
    assert "altered" in refused.value.message
    assert centre.acked(OSAKA) == 0 and held(centre.path) == 0  # rows 1..4 were good: none stored


async def test_malformed_rows_are_validation_errors(tmp_path: Path, centre: CentralLedger) -> None:
    rows = await calls_at(tmp_path / "osaka.db", 3)
    bad: list[list[Any]] = [
        [*rows[0][:-1]],  # a column short
        [True, *rows[0][1:]],  # a bool for the seq
        list(rows[0]._replace(kind="gift")),
        list(rows[0]._replace(compute_ms=float("nan"))),
        list(rows[0]._replace(units='{"audio_s": "long"}')),
        list(rows[0]._replace(units="[" * 4000)),
        list(rows[0]._replace(credits="lots")),
        list(rows[0]._replace(tenant_id="x" * 1000)),
    ]
    for row in bad:
        with pytest.raises(ValidationError):
            centre.ingest(OSAKA, "osaka", [row])
    with pytest.raises(ValidationError):  # rows of a batch are consecutive
        centre.ingest(OSAKA, "osaka", [rows[0], rows[2]])
    assert "consecutive" in centre.sites()[0].last_error  # recorded for sync status
    with pytest.raises(ValidationError):
        centre.ingest(OSAKA, "osaka", [])
    with pytest.raises(ValidationError):
        centre.ingest("", "osaka", rows)
    assert held(centre.path) == 0 and centre.acked(OSAKA) == 0


# -- restart ------------------------------------------------------------------------------------


async def test_a_restarted_centre_keeps_its_acknowledgements(tmp_path: Path, clock: Clock) -> None:
    rows = await calls_at(tmp_path / "osaka.db", 8)
    path = tmp_path / CENTRAL_FILE
    with CentralLedger(path, clock=clock) as first:
        assert first.ingest(OSAKA, "osaka", rows[:5]) == 5
    with CentralLedger(path, clock=clock) as second:
        assert second.acked(OSAKA) == 5
        assert second.ingest(OSAKA, "osaka", rows[3:]) == 8
    reader = CentralReader(path, clock=clock)
    assert reader.acked(OSAKA) == 8 and reader.verify()["ok"]
    with pytest.raises(NotFound):
        CentralReader(tmp_path / "nowhere.db")


# -- billing ------------------------------------------------------------------------------------


async def test_totals_per_site_and_across_sites(tmp_path: Path, centre: CentralLedger) -> None:
    osaka = await site_ledger(tmp_path / "osaka.db", [
        call(at(10), units={"audio_s": 2.5}), call(at(11), units={"audio_s": 1.5}, credits=Decimal("-0.5")),
        call(at(12), tenant_id="someone-else")])
    kobe = await site_ledger(tmp_path / "kobe.db", [call(at(13), units={"images": 1.0}, compute_ms=7.5)])
    centre.ingest(OSAKA, "osaka", osaka)
    centre.ingest(KOBE, "kobe", kobe)
    totals = centre.totals(TENANT, "2026-03")
    assert list(totals) == sorted([OSAKA, KOBE])
    assert (totals[OSAKA].events, totals[OSAKA].api_calls, totals[OSAKA].compute_ms) == (2, 2, 25.0)
    assert totals[OSAKA].units == {"audio_s": 4.0} and totals[OSAKA].credits_debited == Decimal("0.5")
    assert (totals[OSAKA].first_seq, totals[OSAKA].last_seq) == (1, 2)
    assert totals[KOBE].units == {"images": 1.0} and totals[KOBE].bytes_out == 20
    both = combine_totals(TENANT, totals.values())
    assert (both.events, both.api_calls, both.compute_ms, both.units) == (3, 3, 32.5, {"audio_s": 4.0, "images": 1.0})
    assert centre.totals(TENANT, "2026") == totals
    assert centre.totals(TENANT, "2026-04") == {}
    with pytest.raises(ValidationError):
        centre.totals(TENANT, "March")


async def test_a_late_event_counts_in_its_month_within_grace_and_is_an_adjustment_after(
        tmp_path: Path, clock: Clock) -> None:
    rows = await site_ledger(tmp_path / "osaka.db", [call(at(30, hour=9)), call(at(31, hour=23))])
    with CentralLedger(tmp_path / CENTRAL_FILE, grace_days=5, clock=clock) as centre:
        clock.now = at(4, month=4)  # 4 days after March ended: March's draft invoice reopens
        centre.ingest(OSAKA, "osaka", rows[:1])
        clock.now = at(7, month=4)  # past the grace period: April's adjustment
        centre.ingest(OSAKA, "osaka", rows[1:])
        assert centre.totals(TENANT, "2026-03")[OSAKA].events == 1
        assert centre.totals(TENANT, "2026-04")[OSAKA].events == 1
    with sqlite3.connect(tmp_path / CENTRAL_FILE) as conn:
        assert conn.execute("SELECT seq, billing_period, adjusted_from FROM events ORDER BY seq").fetchall() == [
            (1, "2026-03", None), (2, "2026-04", "2026-03")]


# -- settlement ---------------------------------------------------------------------------------


def forwarded(serving: str, trace: str, units: dict[str, float]) -> UsageEvent:
    """The origin's record of a call a peer served: billed here, run there."""
    return call(at(10), module=f"peer:{serving}/echo", trace_id=trace, units=units)


def served(origin: str, trace: str, units: dict[str, float]) -> UsageEvent:
    """The serving site's record of the same call."""
    return call(at(10), kind="served", plan="peer", subject=f"node:{origin}", trace_id=trace, units=units)


async def test_settlement_pairs_sites_and_checks_both_sides_agree(tmp_path: Path, centre: CentralLedger) -> None:
    osaka = await site_ledger(tmp_path / "osaka.db", [
        forwarded(KOBE, "t1", {"audio_s": 1.0}), forwarded(KOBE, "t2", {"audio_s": 2.0}), call(at(10)),
        served(KOBE, "t9", {})])
    kobe = await site_ledger(tmp_path / "kobe.db", [
        served(OSAKA, "t1", {"audio_s": 1.0}), served(OSAKA, "t2", {"audio_s": 2.0}),
        forwarded(OSAKA, "t8", {})])
    centre.ingest(OSAKA, "osaka", osaka)
    centre.ingest(KOBE, "kobe", kobe)
    pairs = {(p["serving_site"], p["origin_site"]): p for p in centre.settlement("2026-03")}
    kobe_for_osaka = pairs[(KOBE, OSAKA)]
    assert kobe_for_osaka["serving_name"] == "kobe" and kobe_for_osaka["origin_name"] == "osaka"
    assert kobe_for_osaka["served"] == kobe_for_osaka["billed"] == {
        "events": 2, "calls": 2, "compute_ms": 25.0, "units": {"audio_s": 3.0}}
    assert kobe_for_osaka["balanced"] and kobe_for_osaka["unmatched_trace_ids"] == []
    # Osaka served t9 for Kobe but Kobe billed t8: same counts, different calls
    osaka_for_kobe = pairs[(OSAKA, KOBE)]
    assert osaka_for_kobe["served"]["calls"] == osaka_for_kobe["billed"]["calls"] == 1
    assert not osaka_for_kobe["balanced"]
    assert sorted(osaka_for_kobe["unmatched_trace_ids"]) == ["t8", "t9"]


async def test_settlement_is_unbalanced_when_a_side_is_missing(tmp_path: Path, centre: CentralLedger) -> None:
    osaka = await site_ledger(tmp_path / "osaka.db", [forwarded(KOBE, "t1", {}), forwarded(KOBE, "t2", {})])
    kobe = await site_ledger(tmp_path / "kobe.db", [served(OSAKA, "t1", {})])
    centre.ingest(OSAKA, "osaka", osaka)
    centre.ingest(KOBE, "kobe", kobe)
    [pair] = centre.settlement("2026-03")
    assert (pair["billed"]["calls"], pair["served"]["calls"], pair["balanced"]) == (2, 1, False)
    assert pair["unmatched_trace_ids"] == ["t2"]


# -- export and verification --------------------------------------------------------------------


def _uri_reference(value: object) -> bool:
    # RFC 3986: only unreserved, reserved and percent-encoded characters
    return isinstance(value, str) and re.fullmatch(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*",
                                                   value) is not None


def _date_time(value: object) -> bool:
    # RFC 3339 date-time, checked strictly (jsonschema ships no checker for it without extras)
    pattern = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})"
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        return False
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


async def test_the_export_is_valid_cloudevents(tmp_path: Path, centre: CentralLedger) -> None:
    rows = await site_ledger(tmp_path / "osaka.db", [call(at(10), units={"audio_s": 2.5}, trace_id="tr-1"),
                                                     call(at(11), credits=Decimal("-0.05"))])
    centre.ingest(OSAKA, "osaka", rows)
    kobe = await calls_at(tmp_path / "kobe.db", 1)
    centre.ingest(KOBE, "kobe", kobe)
    page = centre.rows(0, 2) + centre.rows(2, 10)
    assert [(site, row.seq) for site, row in page] == [(OSAKA, 1), (OSAKA, 2), (KOBE, 1)]
    events = json.loads(json.dumps(cloudevents(page)))  # a JSON batch as written to a file
    schema = json.loads(SCHEMA_FILE.read_text())
    checker = jsonschema.FormatChecker()
    checker.checks("uri-reference")(_uri_reference)
    checker.checks("date-time")(_date_time)
    for event in events:
        jsonschema.validate(event, schema, format_checker=checker)
    first = events[0]
    assert (first["specversion"], first["id"], first["source"], first["type"], first["subject"]) == (
        "1.0", rows[0].event_id, OSAKA, CLOUDEVENT_TYPE, TENANT)
    assert first["time"] == datetime.fromtimestamp(at(10), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert first["datacontenttype"] == "application/json"
    assert first["data"]["units"] == {"audio_s": 2.5} and first["data"]["trace_id"] == "tr-1"
    assert first["data"]["hash"] == rows[0].hash and first["data"]["prev_hash"] == GENESIS
    assert events[1]["data"]["credits"] == "-0.05"
    assert len({(e["source"], e["id"]) for e in events}) == 3  # what a consumer deduplicates by
    with pytest.raises(jsonschema.ValidationError):  # the check has teeth
        jsonschema.validate({**first, "source": "not a uri"}, schema, format_checker=checker)


async def test_verify_finds_a_row_altered_at_the_centre(tmp_path: Path, centre: CentralLedger) -> None:
    rows = await calls_at(tmp_path / "osaka.db", 4)
    centre.ingest(OSAKA, "osaka", rows)
    conn = sqlite3.connect(centre.path)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET api_calls = 0 WHERE site = ? AND seq = 3", (OSAKA,))
    conn.commit()
    conn.close()
    report = centre.verify()
    assert not report["ok"] and report["sites"][OSAKA]["first_bad_seq"] == 3
    assert report["sites"][OSAKA]["rows"] == 2


async def test_the_site_reader_pages_a_ledger_read_only(tmp_path: Path) -> None:
    path = tmp_path / "osaka.db"
    assert rows_after(path, 0, 10) == [] and ledger_head(path) == (0, 0)  # no ledger yet: nothing to send
    rows = await calls_at(path, 7)
    assert [r.seq for r in rows_after(path, 3, 2)] == [4, 5]
    assert rows_after(path, 7, 10) == []
    with pytest.raises(ValueError):
        rows_after(path, 0, 0)
    assert ledger_head(path) == (7, rows[-1].ts_us)
