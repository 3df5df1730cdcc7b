"""The hash chain as pure functions: known answers pin the format every ledger file was written in."""

from __future__ import annotations

import hashlib
import json
import random
from decimal import Decimal

import pytest

from daemon.metering.ledger.chain import FIELDS, GENESIS, chain_prepared, chain_rows, entry_hash, prepare
from daemon.metering.ledger.events import KINDS, UsageEvent
from daemon.metering.ledger.rows import LedgerHead

#: one entry's hashed fields, fixed: changing how entries are hashed breaks every existing ledger
VALUES = (1, "00000000-0000-4000-8000-000000000001", "usage", "t1", "key:abc123", "starter", "echo", "echo",
          1, 12.5, 100, 200, '{"audio_s":1.5}', "-0.05", 1_700_000_000_000_000, "trace-1")
HASH_AFTER_GENESIS = "80c7ee2272b5c6ce84048676764790ac11c88c51f673f2001dd5652591bef375"
HASH_AFTER_AB = "2856ac6180e86a7ca51e2f7821acbe106b10322dbcdfa4e852c33c4fcd9c5146"
TOP_UP_HASH = "9429ceb36635a75739bd445a467cff7ca5d10ddca7b9efa991df8786719227aa"


def usage_event() -> UsageEvent:
    return UsageEvent(tenant_id="t1", subject="key:abc123", action="echo", module="echo", plan="starter",
                      compute_ms=12.5, bytes_in=100, bytes_out=200, units={"audio_s": 1.5},
                      credits=Decimal("-0.05"), ts=1_700_000_000.0, trace_id="trace-1",
                      event_id="00000000-0000-4000-8000-000000000001")


def top_up_event(ts: float = 0.0) -> UsageEvent:
    return UsageEvent(tenant_id="t1", subject="admin:ops", action="credits.top_up", kind="top_up", api_calls=0,
                      credits=Decimal("1000"), ts=ts, event_id="00000000-0000-4000-8000-000000000002")


def test_entry_hash_known_answer() -> None:
    assert len(VALUES) == len(FIELDS)
    assert entry_hash(GENESIS, VALUES) == HASH_AFTER_GENESIS
    # the definition spelled out: sha256 over prev_hash then the compact JSON array of the fields
    body = '[1,"00000000-0000-4000-8000-000000000001","usage","t1","key:abc123","starter","echo","echo",' \
           '1,12.5,100,200,"{\\"audio_s\\":1.5}","-0.05",1700000000000000,"trace-1"]'
    assert json.loads(body) == list(VALUES)
    assert hashlib.sha256((GENESIS + body).encode()).hexdigest() == HASH_AFTER_GENESIS


def test_prev_hash_is_part_of_the_hash() -> None:
    # the same fields after another entry hash differently: an entry cannot be moved or re-linked
    assert entry_hash("ab" * 32, VALUES) == HASH_AFTER_AB
    assert HASH_AFTER_AB != HASH_AFTER_GENESIS


def test_chain_rows_known_answer_and_links() -> None:
    rows = chain_rows([usage_event(), top_up_event()], LedgerHead(0, GENESIS, 0), now_us=1_700_000_001_000_000)
    first, second = rows
    assert first.hashed == VALUES
    assert (first.seq, first.prev_hash, first.hash) == (1, GENESIS, HASH_AFTER_GENESIS)
    assert (second.seq, second.prev_hash, second.hash) == (2, HASH_AFTER_GENESIS, TOP_UP_HASH)
    assert (second.kind, second.credits, second.units, second.ts_us) == ("top_up", "1000", "{}", 1_700_000_001_000_000)
    assert all(entry_hash(r.prev_hash, r.hashed) == r.hash for r in rows)


def test_chain_rows_continue_from_the_head() -> None:
    (row,) = chain_rows([usage_event()], LedgerHead(41, "ab" * 32, 0), now_us=0)
    assert (row.seq, row.prev_hash) == (42, "ab" * 32)
    assert row.hash == entry_hash("ab" * 32, row.hashed)


def test_the_injected_clock_stamps_events_without_their_own_time() -> None:
    head = LedgerHead(0, GENESIS, 0)
    (row,) = chain_rows([top_up_event()], head, now_us=1_234_567_890_123_456)
    assert row.ts_us == 1_234_567_890_123_456
    # an event's own ts wins over the clock
    (row,) = chain_rows([top_up_event(ts=1_000.25)], head, now_us=1_234_567_890_123_456)
    assert row.ts_us == 1_000_250_000


