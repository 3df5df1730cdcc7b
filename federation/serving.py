"""The serving side of a forwarded call: check what the peer sent, then run it through the pipeline.

A call from a fleet peer carries the origin hub's signed on-behalf-of assertion: the caller's
tenant, plan and subject as the origin authenticated them, bound to this call's action and
trace id and signed with the origin's node key (with the origin's certificate when the call
arrives through another hub).  This hub checks, in order:

1. the frame's fields (types and bounds) — VALIDATION_ERROR;
2. the assertion: the origin's signature, its fleet certificate, freshness and replay, and that it
   is for this action and trace — PERMISSION_DENIED ("forged on-behalf-of");
3. loops and hops: this hub must not be among the nodes visited, and the hop count must not pass
   ``max_hops`` — PERMISSION_DENIED;
4. the fleet policy ``[federation] allow``: the origin's site may use this action here — PERMISSION_DENIED.

Then the pipeline runs it (``Pipeline.call_for_peer``) for a principal of the origin's tenant,
namespaced by the origin node (``<origin node id>/<tenant id>``, so it can never be one of this
hub's tenants and never reaches a module a local tenant attached), with a usage gate that
records it as served for that origin.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import msgpack

from daemon.core.envelope import CallRequest, CallResult, Principal, ProgressPart
from daemon.core.errors import PermissionDenied, ValidationError
from daemon.core.i18n import t
from daemon.core.pipeline import Pipeline
from daemon.core.ports import UsageGate
from daemon.core.router import ACTION_MAX_LENGTH
from federation import wire
from federation.fleet import FleetTrust, NodeCertificate, PeerRefused, TrustedPeer
from federation.identity import IdentityError, public_key_from_peer_id
from federation.sealing import Opened, ReplayGuard, SealError, open_sealed

#: the sealed kind of an on-behalf-of assertion
ASSERTION = "obo"
#: what a peer-forwarded principal may do here: call capabilities, nothing else
PEER_PERMISSIONS = frozenset({"module:use"})
MAX_ID = 128
MAX_TTL_S = 24 * 3600.0


def payload_digest(payload: Any) -> bytes:
    """What the on-behalf-of assertion binds the payload by: sha256 of its msgpack encoding.

    msgpack keeps map order and every value's type, so the payload a hop decodes and passes on
    encodes to the same bytes at every hub: a relay cannot change it under the origin's signature.
    """
    return hashlib.sha256(msgpack.packb(payload, use_bin_type=True)).digest()


class PeerCalls:
    """``CallHandler`` of ``Links``: a trusted peer's forwarded call, checked and served here."""

    def __init__(self, *, pipeline: Pipeline, usage: UsageGate, trust: FleetTrust, guard: ReplayGuard,
                 node_id: str, allow: Mapping[str, list[str]], max_hops: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.pipeline = pipeline
        self.usage = usage
        self.trust = trust
        self.guard = guard
        self.node_id = node_id
        self.allow = {site: frozenset(actions) for site, actions in allow.items()}
        self.max_hops = max_hops
        self._clock = clock

    async def serve(self, peer: TrustedPeer, call: Opened, sealed: bytes = b"") -> AsyncIterator[dict[str, Any]]:
        """Reply frames for ``call``: progress parts, then ``result``; refusals raise HubError (an ``error`` frame)."""
        request, principal = self.admit(peer, call.body)
        if call.body.get("stream") is True:
            async for part in self.pipeline.stream_for_peer(request, principal, self.usage):
                if isinstance(part, ProgressPart):
                    yield {"t": wire.PART, "progress": part.progress, "message": part.message, "data": part.data}
                else:
                    yield self._result(part)
        else:
            yield self._result(await self.pipeline.call_for_peer(request, principal, self.usage))

    def admit(self, peer: TrustedPeer, body: dict[str, Any]) -> tuple[CallRequest, Principal]:
        """The checks of the module docstring, in order; the request and principal to run it as."""
        try:
            action = wire.field(body, "action", str, limit=ACTION_MAX_LENGTH)
            origin = wire.field(body, "origin", str, limit=MAX_ID)
            trace_id = wire.field(body, "trace_id", str, limit=MAX_ID)
            correlation_id = wire.field(body, "correlation_id", str, limit=MAX_ID)
            priority = wire.field(body, "priority", int)
            hop = wire.field(body, "hop", int)
            visited = wire.field(body, "visited", list, limit=16)
            assertion = wire.field(body, "assertion", bytes, limit=16 << 10)
            ttl = body.get("ttl")
            if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                                    or not 0 < ttl <= MAX_TTL_S or not math.isfinite(ttl)):
                raise wire.WireError("field 'ttl' must be a positive number of seconds")
            if not all(isinstance(node, str) and len(node) <= MAX_ID for node in visited):
                raise wire.WireError("field 'visited' must list node ids")
            if not 0 <= priority <= 9 or not 1 <= hop <= 64:
                raise wire.WireError("fields 'priority' (0-9) or 'hop' are out of range")
        except wire.WireError as exc:
            raise ValidationError(t("errors.serving.forwarded_call_malformed", exc=exc)) from None
        tenant, origin_site = self._check_assertion(peer, origin, action, trace_id, assertion, body.get("payload"))
        if self.node_id in visited or origin == self.node_id:
            raise PermissionDenied(t("errors.serving.call_already_passed_through"),
                                   {"visited": visited})
        if hop > self.max_hops:
            raise PermissionDenied(t("errors.serving.call_made_hops_hub", hop=hop, max_hops=self.max_hops),
                                   {"hops": hop, "max_hops": self.max_hops})
        if not self.allowed(origin_site, action):
            raise PermissionDenied(t("errors.serving.hub_fleet_policy_does", origin_site=origin_site, action=action),
                                   {"site": origin_site, "action": action})
        request = CallRequest(
            action=action, payload=body.get("payload"), priority=priority, ttl=ttl, correlation_id=correlation_id,
            door="p2p", trace_id=trace_id, bytes_in=len(assertion), origin_node=origin, hop_count=hop,
            visited=(*visited, self.node_id), assertion=assertion)
        principal = Principal(
            tenant_id=f"{origin}/{tenant['tenant_id']}", tenant_name=tenant["tenant_name"], plan=tenant["plan"],
            role="peer", permissions=PEER_PERMISSIONS, subject=f"node:{origin}")
        return request, principal

    def allowed(self, site: str, action: str) -> bool:
        """``[federation] allow``: the site's own entry when it has one, else ``"*"``'s."""
        actions = self.allow.get(site, self.allow.get("*", frozenset()))
        return "*" in actions or action in actions

    def _check_assertion(self, peer: TrustedPeer, origin: str, action: str, trace_id: str, assertion: bytes,
                         payload: Any) -> tuple[dict[str, str], str]:
        """The origin's tenant context and site, once its signed assertion holds for this call."""
        try:
            now = self._clock()
            # a throwaway guard first: only an assertion of a fleet member may spend room in the real one
            opened = open_sealed(assertion, now=now, guard=ReplayGuard(),
                                 expect_sender=public_key_from_peer_id(origin))
            claims = opened.body
            if (opened.kind != ASSERTION or claims.get("action") != action or claims.get("trace_id") != trace_id
                    or claims.get("payload") != payload_digest(payload)):
                raise SealError("malformed")
            if origin == peer.peer_id:
                site = peer.site
            else:
                raw = claims.get("cert")
                cert = NodeCertificate.from_bytes(raw) if isinstance(raw, bytes) else None
                site = self.trust.admit(origin, cert, now).site
            self.guard.check(opened.sender, opened.nonce, opened.sent_at, now)
            tenant = {name: wire.field(claims, name, str, limit=256) for name in ("tenant_id", "tenant_name", "plan")}
        except (SealError, IdentityError, PeerRefused, wire.WireError) as exc:
            reason = getattr(exc, "reason", "malformed")
            raise PermissionDenied(t("errors.serving.call_behalf_assertion_does", reason=reason),
                                   {"reason": reason}) from None
        return tenant, site

    def _result(self, result: CallResult) -> dict[str, Any]:
        receipt = result.receipt
        return {
            # the receipt is this hub's; the module may have run one hop further
            "t": wire.RESULT, "node": self.node_id, "served_by": result.served_by or self.node_id,
            "module": result.module,
            "result_json": result.result_json, "usage": result.usage,
            # the module's own run time, not this hub's queueing: the origin bills it as compute time
            "compute_ms": result.compute_ms,
            "receipt": {"seq": receipt.seq, "hash": receipt.hash} if receipt else None,
        }
