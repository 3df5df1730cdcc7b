"""A site's usage batch: sealed at the site, opened at the centre only when the seal, the sender and every row hold.

Rows come from the real ledger policy (``chain_rows``); the centre's ledger is a fake ``ingest``.
The clock is whatever ``now`` the test passes: nothing here sleeps or reads the time.
"""

from __future__ import annotations

import typing
from typing import Any

import msgpack
import pytest

from daemon.core.errors import Conflict, HubError, PermissionDenied, ValidationError
from daemon.metering.ledger.chain import GENESIS, chain_rows
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.rows import COLUMNS, LedgerHead, LedgerRow
from federation.fleet import FleetKey, FleetTrust, NodeCertificate
from federation.identity import NodeIdentity
from federation.sealing import ReplayGuard, seal
from federation.sync.batch import (
    BATCH_KIND,
    MAX_BATCH_ROWS,
    ROW_COLUMN_COUNT,
    ROW_COLUMNS,
    TS_US_INDEX,
    Batch,
    check_rows,
    open_batch,
    seal_batch,
)
from federation.sync.receiver import SyncReceiver

NOW = 1_800_000_000.0


class Fleet:
    """One fleet: its key, a central node that trusts it, and two sites with certificates."""

    def __init__(self, name: str = "acme") -> None:
        self.key = FleetKey.generate(name)
        self.centre = NodeIdentity.generate()
        self.centre_cert = self.key.sign_node(self.centre.public_key, "billing", "central", now=NOW)
        self.trust = FleetTrust(own=self.centre_cert)
        self.paris = NodeIdentity.generate()
        self.paris_cert = self.key.sign_node(self.paris.public_key, "paris", now=NOW)
        self.lyon = NodeIdentity.generate()
        self.lyon_cert = self.key.sign_node(self.lyon.public_key, "lyon", now=NOW)


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


def ledger_rows(count: int, *, after: LedgerHead = LedgerHead(0, GENESIS, 0)) -> list[LedgerRow]:
    """``count`` chained entries as the site's ledger writer makes them."""
    events = [UsageEvent(tenant_id="t-1", subject=f"user:{i}", action="echo.say", module="echo", plan="starter",
                         compute_ms=1.5 * i, bytes_in=10, units={"audio_s": 0.5}, trace_id=f"trace-{i}")
              for i in range(count)]
    return chain_rows(events, after, now_us=int(NOW * 1_000_000))


def opened(data: bytes, fleet: Fleet, *, guard: ReplayGuard | None = None, now: float = NOW + 1,
           expect: bytes | None = None, cert: NodeCertificate | None = None) -> Batch:
    return open_batch(data, trust=fleet.trust, guard=guard if guard is not None else ReplayGuard(), now=now,
                      expect_sender=expect, cert=cert)


def refusal(data: bytes, fleet: Fleet, kind: type[HubError] = PermissionDenied, **kwargs: Any) -> HubError:
    with pytest.raises(kind) as refused:
        opened(data, fleet, **kwargs)
    return refused.value


def resealed_body(identity: NodeIdentity, data: bytes, **changes: Any) -> bytes:
    """A batch's body with some fields changed, sealed again by ``identity`` (a site that sends junk, signed)."""
    body = msgpack.unpackb(msgpack.unpackb(data)["b"])
    return seal(identity, BATCH_KIND, {**body, **changes}, NOW)


# -- the columns ---------------------------------------------------------------------------------


def test_the_batch_columns_are_the_ledgers_columns_with_their_types() -> None:
    # federation may not import daemon.metering, so batch.py spells the columns out; they must agree
    hints = typing.get_type_hints(LedgerRow)
    assert [name for name, _ in ROW_COLUMNS] == list(COLUMNS) == list(LedgerRow._fields)
    assert ROW_COLUMN_COUNT == len(COLUMNS) == 18
    assert {name: kind for name, kind in ROW_COLUMNS} == hints
    assert COLUMNS[TS_US_INDEX] == "ts_us"


# -- a batch that holds ----------------------------------------------------------------------------


