"""The fleet's links: who is a trusted peer, and calls multiplexed over each peer's one link.

The transport (``federation/transport/``) carries frames between node ids it authenticated with
Noise; it knows nothing of fleets.  ``Links`` sits on the hub's loop on top of it:

- **Trust.** On a new link each side sends ``hello``: its node certificate, signed with its node
  key.  The certificate must be of this hub's fleet (``FleetTrust.admit``) and for the very key the
  transport authenticated.  Until then nothing else from that peer is read; a refused peer is
  disconnected and the refusal counted by reason.
- **Calls out.** ``exchange`` sends a sealed call under a fresh id and yields the peer's replies
  (progress parts, then one result or error).  Leaving it early sends ``cancel``.  A lost link
  ends every call waiting on it with UNAVAILABLE, so the forwarder can fail over at once.
- **Calls in.** A ``call`` frame is opened (signature, sender, freshness, replay) and served by the
  ``CallHandler`` in a task of its own; ``cancel`` cancels that task.  Each peer has a bound on
  the calls it may have open here.

Everything here is driven by the transport's callbacks and by the forwarder; there are no sockets,
so ``tests/unit/federation`` runs whole fleets over an in-memory transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.core.errors import HubError, InternalError, PermissionDenied, Unavailable
from daemon.core.i18n import t
from federation import wire
from federation.fleet import FleetTrust, NodeCertificate, PeerRefused, TrustedPeer
from federation.identity import IdentityError, NodeIdentity, public_key_from_peer_id
from federation.sealing import Opened, ReplayGuard, SealError, open_sealed, seal

log = logging.getLogger("democratic_ai.federation")

#: what a ``call`` frame may carry: a forwarded call, or a usage batch for the central node
REQUEST_KINDS = (wire.CALL, wire.USAGE)
#: the largest frame read from a peer not yet trusted (a hello with its certificate is ~1 KiB)
MAX_UNTRUSTED_FRAME = 16 << 10
#: a link whose peer has not proved itself by then is closed
HELLO_TIMEOUT_S = 10.0
#: replies a call may have waiting unread before the peer counts as flooding it
MAX_QUEUED_REPLIES = 256


class Transport(Protocol):
    """What ``Links`` needs of the transport: this node's id, sending a frame, dropping a peer."""

    peer_id: str

    def send(self, peer_id: str, frame: bytes) -> None:
        """Queue ``frame`` on the link to ``peer_id``; raises when there is no link."""

    async def disconnect(self, peer_id: str) -> None:
        """Close the link (and connection) to ``peer_id``."""


class CallHandler(Protocol):
    """The serving side: a request a trusted peer sent, answered as reply frames (parts, then result or error).

    A request is a forwarded call (sealed kind ``call``) or, at the central node, a usage batch
    (sealed kind ``usage``); ``sealed`` is the frame's sealed bytes as they came.
    """

    def serve(self, peer: TrustedPeer, call: Opened, sealed: bytes) -> AsyncIterator[dict[str, Any]]:
        """Reply frames without their ``id``; the last one is ``result`` or ``error``."""
        ...


@dataclass(slots=True)
class _Pending:
    peer_id: str
    replies: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    ended: bool = False  # no more replies will come: the last one arrived, or the call was cut
    cut: bool = False  # ended here, not by the peer: the peer must still be told to cancel