def test_a_clock_that_jumps_back_cannot_reorder_the_chain() -> None:
    head = LedgerHead(7, GENESIS, 5_000_000)
    rows = chain_rows([top_up_event(), top_up_event(ts=1.0), top_up_event()], head, now_us=4_000_000)
    assert [r.ts_us for r in rows] == [5_000_000, 5_000_000, 5_000_000]
    later = chain_rows([top_up_event()], LedgerHead(10, rows[-1].hash, rows[-1].ts_us), now_us=6_000_000)
    assert later[0].ts_us == 6_000_000


#: values whose JSON is easy to get subtly wrong: escapes, non-ASCII kept as it is, float forms, big ints
AWKWARD = (2**70, 'quote " backslash \\ slash /', "ctl \x00\x1f\n\t\r\x7f", "é 日本 \u2028\u2029 🙂", "",
           0.1, 1e16, 1e-7, -0.0, 5e-324, 1.7976931348623157e308, 12.5, 3.0, 0, -1, True, None)


def test_the_canonical_encoder_writes_what_json_dumps_writes() -> None:
    from daemon.metering.ledger.chain import _CANONICAL

    for n in range(len(AWKWARD)):
        values = AWKWARD[n:] + AWKWARD[:n]
        assert _CANONICAL(values) == json.dumps(values, ensure_ascii=False, separators=(",", ":"),
                                                allow_nan=False)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            _CANONICAL((1, bad))


def _reference_rows(events: list[UsageEvent], head: LedgerHead, now_us: int) -> list[tuple[object, ...]]:
    """chain_rows as first written (json.dumps, one event at a time): what every existing ledger holds."""
    rows: list[tuple[object, ...]] = []
    seq, prev, last_ts = head
    for ev in events:
        seq += 1
        last_ts = max(last_ts, round(ev.ts * 1_000_000) if ev.ts else now_us)
        units = json.dumps(dict(ev.units), sort_keys=True, separators=(",", ":"), allow_nan=False) if ev.units \
            else "{}"
        values = (seq, ev.event_id, ev.kind, ev.tenant_id, ev.subject, ev.plan, ev.action, ev.module,
                  int(ev.api_calls), float(ev.compute_ms), int(ev.bytes_in), int(ev.bytes_out), units,
                  str(ev.credits) if ev.credits else "0", last_ts, ev.trace_id)
        body = json.dumps(values, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        digest = hashlib.sha256((prev + body).encode()).hexdigest()
        rows.append((*values, prev, digest))
        prev = digest
    return rows


def test_chain_rows_match_the_reference_definition_for_many_events() -> None:
    rng = random.Random(13)
    texts = ["t1", "ü-tenant", 'a"b', "日本", "key:abc", "x\\y", ""]
    events = [UsageEvent(tenant_id=rng.choice(texts[:-1]), subject=rng.choice(texts[:-1]), action=rng.choice(texts),
                         module=rng.choice(texts), plan=rng.choice(texts), kind=rng.choice(KINDS),
                         api_calls=rng.randrange(0, 5), compute_ms=rng.choice([0.0, 0.1, 1e16, rng.random() * 1e4]),
                         bytes_in=rng.randrange(1 << 40), bytes_out=rng.randrange(1 << 20),
                         units=rng.choice([{}, {"audio_s": 1.5}, {"b": 2.0, "a": 1e-7}]),
                         credits=rng.choice([Decimal(0), Decimal("-0.05"), Decimal("1000"), Decimal("0.000"),
                                             Decimal("-1E+2")]),
                         ts=rng.choice([0.0, 1_700_000_000.123456, 1e-7, rng.random() * 2e9]),
                         trace_id=rng.choice(texts))
              for _ in range(500)]
    head = LedgerHead(41, "ab" * 32, 1_700_000_000_000_000)
    assert [tuple(row) for row in chain_rows(events, head, now_us=1_750_000_000_000_000)] == \
        _reference_rows(events, head, 1_750_000_000_000_000)
    assert chain_prepared([prepare(ev) for ev in events], head, 1_750_000_000_000_000) == \
        _reference_rows(events, head, 1_750_000_000_000_000)