def test_a_sealed_batch_opens_to_the_site_its_certified_name_and_its_rows(fleet: Fleet) -> None:
    rows = ledger_rows(3)
    batch = opened(seal_batch(fleet.paris, rows, NOW, cert=fleet.paris_cert), fleet)
    assert (batch.site, batch.site_name) == (fleet.paris.peer_id, "paris")
    assert batch.rows == [list(row) for row in rows]  # every column as the ledger stored it, float stays float
    assert [LedgerRow._make(row) for row in batch.rows] == rows
    assert (batch.first, batch.last, batch.sent_at) == (1, 3, NOW)


def test_a_batch_may_start_anywhere_in_the_chain(fleet: Fleet) -> None:
    first = ledger_rows(5)
    tail = ledger_rows(2, after=LedgerHead(5, first[-1].hash, first[-1].ts_us))
    batch = opened(seal_batch(fleet.paris, tail, NOW, cert=fleet.paris_cert), fleet)
    assert (batch.first, batch.last) == (6, 7)


def test_a_resealed_resend_is_accepted_but_a_byte_identical_replay_is_refused(fleet: Fleet) -> None:
    guard = ReplayGuard()
    rows = ledger_rows(2)
    sent = seal_batch(fleet.paris, rows, NOW, cert=fleet.paris_cert)
    opened(sent, fleet, guard=guard)
    # the outbox seals every send afresh: a re-send after a lost ack is a new message (ingest is idempotent)
    again = seal_batch(fleet.paris, rows, NOW, cert=fleet.paris_cert)
    assert opened(again, fleet, guard=guard).rows == opened(sent, fleet).rows
    # a relay that plays the same bytes again is stopped by the guard (harmless either way)
    assert refusal(sent, fleet, guard=guard).details == {"reason": "replay"}


def test_a_trusted_key_without_a_certificate_is_admitted_with_no_site_name(fleet: Fleet) -> None:
    lab = NodeIdentity.generate()
    trust = FleetTrust(own=fleet.centre_cert, trusted_keys=frozenset({lab.public_key}))
    batch = open_batch(seal_batch(lab, ledger_rows(1), NOW), trust=trust, guard=ReplayGuard(), now=NOW)
    assert (batch.site, batch.site_name) == (lab.peer_id, "")


def test_the_links_certificate_serves_when_the_batch_carries_none(fleet: Fleet) -> None:
    data = seal_batch(fleet.paris, ledger_rows(1), NOW)
    assert refusal(data, fleet).details == {"reason": "no_certificate"}
    assert opened(data, fleet, cert=fleet.paris_cert).site_name == "paris"


# -- seals and senders that do not hold -------------------------------------------------------------


def test_a_tampered_batch_is_refused_as_a_forgery(fleet: Fleet) -> None:
    data = seal_batch(fleet.paris, ledger_rows(2), NOW, cert=fleet.paris_cert)
    outer = msgpack.unpackb(data)
    body = msgpack.unpackb(outer["b"])
    body["rows"][1][8] = 0  # api_calls: one call fewer, signature kept
    forged = msgpack.packb({**outer, "b": msgpack.packb(body)}, use_bin_type=True)
    assert refusal(forged, fleet).details == {"reason": "bad_signature"}


def test_a_batch_of_another_fleet_is_refused(fleet: Fleet) -> None:
    other = Fleet("rival")
    data = seal_batch(other.paris, ledger_rows(1), NOW, cert=other.paris_cert)
    assert refusal(data, fleet).details == {"reason": "other_fleet"}


def test_a_certificate_copied_from_another_site_is_worthless(fleet: Fleet) -> None:
    # lyon seals with paris's certificate: the certificate is for paris's key, not for the sealing key
    data = seal_batch(fleet.lyon, ledger_rows(1), NOW, cert=fleet.paris_cert)
    assert refusal(data, fleet).details == {"reason": "key_mismatch"}


def test_a_batch_that_names_another_site_than_its_sealer_is_refused(fleet: Fleet) -> None:
    data = seal_batch(fleet.lyon, ledger_rows(1), NOW, cert=fleet.lyon_cert)
    claims_paris = resealed_body(fleet.lyon, data, site=fleet.paris.peer_id)
    assert refusal(claims_paris, fleet).details == {"reason": "wrong_site"}


