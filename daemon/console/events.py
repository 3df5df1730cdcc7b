"""The console's live feed: answered calls and periodic status, to bounded subscriptions.

Each subscription holds at most ``QUEUE_SIZE`` frames.  A reader that falls that far behind
is not buffered for: its subscription is marked overflowed and dropped from the bus, and the
door closes its socket (4008, "slow reader").  The bus holds at most ``MAX_SUBSCRIBERS``, the
last ``RESERVED`` of them for the hub's operators, and one key or person holds ``PER_PRINCIPAL``
at most: no tenant's watchers can lock the operators (or other tenants) out.

What a watcher may see is decided here, without I/O: a call's frame goes to super_admin
watchers and to watchers of the call's own tenant only.  While nobody watches the bus is
false, and the pipeline publishes nothing (one truthiness check per call).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from daemon.core.errors import Unavailable
from daemon.core.i18n import t

QUEUE_SIZE = 256
MAX_SUBSCRIBERS = 64
#: feeds one key or person (not an operator) may hold at once
PER_PRINCIPAL = 4
#: places among MAX_SUBSCRIBERS that only cross-tenant viewers (super_admin) may take
RESERVED = 4


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who watches: a role in a tenant; ``everything`` for the hub's operators (super_admin).

    ``billing``: may see money and call counts (billing:read); ``who``: the key or person, the
    unit the feed's per-principal bound counts.
    """

    role: str
    tenant_id: str
    everything: bool = False
    billing: bool = False
    who: str = ""

    def sees(self, tenant_id: str) -> bool:
        """True when this viewer may see what tenant ``tenant_id`` did."""
        return self.everything or (bool(tenant_id) and tenant_id == self.tenant_id)

    @property
    def scope(self) -> Hashable:
        """Viewers with the same scope see the same things: one frame is built per scope."""
        return True if self.everything else (self.tenant_id, self.billing)


def iso(now: float) -> str:
    """Wall-clock seconds as an ISO 8601 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")


def frame(kind: str, data: Any, now: float) -> str:
    """One text frame: ``{"type", "at", "data"}``, compact JSON."""
    return json.dumps({"type": kind, "at": iso(now), "data": data}, separators=(",", ":"), ensure_ascii=False)


class Subscription:
    """One watcher's queue of frames: bounded; ``next`` is None once it overflowed or was closed."""

    def __init__(self, viewer: Viewer, size: int = QUEUE_SIZE) -> None:
        self.viewer = viewer
        self.size = size
        self.overflowed = False
        self.closed = False
        self._frames: deque[str] = deque()
        self._ready = asyncio.Event()
        self._ended = asyncio.Event()

    def offer(self, text: str) -> bool:
        """Queue a frame; False (and overflowed) when ``size`` frames are already waiting."""
        if self.closed:
            return False
        if len(self._frames) >= self.size:
            self.overflowed = self.closed = True
            self._frames.clear()  # what it did not read is not worth holding any more
            self._ended.set()
        else:
            self._frames.append(text)
        self._ready.set()
        return not self.overflowed

    def close(self) -> None:
        """End the subscription: ``next`` answers None from now on."""
        self.closed = True
        self._ready.set()
        self._ended.set()

    async def ended(self) -> None:
        """Wait until the subscription is closed or overflowed (while its reader may be stuck sending)."""
        await self._ended.wait()

    @property
    def pending(self) -> int:
        """Frames queued and not yet taken."""
        return len(self._frames)

    async def next(self) -> str | None:
        """The next frame, waiting for one; None once closed or overflowed."""
        while not self._frames and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None
        return self._frames.popleft()


class EventBus:
    """Subscriptions and the frames published to them; false while nobody is subscribed."""

    def __init__(self, *, max_subscribers: int = MAX_SUBSCRIBERS, queue_size: int = QUEUE_SIZE,
                 per_principal: int = PER_PRINCIPAL, reserved: int = RESERVED,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_subscribers = max_subscribers
        self.per_principal = per_principal
        self.reserved = reserved
        self.queue_size = queue_size
        self.clock = clock
        self._subscriptions: list[Subscription] = []

    def __bool__(self) -> bool:
        return bool(self._subscriptions)

    def __len__(self) -> int:
        return len(self._subscriptions)

    @property
    def viewers(self) -> list[Viewer]:
        """Who watches now, one per subscription."""
        return [s.viewer for s in self._subscriptions]

    def subscribe(self, viewer: Viewer) -> Subscription:
        """A new subscription; UNAVAILABLE (503) when the bus, or the viewer's own share of it, is full.

        Operators may take every place; others leave ``reserved`` free and hold ``per_principal``
        each at most.
        """
        limit = self.max_subscribers if viewer.everything else self.max_subscribers - self.reserved
        if len(self._subscriptions) >= limit:
            raise Unavailable(t("errors.console.too_many_watchers", limit=self.max_subscribers),
                              {"max_subscribers": self.max_subscribers}, retry_after=5.0)
        if not viewer.everything and sum(s.viewer.who == viewer.who for s in self._subscriptions) \
                >= self.per_principal:
            raise Unavailable(t("errors.console.too_many_own_watchers", limit=self.per_principal),
                              {"per_principal": self.per_principal}, retry_after=5.0)
        subscription = Subscription(viewer, self.queue_size)
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription`` and close it (idempotent)."""
        subscription.close()
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def publish_call(self, *, action: str, module: str | None, status: str, latency_ms: float,
                     tenant_id: str, door: str) -> None:
        """A "call" frame to the watchers who may see ``tenant_id``'s calls."""
        text = frame("call", {"action": action, "module": module, "status": status, "latency_ms": latency_ms,
                              "tenant_id": tenant_id or None, "door": door}, self.clock())
        self._deliver(lambda viewer: text if viewer.sees(tenant_id) else None)

    def publish(self, kind: str, data: Any, *, only: Callable[[Viewer], bool] | None = None) -> None:
        """The same frame to every watcher (or those ``only`` admits)."""
        text = frame(kind, data, self.clock())
        self._deliver(lambda viewer: text if only is None or only(viewer) else None)

    def publish_scoped(self, kind: str, build: Callable[[Viewer], Any]) -> None:
        """A frame whose data depends on what the watcher may see: ``build`` runs once per scope."""
        built: dict[Hashable, str] = {}
        now = self.clock()

        def text_for(viewer: Viewer) -> str:
            if viewer.scope not in built:
                built[viewer.scope] = frame(kind, build(viewer), now)
            return built[viewer.scope]

        self._deliver(text_for)

    def _deliver(self, text_for: Callable[[Viewer], str | None]) -> None:
        overflowed = []
        for subscription in self._subscriptions:
            text = text_for(subscription.viewer)
            if text is not None and not subscription.offer(text):
                overflowed.append(subscription)
        for subscription in overflowed:  # its door closes the socket: 4008, slow reader
            self._subscriptions.remove(subscription)
