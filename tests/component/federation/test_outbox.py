"""A site's sync outbox against a flaky centre: the ack is recorded only once given, and the ledger is never touched.

The site's ledger is a real one (the real writer fills it; the outbox reads it with the real
read-only reader).  The centre is a real ``SyncReceiver`` in memory in front of a small fake of
the centre's ledger, and a ``Relay`` between them fails, hangs, loses answers, duplicates
batches or lies, as each test scripts it.  No test waits on the wall clock: every wait goes
through an injected ``sleep`` that only records how long it was asked to be.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.core.errors import Conflict, HubError, RateLimited, Unavailable
from daemon.metering.ledger.chain import verify
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.reader import ledger_head, rows_after
from daemon.metering.ledger.writer import UsageLedger
from federation.fleet import FleetKey, FleetTrust
from federation.identity import NodeIdentity
from federation.sealing import ReplayGuard
from federation.sync.batch import SEQ_INDEX
from federation.sync.outbox import OUTBOX_FILE, AckRefused, SyncOutbox, SyncState, SyncStateError
from federation.sync.receiver import SyncReceiver

NOW = 1_800_000_000.0
CENTRAL = "12D3KooWCentral"


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Centre:
    """The central node: a real receiver in front of a fake ledger that keeps what each site sent, once."""

    def __init__(self, trust: FleetTrust, clock: Clock) -> None:
        self.rows: dict[str, dict[int, list[Any]]] = {}
        self.ingests = 0
        #: store only this many rows of the next batch (a centre that acks part of it)
        self.take: int | None = None
        self.receiver = SyncReceiver(trust=trust, guard=ReplayGuard(), ingest=self.ingest, clock=clock)

    def held(self, site: str) -> int:
        seqs = self.rows.get(site, {})
        return max(seqs, default=0)

    async def ingest(self, site: str, name: str, rows: list[list[Any]]) -> int:
        self.ingests += 1
        held = self.rows.setdefault(site, {})
        if self.take is not None:
            rows, self.take = rows[:self.take], None
        for row in rows:
            seq = row[SEQ_INDEX]
            if seq in held:
                if held[seq] != row:
                    raise Conflict(f"row {seq} differs from the row held")
                continue  # identical: skipped, acked
            if seq != max(held, default=0) + 1:  # as the central ledger words it: what it holds, to resume from
                raise Conflict(f"gap before seq {seq}", {"reason": "gap", "acked": max(held, default=0)})
            held[seq] = row
        return max(held, default=0)


Fault = Callable[[bytes], Awaitable[int]]


class Relay:
    """The link between the outbox and the centre; ``faults`` are played, one per send, before plain delivery."""

    def __init__(self, centre: Centre) -> None:
        self.centre = centre
        self.faults: list[Fault] = []
        self.sent: list[bytes] = []
        self.hung = 0

    async def send(self, data: bytes) -> int:
        self.sent.append(data)
        if self.faults:
            return await self.faults.pop(0)(data)
        return await self.deliver(data)

    async def deliver(self, data: bytes) -> int:
        return await self.centre.receiver.receive(data)

    # -- the faults ---------------------------------------------------------------------------
    async def down(self, data: bytes) -> int:
        raise Unavailable("connection refused")

    async def hang(self, data: bytes) -> int:
        self.hung += 1
        await asyncio.Event().wait()  # the centre never answers
        raise AssertionError("unreachable")

    async def answer_lost(self, data: bytes) -> int:
        await self.deliver(data)  # stored at the centre ...
        raise Unavailable("the connection dropped before the answer")  # ... but the site never hears it

    async def duplicated(self, data: bytes) -> int:
        acked = await self.deliver(data)
        with pytest.raises(HubError) as replay:  # the same bytes again: the guard stops them, nothing changes
            await self.deliver(data)
        assert replay.value.details == {"reason": "replay"}
        return acked

    def lies(self, by: int) -> Fault:
        async def fault(data: bytes) -> int:
            return await self.deliver(data) + by
        return fault

    def says(self, acked: int) -> Fault:
        async def fault(data: bytes) -> int:
            return acked
        return fault


class Site:
    """A site: its key and certificate, a real ledger on disk, and the state dir its outbox keeps."""

    def __init__(self, tmp: Path) -> None:
        self.fleet = FleetKey.generate("acme")
        self.identity = NodeIdentity.generate()
        self.cert = self.fleet.sign_node(self.identity.public_key, "paris", now=NOW)
        centre_identity = NodeIdentity.generate()
        self.trust = FleetTrust(own=self.fleet.sign_node(centre_identity.public_key, "billing", "central", now=NOW))
        self.ledger = tmp / "ledger.db"
        self.state_dir = tmp / "state"
        self.clock = Clock()
        self.centre = Centre(self.trust, self.clock)
        self.relay = Relay(self.centre)
        self.sleeps: list[float] = []
        self.reads: list[tuple[int, int]] = []

    async def use(self, calls: int) -> None:
        """``calls`` billed calls, written by the real ledger writer (one second apart)."""
        start = self.clock.now
        async with UsageLedger(self.ledger, clock=self.clock) as ledger:
            for i in range(calls):
                await ledger.append(UsageEvent(tenant_id="t-1", subject=f"user:{i}", action="echo.say",
                                               module="echo", compute_ms=2.0, ts=start + i))
        self.clock.now = start + calls

    def read_rows(self, seq: int, limit: int) -> list[Any]:
        self.reads.append((seq, limit))
        return list(rows_after(self.ledger, seq, limit))

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        await asyncio.sleep(0)

    def outbox(self, *, batch_max: int = 10, central: str = CENTRAL, **kwargs: Any) -> SyncOutbox:
        options: dict[str, Any] = {"rng": lambda: 0.5, "sleep": self.sleep, "send_timeout_s": 0.05, **kwargs}
        return SyncOutbox(identity=self.identity, cert=self.cert, state_dir=self.state_dir, read_rows=self.read_rows,
                          head=lambda: ledger_head(self.ledger), send=self.relay.send, interval_s=5.0,
                          batch_max=batch_max, clock=self.clock, central=central, **options)

    @property
    def held(self) -> int:
        return self.centre.held(self.identity.peer_id)

    def acked_on_disk(self) -> int:
        return int(json.loads((self.state_dir / OUTBOX_FILE).read_text())["acked_seq"])

    def ledger_fingerprint(self) -> str:
        """The ledger's bytes and its journal's (SQLite's -shm index is shared memory that readers keep)."""
        wal = self.ledger.with_name(self.ledger.name + "-wal")
        journal = wal.read_bytes() if wal.exists() else b""
        return hashlib.sha256(self.ledger.read_bytes() + b"|" + journal).hexdigest()


@pytest.fixture
async def site(tmp_path: Path) -> Site:
    made = Site(tmp_path)
    await made.use(25)
    return made


async def drain(outbox: SyncOutbox) -> int:
    """Push until caught up (each fault raises once); how many rounds failed."""
    failures = 0
    for _ in range(100):
        try:
            if not await outbox.push_once():
                return failures
        except HubError:
            failures += 1
    raise AssertionError("the outbox never caught up")


# -- the happy path ------------------------------------------------------------------------------


async def test_the_outbox_pushes_the_whole_ledger_in_batches_and_records_the_ack(site: Site) -> None:
    before = site.ledger_fingerprint()
    outbox = site.outbox(batch_max=10)
    assert await outbox.push_once() is True
    assert site.held == 10 and site.acked_on_disk() == 10
    assert await drain(outbox) == 0
    assert site.held == 25 and site.acked_on_disk() == 25
    assert site.reads == [(0, 10), (10, 10), (20, 10)]
    stored = site.centre.rows[site.identity.peer_id]
    assert [stored[seq] for seq in sorted(stored)] == [list(row) for row in rows_after(site.ledger, 0, 100)]
    assert outbox.status() == {"central": CENTRAL, "head_seq": 25, "acked_seq": 25, "lag_events": 0,
                               "lag_seconds": 0.0, "last_error": None}
    # the ledger is read, never written: same bytes, same chain
    assert site.ledger_fingerprint() == before
    assert verify(site.ledger).ok


async def test_the_ack_file_is_private_and_its_directory_too(site: Site) -> None:
    await drain(site.outbox())
    path = site.state_dir / OUTBOX_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_the_ack_survives_a_restart_and_the_next_outbox_starts_after_it(site: Site) -> None:
    first = site.outbox(batch_max=10)
    await first.push_once()
    await first.push_once()
    del first  # the hub stops (or is killed) here
    await site.use(3)
    site.reads.clear()
    again = site.outbox(batch_max=10)
    assert again.state.acked_seq == 20
    assert await drain(again) == 0
    assert site.reads[0] == (20, 10)
    assert site.held == 28 and site.acked_on_disk() == 28


async def test_a_new_central_node_gets_the_ledger_from_the_start(site: Site) -> None:
    await drain(site.outbox())
    moved = site.outbox(central="12D3KooWAnotherCentre")
    assert (moved.state.acked_seq, moved.state.central) == (0, "12D3KooWAnotherCentre")


async def test_an_unreadable_outbox_file_stops_the_outbox_rather_than_guessing(site: Site) -> None:
    (site.state_dir / "sync").mkdir(parents=True)
    (site.state_dir / OUTBOX_FILE).write_text("{not json")
    with pytest.raises(SyncStateError, match=r"outbox\.json"):
        site.outbox()
    (site.state_dir / OUTBOX_FILE).write_text(json.dumps({"acked_seq": "12"}))
    with pytest.raises(SyncStateError, match="acked_seq"):
        site.outbox()


# -- a flaky centre ---------------------------------------------------------------------------------


async def test_a_centre_that_is_down_leaves_the_ack_where_it_was(site: Site) -> None:
    outbox = site.outbox()
    await outbox.push_once()
    site.relay.faults = [site.relay.down]
    with pytest.raises(Unavailable, match="connection refused"):
        await outbox.push_once()
    assert site.acked_on_disk() == 10 and site.held == 10
    status = outbox.status()
    assert status["last_error"] == "connection refused" and status["lag_events"] == 15
    assert await drain(outbox) == 0
    assert outbox.status()["last_error"] is None and site.held == 25


async def test_a_centre_that_never_answers_times_out_and_the_batch_is_sent_again(site: Site) -> None:
    outbox = site.outbox()
    site.relay.faults = [site.relay.hang]
    with pytest.raises(Unavailable, match="did not answer"):
        await outbox.push_once()
    assert site.relay.hung == 1 and site.held == 0
    assert await drain(outbox) == 0
    assert site.held == 25


async def test_an_answer_lost_after_the_centre_stored_the_batch_is_acked_idempotently_on_resend(site: Site) -> None:
    outbox = site.outbox()
    site.relay.faults = [site.relay.answer_lost]
    with pytest.raises(Unavailable):
        await outbox.push_once()
    assert site.held == 10 and outbox.state.acked_seq == 0  # stored there, not known here
    assert await outbox.push_once() is True  # the same rows, sealed afresh: skipped there, acked
    assert outbox.state.acked_seq == 10 and site.held == 10
    assert site.relay.sent[0] != site.relay.sent[1]  # a new seal (nonce), so it is no replay
    assert await drain(outbox) == 0 and site.held == 25


async def test_a_batch_duplicated_on_the_way_is_stored_once(site: Site) -> None:
    outbox = site.outbox()
    site.relay.faults = [site.relay.duplicated, site.relay.duplicated]
    assert await drain(outbox) == 0
    assert site.held == 25 and len(site.centre.rows[site.identity.peer_id]) == 25


async def test_a_partial_ack_moves_the_ack_to_what_the_centre_stored(site: Site) -> None:
    outbox = site.outbox()
    site.centre.take = 4
    site.clock.now += 100
    assert await outbox.push_once() is True
    assert outbox.state.acked_seq == 4 and site.acked_on_disk() == 4
    # the lag runs from the oldest row not yet acknowledged (seq 5, used 100 s + 20 s before now)
    status = outbox.status()
    assert status["lag_events"] == 21
    assert status["lag_seconds"] == pytest.approx(121.0)
    site.reads.clear()
    assert await drain(outbox) == 0
    assert site.reads[0] == (4, 10) and site.held == 25


async def test_an_ack_beyond_what_was_sent_is_refused_as_a_lie(site: Site) -> None:
    outbox = site.outbox()
    site.relay.faults = [site.relay.lies(by=5)]
    with pytest.raises(AckRefused, match="never given"):
        await outbox.push_once()
    assert site.held == 10  # the centre did store the batch; its answer is what cannot be believed
    assert outbox.state.acked_seq == 0 and site.acked_on_disk() == 0
    assert "never given" in str(outbox.status()["last_error"])
    assert await drain(outbox) == 0 and site.acked_on_disk() == 25


async def test_an_ack_that_goes_back_is_ignored(site: Site) -> None:
    outbox = site.outbox()
    await outbox.push_once()
    await outbox.push_once()
    site.relay.faults = [site.relay.says(3), site.relay.says(20)]
    with pytest.raises(AckRefused, match="below seq 20"):
        await outbox.push_once()
    with pytest.raises(AckRefused, match=r"none of rows 21\.\.25"):  # the same ack twice: nothing new
        await outbox.push_once()
    assert outbox.state.acked_seq == 20 and site.acked_on_disk() == 20


# -- the task --------------------------------------------------------------------------------------


async def run_until(outbox: SyncOutbox, done: Callable[[], bool]) -> None:
    """Run the outbox's task until ``done()``, then cancel it; it must end by that cancellation."""
    task = asyncio.create_task(outbox.run())
    for _ in range(2000):
        if done():
            break
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done()


async def test_the_task_backs_off_exponentially_up_to_a_minute_and_then_catches_up(site: Site) -> None:
    outbox = site.outbox(rng=lambda: 1.0)
    site.relay.faults = [site.relay.down] * 9
    await run_until(outbox, lambda: site.held == 25 and len(site.sleeps) > 9)
    assert site.sleeps[:9] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert site.sleeps[9:] and set(site.sleeps[9:]) == {5.0}  # caught up: one round per interval


async def test_the_backoff_is_jittered_never_under_a_second_and_honours_retry_after(site: Site) -> None:
    outbox = site.outbox(rng=lambda: 0.0)

    async def busy(data: bytes) -> int:
        raise RateLimited("the centre is busy", retry_after=30)

    site.relay.faults = [site.relay.down, site.relay.down, site.relay.down, busy]
    await run_until(outbox, lambda: site.held == 25)
    assert site.sleeps[:4] == [1.0, 1.0, 2.0, 30.0]


async def test_the_task_records_the_last_error_for_sync_status(site: Site) -> None:
    outbox = site.outbox()
    site.relay.faults = [site.relay.down] * 3
    await run_until(outbox, lambda: len(site.sleeps) >= 2)
    on_disk = SyncState.load(site.state_dir / OUTBOX_FILE)
    assert on_disk.last_error == "connection refused" and on_disk.error_at == NOW + 25
    assert on_disk.acked_seq == 0


async def test_wake_ends_the_wait_between_rounds_at_once(site: Site) -> None:
    outbox = site.outbox(sleep=asyncio.sleep)  # a real wait: an hour between rounds
    outbox.interval_s = 3600
    task = asyncio.create_task(outbox.run())
    try:
        for _ in range(2000):
            if site.held == 25:
                break
            await asyncio.sleep(0.001)
        await site.use(2)
        outbox.wake()
        for _ in range(2000):
            if site.held == 27:
                break
            await asyncio.sleep(0.001)
        assert site.held == 27
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_centre_restored_from_an_older_backup_gets_the_rows_it_lost_again(site: Site) -> None:
    outbox = site.outbox(batch_max=10)
    assert await drain(outbox) == 0 and site.held == 25
    site.centre.rows[site.identity.peer_id] = {seq: row for seq, row in
                                               site.centre.rows[site.identity.peer_id].items() if seq <= 12}
    await site.use(5)
    # the centre refuses the gap and says where it stands; the outbox goes back there and sends again
    await drain(outbox)
    assert site.held == 30 and site.acked_on_disk() == 30
    stored = site.centre.rows[site.identity.peer_id]
    assert [stored[seq] for seq in sorted(stored)] == [list(row) for row in rows_after(site.ledger, 0, 100)]
