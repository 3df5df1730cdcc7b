"""``Libp2pNode``: the hub's libp2p node, run in its own trio thread, driven from the hub's asyncio loop.

Each peer has one *link*: a long-lived stream of ``LINK_PROTOCOL`` carrying length-prefixed frames
(``framing``). A reused stream answers in 2-3 ms where a stream per call costs ~9 ms, so the lead
multiplexes its calls over the link rather than opening streams. Whoever dials opens the link stream;
an inbound one is accepted and registered. If both sides dial at once a peer has two link streams:
both are read, frames go out on the first.

Threads: the public methods run on the asyncio loop that called ``start``; the ``_trio_*`` methods and
stream tasks run on the trio thread; the callbacks (``on_frame``, ``on_link``, ``on_link_lost``) are
delivered on the asyncio loop, in order, and never after ``close`` began. The link table and each
link's outbox are shared by both threads, so they are touched only under their locks.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from federation.transport import framing
from federation.transport.bridge import Bridge, TrioThread
from federation.transport.errors import TransportError, describe, unwrap
from federation.transport.host import (
    build_host,
    check_ports_free,
    key_pair_from_seed,
    parse_listen,
    peer_id_of,
    restore_logging,
    stop_auto_connect,
)

log = logging.getLogger("democratic_ai.federation.transport")

LINK_PROTOCOL = "/democratic-ai/link/1.0.0"
DEFAULT_MAX_FRAME = 8 * 1024 * 1024
PING_TIMEOUT_S = 5.0
PING_BYTES = 32
#: how long close() lets each peer's disconnect take before giving up on it politely
CLOSE_PEER_TIMEOUT_S = 2.0


class _Outbox:
    """Frames queued for one peer's link writer: filled on the asyncio thread, drained on the trio thread."""

    __slots__ = ("_closed", "_frames", "_idle", "_limit", "_lock")

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._frames: deque[bytes] = deque()
        self._limit = limit
        self._idle = False  # the writer found nothing and waits to be woken
        self._closed = False

    def put(self, frame: bytes) -> bool:
        """Queue ``frame``; True when the writer sleeps and must be woken (once per idle spell)."""
        with self._lock:
            if self._closed:
                raise TransportError("the link is closed")
            if len(self._frames) >= self._limit:
                raise TransportError(f"link backlog full ({self._limit} frames queued)")
            self._frames.append(frame)
            wake, self._idle = self._idle, False
            return wake

    def take(self) -> list[bytes] | None:
        """Every queued frame (an empty list marks the writer idle), or None once closed."""
        with self._lock:
            if self._closed:
                return None
            frames = list(self._frames)
            self._frames.clear()
            self._idle = not frames
            return frames

    def close(self) -> None:
        """Refuse further frames and drop the queued ones (their link is gone)."""
        with self._lock:
            self._closed = True
            self._frames.clear()


class _Link:
    """One peer's link: its open link streams (trio thread) and outbox (both threads)."""

    __slots__ = ("outbox", "peer_id", "readers", "streams", "wake")

    def __init__(self, peer_id: str, max_backlog: int) -> None:
        self.peer_id = peer_id
        self.streams: list[INetStream] = []
        # a reader blocked in yamux's read() is not woken by our own reset or disconnect (py-libp2p 0.8),
        # so disconnect() cancels the readers' scopes
        self.readers: list[trio.CancelScope] = []
        self.outbox = _Outbox(max_backlog)
        self.wake = trio.Event()

    def wake_writer(self) -> None:
        """Trio thread: the outbox has frames again."""
        self.wake.set()


