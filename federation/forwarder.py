"""The pipeline's ``Forwarder``: an action no local module serves goes to the best fleet peer.

The pipeline has authenticated the caller and admitted the call against the caller's own rate
limits and credits before it gets here; afterwards it records the answer in this hub's ledger as
served-by-peer.  Here:

- the peers that advertise the action come from the peer table, best first (round-trip time x
  load, round robin on ties), never a node the call already visited;
- the call goes out sealed with this node's key, carrying the origin's on-behalf-of assertion (made
  here when this hub is the origin, passed on unchanged when the call is already hopping), the
  remaining TTL, priority, trace id, hop count and the nodes visited;
- a peer that is unreachable, busy, no longer has the action or does not answer in time is marked
  down with backoff, and the call fails over to the next peer while its TTL lasts; any other error
  of the peer (a refusal, bad input, the module's own failure) is the caller's answer, code intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from daemon.core.decoding import decode_json
from daemon.core.envelope import CapabilityEntry, Envelope, Forwarded, PeerReceipt, ProgressPart, ServingModule
from daemon.core.errors import (
    CapabilityNotFound,
    HubError,
    ModuleError,
    Unavailable,
    ValidationError,
    error_from_body,
)
from daemon.core.i18n import t
from daemon.core.pipeline import each_by
from daemon.core.ports import not_found
from federation import wire
from federation.fleet import NodeCertificate
from federation.identity import NodeIdentity
from federation.links import Links
from federation.peers import PeerTable
from federation.sealing import seal
from federation.serving import ASSERTION, payload_digest
from modules.sdk import SchemaValidator

#: compiled input schemas kept (one per distinct advertised schema), oldest dropped first
MAX_VALIDATORS = 512
#: errors after which the next peer may still serve the call (the peer could not, not "must not")
FAILOVER_CODES = frozenset({Unavailable.code, CapabilityNotFound.code})


class PeerForwarder:
    """Forwards calls to fleet peers over ``Links``, choosing them from the ``PeerTable``."""

    def __init__(self, *, links: Links, table: PeerTable, identity: NodeIdentity, cert: NodeCertificate | None,
                 forward: bool = True, max_hops: int = 3, call_timeout_s: float = 30.0,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.links = links
        self.table = table
        self.identity = identity
        self.node_id = identity.peer_id
        self.cert = cert
        self.forward_enabled = forward
        self.max_hops = max_hops
        self.call_timeout_s = call_timeout_s
        self._clock = clock
        self._monotonic = monotonic
        self._validators: dict[str, SchemaValidator] = {}  # schema hash -> compiled input schema

    # -- the Forwarder port -------------------------------------------------------------------
    def serves(self, envelope: Envelope) -> bool:
        """A peer advertises the action, the call may hop once more and has not been everywhere yet."""
        return (self.forward_enabled and envelope.hop_count < self.max_hops
                and bool(self.table.candidates(envelope.action, self._monotonic(), exclude=self._visited(envelope))))

    def check_input(self, envelope: Envelope) -> None:
        """The payload against the input schema a live advert declares for the action (peers check it too)."""
        spec = self.table.capability(envelope.action, self._monotonic())
        if spec is None:
            return
        validator = self._validators.get(spec.schema_hash)
        if validator is None:
            try:
                validator = SchemaValidator(spec.input_schema)
            except Exception:  # jsonschema's SchemaError: a schema only the peer can judge; it checks itself
                return
            if len(self._validators) >= MAX_VALIDATORS:
                self._validators.pop(next(iter(self._validators)))
            self._validators[spec.schema_hash] = validator
        validator.check_input(envelope.payload, envelope.action)

    async def forward(self, envelope: Envelope) -> Forwarded:
        """The best peer's answer, failing over to the next while the TTL lasts."""
        async with contextlib.aclosing(self._attempts(envelope, stream=False)) as replies:
            async for reply in replies:
                if isinstance(reply, Forwarded):
                    return reply
        raise Unavailable(t("errors.forwarder.peer_ended_call_without"))  # pragma: no cover - _attempts ends on one

    async def forward_stream(self, envelope: Envelope) -> AsyncIterator[ProgressPart | Forwarded]:
        """A streaming call over the hop: the peer's parts as they come, then its answer."""
        async with contextlib.aclosing(self._attempts(envelope, stream=True)) as replies:
            async for reply in replies:
                yield reply

    def capabilities(self) -> list[CapabilityEntry]:
        """The live peers' actions, each with the peers that serve it, best first."""
        now = self._monotonic()
        entries = []
        for action, nodes in sorted(self.table.actions(now).items()):
            spec = self.table.capability(action, now)
            if spec is None or not nodes:
                continue
            entries.append(CapabilityEntry(
                action=action, description=spec.description, input_schema=spec.input_schema,
                output_schema=spec.output_schema or {}, streaming=spec.streaming,
                modules=tuple(ServingModule(node, "peer") for node in nodes), origin=f"peer:{nodes[0]}"))
        return entries

    # -- attempts -----------------------------------------------------------------------------
    async def _attempts(self, envelope: Envelope, *, stream: bool) -> AsyncGenerator[ProgressPart | Forwarded, None]:
        tried: set[str] = set()
        last: HubError = not_found(envelope)
        loop = asyncio.get_running_loop()
        while True:
            candidates = self.table.candidates(envelope.action, self._monotonic(),
                                               exclude=self._visited(envelope) | tried)
            if not candidates:
                raise last
            peer_id = candidates[0]
            tried.add(peer_id)
            remaining = envelope.deadline - loop.time() if envelope.deadline is not None else self.call_timeout_s
            # with another peer to try, this one gets half of what is left, so a silent peer leaves time
            attempt_s = min(self.call_timeout_s, remaining / 2 if len(candidates) > 1 else remaining)
            if attempt_s <= 0:
                raise last
            started = self._monotonic()
            attempt_deadline = loop.time() + attempt_s
            yielded = False
            # the attempt's deadline bounds each wait for the peer; leaving unfinished cancels it there
            replies = each_by(self.links.exchange(peer_id, self._sealed_call(envelope, attempt_s, stream)),
                              attempt_deadline)
            try:
                async with contextlib.aclosing(replies):
                    async for reply in replies:
                        if reply["t"] == wire.PART:
                            yielded = True
                            yield _progress(envelope, reply)
                        elif reply["t"] == wire.RESULT:
                            forwarded = _forwarded(reply)
                            self.table.succeeded(peer_id, max(0.0, self._monotonic() - started
                                                              - forwarded.compute_ms / 1000), self._monotonic())
                            yield forwarded
                            return
                        else:
                            raise error_from_body({"error": reply})
            except TimeoutError:
                last = Unavailable(t("errors.forwarder.peer_did_not_answer", peer_id=peer_id, attempt_s=attempt_s))
            except HubError as exc:
                if exc.code not in FAILOVER_CODES:
                    raise
                last = exc
            self.table.failed(peer_id, self._monotonic())
            if yielded:
                raise last  # part of the stream reached the caller: another peer cannot take it over

    def _sealed_call(self, envelope: Envelope, ttl: float, stream: bool) -> bytes:
        now = self._clock()
        assertion = envelope.assertion or seal(self.identity, ASSERTION, {
            "tenant_id": envelope.principal.tenant_id, "tenant_name": envelope.principal.tenant_name,
            "plan": envelope.principal.plan, "action": envelope.action, "trace_id": envelope.trace_id,
            "payload": payload_digest(envelope.payload),
            "cert": self.cert.to_bytes() if self.cert is not None else None,
        }, now)
        return seal(self.identity, wire.CALL, {
            "action": envelope.action, "payload": envelope.payload, "priority": envelope.priority, "ttl": ttl,
            "trace_id": envelope.trace_id, "correlation_id": envelope.correlation_id,
            "origin": envelope.origin_node or self.node_id, "hop": envelope.hop_count + 1,
            "visited": list(envelope.visited or (self.node_id,)), "assertion": assertion, "stream": stream,
        }, now)

    def _visited(self, envelope: Envelope) -> set[str]:
        return {*envelope.visited, self.node_id, envelope.origin_node} - {""}