class Links:
    """Trusted peers over the transport, and the calls between them; one per hub, on its loop."""

    def __init__(
        self,
        *,
        identity: NodeIdentity,
        trust: FleetTrust,
        transport: Transport,
        handler: CallHandler,
        hello: Callable[[], dict[str, Any]],
        on_peer: Callable[[TrustedPeer, dict[str, Any]], None],
        on_advert: Callable[[TrustedPeer, Opened], None],
        on_lost: Callable[[str], None],
        on_refused: Callable[[str], None] = lambda reason: None,
        max_calls_per_peer: int = 128,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.trust = trust
        self.transport = transport
        self.handler = handler
        self.guard = ReplayGuard()
        self._hello = hello
        self._on_peer = on_peer
        self._on_advert = on_advert
        self._on_lost = on_lost
        self._on_refused = on_refused
        self._max_calls = max_calls_per_peer
        self._clock = clock
        self._peers: dict[str, TrustedPeer] = {}
        self._greeted: set[str] = set()
        self._refused: set[str] = set()  # links being closed: their queued frames are dropped unread
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._serving: dict[str, dict[int, asyncio.Task[None]]] = {}
        self._chores: set[asyncio.Task[Any]] = set()

    # -- who is here --------------------------------------------------------------------------
    def peer(self, peer_id: str) -> TrustedPeer | None:
        """The trusted peer behind a live link, or None."""
        return self._peers.get(peer_id)

    def peers(self) -> list[TrustedPeer]:
        """Every peer with a live, trusted link."""
        return list(self._peers.values())

    def send_to_all(self, kind: str, body: dict[str, Any]) -> int:
        """Seal ``body`` once and send it to every trusted peer (adverts); how many it went to."""
        frame = wire.encode({"t": kind, "sealed": seal(self.identity, kind, body, self._clock())})
        sent = 0
        for peer_id in list(self._peers):
            if self._send(peer_id, frame):
                sent += 1
        return sent

    def send_to(self, peer_id: str, kind: str, body: dict[str, Any]) -> bool:
        """Seal ``body`` and send it to one trusted peer; False when its link is gone."""
        return self._send(peer_id, wire.encode({"t": kind, "sealed": seal(self.identity, kind, body, self._clock())}))

    # -- transport callbacks (on the hub's loop) ----------------------------------------------
    def on_link(self, peer_id: str) -> None:
        """A new link: introduce ourselves; nothing of theirs counts until their hello is accepted in time."""
        self._refused.discard(peer_id)  # a new link is a new chance
        self._greet(peer_id)
        asyncio.get_running_loop().call_later(HELLO_TIMEOUT_S, self._hello_due, peer_id)

    def _hello_due(self, peer_id: str) -> None:
        if peer_id in self._greeted and peer_id not in self._peers and peer_id not in self._refused:
            self._refuse(peer_id, "no_hello")

    def on_link_lost(self, peer_id: str) -> None:
        """The link dropped: calls waiting on it fail now (the forwarder fails over), calls it sent stop."""
        self._greeted.discard(peer_id)
        self._refused.discard(peer_id)
        was_trusted = self._peers.pop(peer_id, None) is not None
        for pending in self._pending.values():
            if pending.peer_id == peer_id and not pending.ended:
                pending.replies.put_nowait(_error(Unavailable(t("errors.links.link_peer_closed_during"))))
        for task in self._serving.pop(peer_id, {}).values():
            task.cancel()  # nobody is left to hear the answer: the origin fails over or gives up
        if was_trusted:
            self._on_lost(peer_id)

    def on_frame(self, peer_id: str, data: bytes) -> None:
        """One frame from ``peer_id`` (already authenticated by the transport as that node)."""
        if peer_id in self._refused:
            return  # refused: what it queued before the link closes is not worth reading
        peer = self._peers.get(peer_id)
        try:
            if peer is None and len(data) > MAX_UNTRUSTED_FRAME:
                # before its hello is accepted a stranger gets no more than a hello's worth of decoding
                raise PeerRefused("too_large")
            frame = wire.decode(data)
            if frame["t"] == wire.HELLO:
                if peer is None:  # a hello on a trusted link changes nothing: ignored
                    self._accept_hello(peer_id, frame)
                return
            if peer is None:
                raise PeerRefused("no_hello")
            kind = frame["t"]
            if kind == wire.ADVERT:
                self._on_advert(peer, self._open(peer, frame, wire.ADVERT))
            elif kind == wire.CALL:
                self._start_serving(peer, frame)
            elif kind == wire.CANCEL:
                task = self._serving.get(peer_id, {}).get(frame["id"])
                if task is not None:
                    task.cancel()
            else:
                self._reply(peer_id, frame)
        except PeerRefused as exc:
            self._refuse(peer_id, exc.reason)
        except (wire.WireError, SealError, IdentityError) as exc:
            # a trusted peer speaking nonsense is a bug or an attack: dropped, counted, the link closed
            self._refuse(peer_id, getattr(exc, "reason", "malformed"), detail=str(exc))

    # -- calls out ----------------------------------------------------------------------------
    async def exchange(self, peer_id: str, sealed_call: bytes) -> AsyncIterator[dict[str, Any]]:
        """Send a sealed call to ``peer_id``; yield its replies, the last being ``result`` or ``error``."""
        if peer_id not in self._peers:
            raise Unavailable(t("errors.links.peer_not_connected"))
        call_id = next(self._ids)
        pending = self._pending[call_id] = _Pending(peer_id)
        try:
            if not self._send(peer_id, wire.encode({"t": wire.CALL, "id": call_id, "sealed": sealed_call})):
                raise Unavailable(t("errors.links.link_peer_closed"))
            while True:
                reply = await pending.replies.get()
                if reply["t"] != wire.PART:
                    pending.ended = True
                yield reply
                if pending.ended:
                    return
        finally:
            del self._pending[call_id]
            if (pending.cut or not pending.ended) and peer_id in self._peers:
                # cancelled or abandoned at the origin: the serving hub stops the call too
                self._send(peer_id, wire.encode({"t": wire.CANCEL, "id": call_id}))

    def _reply(self, peer_id: str, frame: dict[str, Any]) -> None:
        pending = self._pending.get(frame["id"])
        if pending is None or pending.peer_id != peer_id or pending.ended:
            return  # a reply to a call we gave up on (or another peer's id): nothing waits for it
        if pending.replies.qsize() >= MAX_QUEUED_REPLIES:
            pending.replies.put_nowait(_error(Unavailable(t("errors.links.peer_sent_more_replies"))))
            pending.ended = pending.cut = True
            return
        pending.replies.put_nowait(frame)

    # -- calls in -----------------------------------------------------------------------------
    def _start_serving(self, peer: TrustedPeer, frame: dict[str, Any]) -> None:
        call_id = frame["id"]
        serving = self._serving.setdefault(peer.peer_id, {})
        if call_id in serving:
            return  # the same id twice on one link: the first call keeps it
        if len(serving) >= self._max_calls:
            self._send(peer.peer_id, wire.encode({"id": call_id, **_error(Unavailable(
                t("errors.links.peer_already_calls_open", count=len(serving)), retry_after=1))}))
            return
        try:
            opened = self._open(peer, frame, *REQUEST_KINDS)
        except SealError as exc:
            self._send(peer.peer_id, wire.encode({"id": call_id, **_error(PermissionDenied(
                t("errors.links.call_signature_does_not", reason=exc.reason), {"reason": exc.reason}))}))
            return
        task = asyncio.get_running_loop().create_task(self._serve(peer, call_id, opened, frame["sealed"]))
        serving[call_id] = task
        task.add_done_callback(lambda _: serving.pop(call_id, None))

    async def _serve(self, peer: TrustedPeer, call_id: int, call: Opened, sealed: bytes) -> None:
        replies = self.handler.serve(peer, call, sealed)
        try:
            async for reply in replies:
                if not self._send(peer.peer_id, wire.encode({**reply, "id": call_id})):
                    return  # the link is gone; the finally below stops the call
        except HubError as exc:
            self._send(peer.peer_id, wire.encode({**_error(exc), "id": call_id}))
        except Exception:
            log.exception("serving a peer's call failed", extra={"peer": peer.peer_id})
            self._send(peer.peer_id, wire.encode({**_error(InternalError(t("errors.links.serving_hub_failed"))),
                                                                           "id": call_id}))
        finally:
            await replies.aclose()  # type: ignore[attr-defined]

    # -- plumbing -----------------------------------------------------------------------------
    def _greet(self, peer_id: str) -> None:
        if peer_id in self._greeted:
            return
        self._greeted.add(peer_id)
        self._send(peer_id, wire.encode({"t": wire.HELLO, "sealed": seal(self.identity, wire.HELLO, self._hello(),
                                                                           self._clock())}))

    def _accept_hello(self, peer_id: str, frame: dict[str, Any]) -> None:
        key = public_key_from_peer_id(peer_id)
        now = self._clock()
        # checked against a throwaway guard first: only a peer of the fleet may spend room in the real one
        opened = open_sealed(wire.field(frame, "sealed", bytes), now=now, guard=ReplayGuard(), expect_sender=key)
        if opened.kind != wire.HELLO:
            raise SealError("malformed")
        raw_cert = opened.body.get("cert")
        cert = NodeCertificate.from_bytes(raw_cert) if isinstance(raw_cert, bytes) else None
        peer = self.trust.admit(peer_id, cert, now)
        self.guard.check(opened.sender, opened.nonce, opened.sent_at, now)
        self._peers[peer_id] = peer
        self._greet(peer_id)  # they dialled us: they hear our hello too
        self._on_peer(peer, opened.body)

    def _open(self, peer: TrustedPeer, frame: dict[str, Any], *kinds: str) -> Opened:
        opened = open_sealed(wire.field(frame, "sealed", bytes), now=self._clock(), guard=self.guard,
                             expect_sender=peer.public_key)
        if opened.kind not in kinds:
            raise SealError("malformed")
        return opened

    def _send(self, peer_id: str, frame: bytes) -> bool:
        try:
            self.transport.send(peer_id, frame)
        except Exception as exc:  # the transport's TransportError: the link is gone or backed up
            log.debug("send to peer failed", extra={"peer": peer_id, "error": str(exc)})
            return False
        return True

    def _refuse(self, peer_id: str, reason: str, detail: str = "") -> None:
        log.warning("peer refused", extra={"peer": peer_id, "reason": reason, "detail": detail})
        self._refused.add(peer_id)  # cleared when the link is gone (on_link_lost)
        self._on_refused(reason)
        if self._peers.pop(peer_id, None) is not None:
            self._on_lost(peer_id)
        self._chore(self.transport.disconnect(peer_id))

    def _chore(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chore_done)

    def _chore_done(self, task: asyncio.Task[Any]) -> None:
        self._chores.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("closing a peer's link failed", extra={"error": str(task.exception())})

    async def close(self) -> None:
        """Stop every call served for peers and wait for pending chores (disconnects)."""
        for serving in self._serving.values():
            for task in serving.values():
                task.cancel()
        tasks = [t for serving in self._serving.values() for t in serving.values()] + list(self._chores)
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)


def _error(exc: HubError) -> dict[str, Any]:
    """An ``error`` reply frame (without its id) for ``exc``: the contract's code, message and details."""
    return {"t": wire.ERROR, "code": exc.code, "message": exc.message, "details": exc.details}