def test_a_batch_from_another_key_than_the_links_is_refused(fleet: Fleet) -> None:
    data = seal_batch(fleet.lyon, ledger_rows(1), NOW, cert=fleet.lyon_cert)
    assert refusal(data, fleet, expect=fleet.paris.public_key).details == {"reason": "wrong_sender"}


def test_a_stale_batch_is_refused(fleet: Fleet) -> None:
    data = seal_batch(fleet.paris, ledger_rows(1), NOW, cert=fleet.paris_cert)
    assert refusal(data, fleet, now=NOW + 3600).details == {"reason": "stale"}


def test_a_strangers_batches_leave_nothing_in_the_replay_guard(fleet: Fleet) -> None:
    guard = ReplayGuard()
    stranger = NodeIdentity.generate()
    for _ in range(3):
        refusal(seal_batch(stranger, ledger_rows(1), NOW), fleet, guard=guard)
    assert len(guard) == 0


def test_a_malformed_certificate_is_refused_as_untrusted(fleet: Fleet) -> None:
    data = resealed_body(fleet.paris, seal_batch(fleet.paris, ledger_rows(1), NOW), cert=b"\x81\xa1v\x09")
    assert refusal(data, fleet).details == {"reason": "malformed"}


# -- shapes -----------------------------------------------------------------------------------------


def test_other_sealed_messages_are_not_batches(fleet: Fleet) -> None:
    advert = seal(fleet.paris, "advert", {"seq": 1}, NOW)
    assert refusal(advert, fleet, ValidationError).details == {"field": "kind"}


def good_rows() -> list[list[Any]]:
    return [list(row) for row in ledger_rows(3)]


def changed(index: int, column: str, value: Any) -> list[list[Any]]:
    rows = good_rows()
    rows[index][COLUMNS.index(column)] = value
    return rows