def _progress(envelope: Envelope, reply: dict[str, Any]) -> ProgressPart:
    progress = reply.get("progress")
    message = reply.get("message")
    return ProgressPart(envelope.id, float(progress) if isinstance(progress, int | float) else 0.0,
                        message if isinstance(message, str) else "", reply.get("data"))


def _forwarded(reply: dict[str, Any]) -> Forwarded:
    """The peer's ``result`` frame as a Forwarded; a frame that does not hold together is the peer's MODULE_ERROR."""
    try:
        result_json = wire.field(reply, "result_json", bytes)
        receipt = wire.field(reply, "receipt", dict)
        usage = reply.get("usage") or {}
        if not isinstance(usage, dict) or not all(isinstance(v, int | float) for v in usage.values()):
            raise wire.WireError("field 'usage' must map units to numbers")
        compute_ms = wire.field(reply, "compute_ms", (int, float))
        return Forwarded(
            served_by=wire.field(reply, "served_by", str, limit=128),
            module=wire.field(reply, "module", str, limit=256),
            result=decode_json(result_json, what=t("errors.what.peer_result")), result_json=result_json,
            usage={str(k): float(v) for k, v in usage.items()}, compute_ms=float(compute_ms),
            receipt=PeerReceipt(wire.field(reply, "node", str, limit=128), wire.field(receipt, "seq", int),
                                wire.field(receipt, "hash", str, limit=128)))
    except (wire.WireError, ValidationError) as exc:
        raise ModuleError(t("errors.forwarder.peer_answer_malformed", exc=exc)) from None
