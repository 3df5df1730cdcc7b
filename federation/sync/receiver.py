"""The central node's side of the sync: open a site's batch, check who sent it, ingest it, acknowledge.

``SyncReceiver.receive`` is the one entry for both transports: a batch that came over a fleet link
(``sender`` is the node id the link authenticated) and one POSTed to the HTTP door (``sender`` is
None; the seal and the certificate inside the batch are the whole proof).  The rows go to the
centre's ledger through ``ingest`` (``daemon.metering.central.CentralLedger.ingest`` in a writer
thread, wired by ``runtime/hub.py``), which commits durably before it returns the seq it holds;
only then does the answer leave.

Errors are the contract's: ``PERMISSION_DENIED`` for a seal, a sender or a certificate that does
not hold (a forgery, a replay, another fleet), ``VALIDATION_ERROR`` for a malformed batch, and
whatever ``ingest`` raises (``CONFLICT`` for a differing row, a gap or a broken chain) as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from daemon.core.errors import HubError, InternalError, PermissionDenied
from daemon.core.i18n import t
from federation.fleet import FleetTrust, NodeCertificate
from federation.identity import IdentityError, public_key_from_peer_id
from federation.sealing import ReplayGuard
from federation.sync.batch import MAX_BATCH_BYTES, SEQ_INDEX, open_batch

log = logging.getLogger("democratic_ai.federation.sync")

#: the centre's ledger: (site node id, site name, rows in column order) -> highest contiguous seq held
Ingest = Callable[[str, str, list[list[Any]]], Awaitable[int]]


class SyncReceiver:
    """Checks and ingests the batches sites send; one per central node, on the hub's loop."""

    def __init__(
        self,
        *,
        trust: FleetTrust,
        guard: ReplayGuard,
        ingest: Ingest,
        on_refused: Callable[[str, str], None] = lambda site, message: None,
        on_denied: Callable[[str], None] = lambda reason: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``on_refused(site, message)``: ingest refused a trusted site's batch (the alert, the site's last
        error); ``on_denied(reason)``: a batch whose seal or sender did not hold (a metric label only:
        its site is unproven, so nothing is recorded against any site).
        """
        self.trust = trust
        self.guard = guard
        self._ingest = ingest
        self._on_refused = on_refused
        self._on_denied = on_denied
        self._clock = clock
        self._opening = asyncio.Lock()

    async def receive(self, data: bytes, *, sender: str | None = None,
                      cert: NodeCertificate | None = None) -> int:
        """Check and ingest one sealed batch; the highest seq of it the centre now holds.

        ``sender``: the node id a fleet link authenticated (the batch must be sealed by it);
        None over HTTPS.  ``cert``: that link's hello certificate, used when the batch carries
        none.  The answer is at most the batch's last seq: the centre never acknowledges for a
        site rows that site did not send in this batch, so an ack above what was sent is always
        a lie the outbox can refuse.
        """
        try:
            expect = public_key_from_peer_id(sender) if sender is not None else None
        except IdentityError as exc:
            self._on_denied("malformed")
            raise PermissionDenied(t("errors.receiver.sender_not_node_id", exc=exc), {"reason": "malformed"}) from None
        try:
            # signature, decoding and row checks cost tens of ms for a full batch, and an unproven sender
            # may send one: off the loop, one batch at a time (the guard is not shared across threads)
            async with self._opening:
                batch = await asyncio.to_thread(open_batch, data, trust=self.trust, guard=self.guard,
                                                now=self._clock(), expect_sender=expect, cert=cert,
                                                max_bytes=MAX_BATCH_BYTES)
        except PermissionDenied as exc:
            self._on_denied(str(exc.details.get("reason", "denied")))
            raise
        if sender is not None and batch.site != sender:  # open_batch checked the key already; the ids, explicitly
            self._on_denied("wrong_sender")
            raise PermissionDenied(t("errors.receiver.batch_sealed_another_node"), {"reason": "wrong_sender"})
        try:
            held = await self._ingest(batch.site, batch.site_name, batch.rows)
        except HubError as exc:
            log.warning("sync batch refused", extra={"site": batch.site, "first": batch.first, "last": batch.last,
                                                     "code": exc.code, "error": exc.message})
            self._on_refused(batch.site, exc.message)
            raise
        if type(held) is not int:
            raise InternalError(t("errors.receiver.centre_ledger_answered_not", type_name=type(held).__name__))
        return min(held, batch.rows[-1][SEQ_INDEX])