@pytest.mark.parametrize(("rows", "expected"), [
    ([], {"field": "rows", "count": 0}),
    ([good_rows()[0][:17]], {"field": "rows", "row": 0}),
    ([[*good_rows()[0], "extra"]], {"field": "rows", "row": 0}),
    (changed(1, "api_calls", True), {"field": "rows", "row": 1, "column": "api_calls"}),
    (changed(1, "compute_ms", 3), {"field": "rows", "row": 1, "column": "compute_ms"}),
    (changed(1, "compute_ms", float("nan")), {"field": "rows", "row": 1, "column": "compute_ms"}),
    (changed(2, "hash", "ab" * 31), {"field": "rows", "row": 2, "column": "hash"}),
    (changed(2, "prev_hash", "Z" * 64), {"field": "rows", "row": 2, "column": "prev_hash"}),
    (changed(0, "seq", 0), {"field": "rows", "row": 0, "column": "seq"}),
    (changed(0, "ts_us", 1 << 63), {"field": "rows", "row": 0, "column": "ts_us"}),
    (changed(0, "units", None), {"field": "rows", "row": 0, "column": "units"}),
    (changed(0, "trace_id", "x" * ((64 << 10) + 1)), {"field": "rows", "row": 0, "column": "trace_id"}),
    (changed(2, "seq", 4), {"field": "rows", "row": 2, "seq": 4}),
    (changed(1, "seq", 1), {"field": "rows", "row": 1, "seq": 1}),
    ("rows", {"field": "rows"}),
])
def test_rows_of_the_wrong_shape_are_refused(fleet: Fleet, rows: Any, expected: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as refused:
        check_rows(rows)
    assert refused.value.details == expected
    signed_junk = resealed_body(fleet.paris, seal_batch(fleet.paris, ledger_rows(3), NOW, cert=fleet.paris_cert),
                                rows=rows)
    assert refusal(signed_junk, fleet, ValidationError).details == expected


def test_a_site_never_seals_what_the_centre_would_refuse(fleet: Fleet) -> None:
    with pytest.raises(ValidationError):
        seal_batch(fleet.paris, changed(1, "seq", 7), NOW, cert=fleet.paris_cert)
    too_many = [LedgerRow._make(row) for row in ledger_rows(1)] * (MAX_BATCH_ROWS + 1)
    with pytest.raises(ValidationError, match="1 to 5000 rows"):
        seal_batch(fleet.paris, too_many, NOW)


def test_a_body_with_missing_or_lying_fields_is_refused(fleet: Fleet) -> None:
    data = seal_batch(fleet.paris, ledger_rows(3), NOW, cert=fleet.paris_cert)
    body = msgpack.unpackb(msgpack.unpackb(data)["b"])
    no_first = {k: v for k, v in body.items() if k != "first"}
    assert refusal(seal(fleet.paris, BATCH_KIND, no_first, NOW), fleet, ValidationError).details == {"field": "body"}
    assert refusal(resealed_body(fleet.paris, data, v=2), fleet, ValidationError).details == {"field": "body"}
    assert refusal(resealed_body(fleet.paris, data, last=9), fleet, ValidationError).details == {"field": "first"}
    assert refusal(resealed_body(fleet.paris, data, cert="text"), fleet, ValidationError).details == {"field": "cert"}


# -- the receiver -----------------------------------------------------------------------------------


class FakeCentre:
    """The centre's ledger as ``ingest`` sees it: what each site sent, and what it answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[list[Any]]]] = []
        self.held = 0
        self.refuse: HubError | None = None
        self.refused: list[tuple[str, str]] = []
        self.denied: list[str] = []

    async def ingest(self, site: str, name: str, rows: list[list[Any]]) -> int:
        if self.refuse is not None:
            raise self.refuse
        self.calls.append((site, name, rows))
        self.held = max(self.held, rows[-1][0])
        return self.held

    def receiver(self, fleet: Fleet) -> SyncReceiver:
        return SyncReceiver(trust=fleet.trust, guard=ReplayGuard(), ingest=self.ingest,
                            on_refused=lambda site, message: self.refused.append((site, message)),
                            on_denied=self.denied.append, clock=lambda: NOW)


async def test_the_receiver_ingests_a_trusted_batch_and_answers_the_ack(fleet: Fleet) -> None:
    centre = FakeCentre()
    rows = ledger_rows(4)
    acked = await centre.receiver(fleet).receive(seal_batch(fleet.paris, rows, NOW, cert=fleet.paris_cert),
                                                 sender=fleet.paris.peer_id)
    assert acked == 4
    assert centre.calls == [(fleet.paris.peer_id, "paris", [list(row) for row in rows])]


async def test_the_receiver_never_acks_beyond_the_batch_it_was_given(fleet: Fleet) -> None:
    # the centre holds more than this (old, re-sent) batch: the answer says only what the batch covered
    centre = FakeCentre()
    centre.held = 50
    acked = await centre.receiver(fleet).receive(seal_batch(fleet.paris, ledger_rows(3), NOW, cert=fleet.paris_cert))
    assert acked == 3


async def test_the_receiver_refuses_a_batch_sealed_by_another_node_than_the_link(fleet: Fleet) -> None:
    centre = FakeCentre()
    data = seal_batch(fleet.lyon, ledger_rows(1), NOW, cert=fleet.lyon_cert)
    with pytest.raises(PermissionDenied):
        await centre.receiver(fleet).receive(data, sender=fleet.paris.peer_id)
    with pytest.raises(PermissionDenied):
        await centre.receiver(fleet).receive(data, sender="not-a-node-id")
    assert centre.calls == [] and centre.refused == []
    assert centre.denied == ["wrong_sender", "malformed"]


async def test_a_forged_batch_is_counted_but_recorded_against_no_site(fleet: Fleet) -> None:
    centre = FakeCentre()
    stranger = NodeIdentity.generate()
    with pytest.raises(PermissionDenied):
        await centre.receiver(fleet).receive(seal_batch(stranger, ledger_rows(1), NOW))
    assert centre.denied == ["no_certificate"] and centre.refused == [] and centre.calls == []


async def test_the_centres_refusal_passes_through_and_is_reported(fleet: Fleet) -> None:
    centre = FakeCentre()
    centre.refuse = Conflict("row 2 differs from the row held", {"seq": 2})
    with pytest.raises(Conflict) as refused:
        await centre.receiver(fleet).receive(seal_batch(fleet.paris, ledger_rows(2), NOW, cert=fleet.paris_cert))
    assert refused.value.code == "CONFLICT" and refused.value.details == {"seq": 2}
    assert centre.refused == [(fleet.paris.peer_id, "row 2 differs from the row held")]