class Libp2pNode:
    """A libp2p host (Noise, yamux, identify, ping) with one framed link stream per peer."""

    def __init__(
        self,
        seed: bytes,
        listen: list[str],
        *,
        on_frame: Callable[[str, bytes], None],
        on_link: Callable[[str], None],
        on_link_lost: Callable[[str], None],
        max_frame: int = DEFAULT_MAX_FRAME,
        max_backlog: int = 1024,
    ) -> None:
        restore_logging()
        if not 0 < max_frame <= framing.MAX_ENCODABLE:
            raise ValueError(f"max_frame must be between 1 and {framing.MAX_ENCODABLE}")
        if max_backlog < 1:
            raise ValueError("max_backlog must be at least 1")
        self._key_pair = key_pair_from_seed(seed)
        self.peer_id: str = peer_id_of(self._key_pair)
        self._listen = list(listen)
        self._on_frame = on_frame
        self._on_link = on_link
        self._on_link_lost = on_link_lost
        self._max_frame = max_frame
        self._max_backlog = max_backlog
        self._lock = threading.Lock()
        self._links: dict[str, _Link] = {}
        self._thread = TrioThread(f"libp2p-{self.peer_id[-6:]}")
        self._bridge: Bridge | None = None  # asyncio side: set once start() returns
        self._bridge_trio: Bridge | None = None  # trio side: set as the trio thread starts
        self._host: IHost | None = None
        self._stop: trio.Event | None = None
        self._dial_locks: dict[str, trio.Lock] = {}
        self._closing = False
        #: link streams this node opened (dialled) and accepted, for tests and metrics
        self.streams_opened = 0
        self.streams_accepted = 0

    # -- asyncio face -----------------------------------------------------------------------------
    async def start(self) -> list[str]:
        """Start the trio thread and the host; the listen multiaddrs, each ending in ``/p2p/<peer id>``."""
        if self._bridge is not None:
            raise TransportError("the libp2p node is already started")
        addrs = parse_listen(self._listen)
        check_ports_free(addrs)

        async def main(bridge: Bridge, ready: Callable[[list[str]], None]) -> None:
            await self._trio_main(bridge, ready, addrs)

        bridge, listening = await self._thread.start(main)
        self._bridge = bridge
        return listening

    async def connect(self, multiaddr: str, timeout: float = 5.0) -> str:  # noqa: ASYNC109 (the SPEC's interface)
        """Dial ``multiaddr`` (ending in ``/p2p/<peer id>``) and make sure one link stream is open; the peer id."""
        return await self._require_bridge().call(self._trio_connect, multiaddr, timeout)

    def send(self, peer_id: str, frame: bytes) -> None:
        """Queue ``frame`` for ``peer_id`` without waiting; TransportError when there is no link, too many
        frames are queued, or the frame is over ``max_frame``."""
        if len(frame) > self._max_frame:
            raise TransportError(f"frame of {len(frame)} bytes is over the {self._max_frame}-byte limit")
        bridge = self._require_bridge()
        with self._lock:
            link = self._links.get(peer_id)
        if link is None:
            raise TransportError(f"no link to {peer_id}")
        if link.outbox.put(frame):
            bridge.post(link.wake_writer)

    async def ping(self, peer_id: str) -> float:
        """Round trip to a linked peer over libp2p ping, in seconds."""
        return await self._require_bridge().call(self._trio_ping, peer_id)

    async def disconnect(self, peer_id: str) -> None:
        """Close the link and the connection to ``peer_id``; ``on_link_lost`` follows if it was linked."""
        await self._require_bridge().call(self._trio_disconnect, peer_id)

    def links(self) -> list[str]:
        """Peer ids with a live link."""
        with self._lock:
            return list(self._links)

    async def close(self) -> None:
        """Disconnect every peer, close the host and its listeners, and end the trio thread (idempotent)."""
        if self._closing:
            await self._thread.join()
            return
        self._closing = True  # from here no callback reaches the hub: it is shutting down
        if self._bridge is not None and self._stop is not None:
            try:
                self._bridge.post(self._stop.set)
            except TransportError:
                pass  # trio already ended
            await self._thread.join()

    def _require_bridge(self) -> Bridge:
        if self._bridge is None or self._closing:
            raise TransportError("the libp2p node is not running")
        return self._bridge

    def _deliver(self, callback: Callable[..., None], *args: Any) -> None:
        # on the asyncio loop: a callback's bug is logged, not allowed to break the link that delivered it
        if self._closing:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("federation transport callback failed", extra={"callback": repr(callback)})

    # -- trio thread ------------------------------------------------------------------------------
    async def _trio_main(self, bridge: Bridge, ready: Callable[[list[str]], None],
                         addrs: list[multiaddr.Multiaddr]) -> None:
        self._stop = trio.Event()
        self._bridge_trio = bridge
        host = build_host(self._key_pair)
        host.set_stream_handler(TProtocol(LINK_PROTOCOL), self._trio_accept)
        self._host = host
        async with host.run(listen_addrs=addrs):
            try:
                await stop_auto_connect(host)
                listening = host.get_transport_addrs()
                if len(listening) < len(addrs):
                    # libp2p logs a failed listen and carries on; a node that hears nothing is no use
                    raise TransportError(f"could not listen on {', '.join(str(a) for a in addrs)}")
                ready([str(addr) for addr in host.get_addrs()])
                await self._stop.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await self._trio_shutdown(host)

    async def _trio_shutdown(self, host: IHost) -> None:
        # Leaving host.run() alone leaks sockets (py-libp2p 0.8): drop every peer, then close the host
        with self._lock:
            links = list(self._links.values())
        for link in links:
            link.outbox.close()
            link.wake_writer()
        for peer in list(host.get_connected_peers()):
            with trio.move_on_after(CLOSE_PEER_TIMEOUT_S):
                try:
                    await host.disconnect(peer)
                except Exception as exc:  # a peer that will not close politely is dropped by host.close()
                    log.debug("disconnect at close failed", extra={"peer": str(peer), "error": describe(exc)})
        try:
            await host.close()
        except Exception as exc:  # nothing is left to save at this point; say what happened
            log.warning("libp2p host close failed", extra={"error": describe(exc)})

    async def _trio_connect(self, addr: str, limit_s: float) -> str:
        host = self._trio_host()
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:  # multiaddr and libp2p raise assorted types for bad text
            raise TransportError(f"{addr!r} is not a multiaddr ending in /p2p/<peer id>: {describe(exc)}") from None
        peer_id = info.peer_id.to_base58()
        if peer_id == self.peer_id:
            raise TransportError(f"{addr} is this node's own address")
        lock = self._dial_locks.setdefault(peer_id, trio.Lock())
        try:
            with trio.fail_after(limit_s):
                # a failed dial blocks the peer for 60 s in py-libp2p's negative cache; our caller decides retries
                host.get_network().unblock_peer(info.peer_id)  # type: ignore[attr-defined]
                await host.connect(info)
                async with lock:
                    with self._lock:
                        if peer_id in self._links:
                            return peer_id
                    stream = await host.new_stream(info.peer_id, [TProtocol(LINK_PROTOCOL)])
                    self.streams_opened += 1
                    link = self._trio_attach(peer_id, stream)
        except trio.TooSlowError:
            raise TransportError(f"dial {addr}: no link after {limit_s:g} s") from None
        except TransportError:
            raise
        except Exception as exc:  # refused, unreachable, handshake failed, protocol refused
            raise TransportError(f"dial {addr}: {describe(exc)}") from unwrap(exc)
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._dial_locks.pop(peer_id, None)
        self._trio_nursery().start_soon(self._trio_read, link, stream)
        return peer_id

    async def _trio_accept(self, stream: INetStream) -> None:
        # libp2p's handler task for an inbound link stream: it lives as long as the stream
        if self._closing:
            await stream.reset()
            return
        peer_id = stream.muxed_conn.peer_id.to_base58()
        self.streams_accepted += 1
        link = self._trio_attach(peer_id, stream)
        await self._trio_read(link, stream)

    def _trio_attach(self, peer_id: str, stream: INetStream) -> _Link:
        with self._lock:
            link = self._links.get(peer_id)
            new = link is None
            if link is None:
                link = self._links[peer_id] = _Link(peer_id, self._max_backlog)
            link.streams.append(stream)
        if new:
            self._trio_nursery().start_soon(self._trio_write, link)
            self._trio_bridge().to_loop(self._deliver, self._on_link, peer_id)
        return link

    def _trio_detach(self, link: _Link, stream: INetStream) -> None:
        with self._lock:
            if stream in link.streams:
                link.streams.remove(stream)
            gone = not link.streams and self._links.get(link.peer_id) is link
            if gone:
                del self._links[link.peer_id]
        if gone:
            link.outbox.close()
            link.wake_writer()
            self._trio_bridge().to_loop(self._deliver, self._on_link_lost, link.peer_id)

    async def _trio_read(self, link: _Link, stream: INetStream) -> None:
        decoder = framing.FrameDecoder(self._max_frame)
        bridge = self._trio_bridge()
        try:
            with trio.CancelScope() as scope:
                link.readers.append(scope)
                while True:
                    chunk = await stream.read()
                    if not chunk:
                        break
                    for frame in decoder.feed(chunk):
                        bridge.to_loop(self._deliver, self._on_frame, link.peer_id, frame)
        except framing.FrameTooLarge as exc:
            log.warning("peer broke the link framing; dropping its link", extra={"peer": link.peer_id,
                                                                                  "error": str(exc)})
        except Exception as exc:  # EOF, reset, connection gone: the link simply ends
            log.debug("link stream ended", extra={"peer": link.peer_id, "error": describe(exc)})
        finally:
            link.readers.remove(scope)
            self._trio_detach(link, stream)
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                try:
                    await stream.reset()
                except Exception as exc:  # already gone with its connection
                    log.debug("link stream reset failed", extra={"peer": link.peer_id, "error": describe(exc)})

    async def _trio_write(self, link: _Link) -> None:
        while True:
            frames = link.outbox.take()
            if frames is None:
                return
            if not frames:
                await link.wake.wait()
                link.wake = trio.Event()
                continue
            with self._lock:
                stream = link.streams[0] if link.streams else None
            if stream is None:
                return
            try:
                await stream.write(framing.encode(frames))
            except Exception as exc:  # the stream broke: its reader ends and detaches it; these frames are lost
                log.debug("link write failed", extra={"peer": link.peer_id, "error": describe(exc)})
                try:
                    await stream.reset()
                except Exception as reset_exc:  # already torn down with its connection
                    log.debug("link stream reset failed", extra={"peer": link.peer_id,
                                                                 "error": describe(reset_exc)})

    async def _trio_ping(self, peer_id: str) -> float:
        host = self._trio_host()
        with self._lock:
            linked = peer_id in self._links
        if not linked:
            raise TransportError(f"no link to {peer_id}")
        payload = secrets.token_bytes(PING_BYTES)
        try:
            with trio.fail_after(PING_TIMEOUT_S):
                stream = await host.new_stream(ID.from_base58(peer_id), [PING_PROTOCOL])
                try:
                    started = time.perf_counter()
                    await stream.write(payload)
                    echo = b""
                    while len(echo) < PING_BYTES:
                        chunk = await stream.read(PING_BYTES - len(echo))
                        if not chunk:
                            break
                        echo += chunk
                    rtt = time.perf_counter() - started
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                        await stream.close()
        except trio.TooSlowError:
            raise TransportError(f"ping {peer_id}: no answer within {PING_TIMEOUT_S:g} s") from None
        except Exception as exc:  # stream refused or broken
            raise TransportError(f"ping {peer_id}: {describe(exc)}") from unwrap(exc)
        if echo != payload:
            raise TransportError(f"ping {peer_id}: the answer did not echo the payload")
        return rtt

    async def _trio_disconnect(self, peer_id: str) -> None:
        host = self._trio_host()
        try:
            peer = ID.from_base58(peer_id)
        except Exception as exc:  # base58 or multihash errors
            raise TransportError(f"{peer_id!r} is not a peer id") from exc
        with self._lock:
            link = self._links.get(peer_id)
        if link is not None:
            for scope in list(link.readers):
                scope.cancel()  # each reader detaches and resets its stream; the last one reports the loss
        await host.disconnect(peer)

    def _trio_host(self) -> IHost:
        if self._host is None:
            raise TransportError("the libp2p node is not running")
        return self._host

    def _trio_bridge(self) -> Bridge:
        if self._bridge_trio is None:
            raise TransportError("the libp2p node is not running")
        return self._bridge_trio

    def _trio_nursery(self) -> trio.Nursery:
        return self._trio_bridge().nursery
