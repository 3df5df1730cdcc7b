"""The usage gate of calls fleet peers forward here: bounded per peer, recorded as served-for-origin.

The origin hub authenticated the caller and admitted the call against the caller's own rate
limits and credits; its ledger bills the caller.  This hub only runs the call, so it checks no
plan and debits nothing.  What it does bound is how many calls each origin may have running
here at once (a peer cannot fill this hub's queues), and it records every call it ran in its
own ledger as kind ``served``: tenant and origin node, action, module, measurements and no
credits, the facts settlement between sites is computed from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from daemon.core.envelope import Envelope, Receipt
from daemon.core.errors import ModuleError, Unavailable, ValidationError
from daemon.core.i18n import t
from daemon.core.ports import Admission
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.writer import Ledger

#: calls one origin node may have running here at once, by default
MAX_IN_FLIGHT_PER_PEER = 64


@dataclass(slots=True)
class _PeerTicket:
    origin: str
    open: bool = True


class ServedForPeers:
    """``UsageGate`` for forwarded calls: a per-origin bound before, a ``served`` ledger entry after."""

    def __init__(self, ledger: Ledger, *, max_in_flight_per_peer: int = MAX_IN_FLIGHT_PER_PEER,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._ledger = ledger
        self._max = max_in_flight_per_peer
        self._wall = wall_clock
        self._in_flight: dict[str, int] = {}

    def in_flight(self, origin: str) -> int:
        """Calls ``origin`` has running here now."""
        return self._in_flight.get(origin, 0)

    async def admit(self, envelope: Envelope) -> Admission:
        """Admit the call unless its origin already has its bound of calls running here."""
        origin = envelope.origin_node
        held = self._in_flight.get(origin, 0)
        if held >= self._max:
            raise Unavailable(t("errors.served.origin_node_already_calls", held=held),
                              retry_after=1)
        self._in_flight[origin] = held + 1
        return Admission(token=_PeerTicket(origin))

    async def record(self, envelope: Envelope, module: str, usage: Mapping[str, float] | None, compute_ms: float,
                     bytes_out: int, admission: Admission) -> Receipt:
        """The call's ``served`` entry, durable before the peer hears the answer."""
        self.release(admission)
        event = UsageEvent(
            tenant_id=envelope.principal.tenant_id, subject=f"node:{envelope.origin_node}", action=envelope.action,
            module=module, plan="peer", kind="served", api_calls=1, compute_ms=float(compute_ms),
            bytes_in=max(0, int(envelope.bytes_in)), bytes_out=int(bytes_out), units=dict(usage or {}),
            ts=self._wall(), trace_id=envelope.trace_id or envelope.id)
        try:
            event.validate()
        except ValidationError as exc:
            raise ModuleError(t("errors.gate.module_reported_impossible_usage", message=exc.message)) from None
        return await self._ledger.append(event, validated=True)

    def release(self, admission: Admission) -> None:
        """The call ended (answered, failed or cancelled): its origin's slot is free again; idempotent."""
        ticket = admission.token
        if isinstance(ticket, _PeerTicket) and ticket.open:
            ticket.open = False
            left = self._in_flight.get(ticket.origin, 0) - 1
            if left > 0:
                self._in_flight[ticket.origin] = left
            else:
                self._in_flight.pop(ticket.origin, None)
