"""The one crossing between the hub's asyncio loop and the trio thread libp2p runs in.

libp2p is written for trio, the hub for asyncio. Trio's guest mode stalls under load and anyio's
asyncio backend cannot run libp2p, so trio gets a thread of its own (``TrioThread``) and every
crossing goes through ``Bridge``:

- asyncio -> trio: ``Bridge.call`` (await a trio coroutine's result; cancelling the awaiting asyncio
  task cancels the trio task) and ``Bridge.post`` (run a plain function on the trio thread), both by
  ``TrioToken.run_sync_soon``;
- trio -> asyncio: ``Bridge.to_loop``, by ``loop.call_soon_threadsafe``; callbacks keep their order.

Nothing else in the package touches the other thread's objects except the link outboxes, which are
guarded by their own lock (see ``node._Outbox``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from federation.transport.errors import TransportError, describe, unwrap

log = logging.getLogger("democratic_ai.federation.transport")

T = TypeVar("T")


class Bridge:
    """Crossings between one asyncio loop and one running trio loop; safe to use from either thread as named."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken, nursery: trio.Nursery) -> None:
        self.loop = loop
        self.token = token
        self.nursery = nursery

    # -- trio -> asyncio ------------------------------------------------------------------------
    def to_loop(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the asyncio loop soon (from the trio thread); dropped if the loop has closed."""
        with contextlib.suppress(RuntimeError):  # the loop closed under a late libp2p event: nobody to tell
            self.loop.call_soon_threadsafe(fn, *args)

    # -- asyncio -> trio ------------------------------------------------------------------------
    def post(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the trio thread soon (from any thread); TransportError once trio has stopped."""
        try:
            self.token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            raise TransportError("the libp2p node is closed") from None

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` run as a trio task (from the asyncio loop).

        Its exception comes back unwrapped from trio's exception groups; cancelling this coroutine
        cancels the trio task, and the trio loop stopping first raises TransportError.
        """
        future: asyncio.Future[T] = self.loop.create_future()
        job = _Job(self, fn, args, future)
        self.post(self.nursery.start_soon, job.run)
        try:
            return await future
        except asyncio.CancelledError:
            with contextlib.suppress(TransportError):
                self.post(job.cancel)
            raise


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the asyncio caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Job:
    """One ``Bridge.call`` on the trio side; its scope is created and cancelled on the trio thread only."""

    __slots__ = ("args", "bridge", "cancelled", "fn", "future", "scope")

    def __init__(self, bridge: Bridge, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
                 future: asyncio.Future[Any]) -> None:
        self.bridge = bridge
        self.fn = fn
        self.args = args
        self.future = future
        self.scope: trio.CancelScope | None = None
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()

    async def run(self) -> None:
        settled = False
        try:
            with trio.CancelScope() as scope:
                self.scope = scope
                if self.cancelled:
                    scope.cancel()
                try:
                    result = await self.fn(*self.args)
                except Exception as exc:  # every failure goes back to the awaiting asyncio task, unwrapped
                    cause = unwrap(exc)
                    error = cause if isinstance(cause, Exception) else TransportError(describe(exc))
                    self.bridge.to_loop(_settle, self.future, None, error)
                    settled = True
                else:
                    self.bridge.to_loop(_settle, self.future, result, None)
                    settled = True
        finally:
            if not settled:  # cancelled: by the caller (who no longer listens) or by the node closing
                self.bridge.to_loop(_settle, self.future, None, TransportError("the libp2p node is closing"))


class TrioThread:
    """A daemon thread running one ``trio.run``; ``start`` returns once ``main`` says it is ready."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._done: asyncio.Future[None] | None = None

    async def start(self, main: Callable[[Bridge, Callable[[T], None]], Awaitable[None]]) -> tuple[Bridge, T]:
        """Run ``main(bridge, ready)`` in trio on a new thread; returns the bridge and what ``main`` passed to ready.

        ``main`` runs inside the root nursery the bridge spawns into; when it returns, the nursery is
        cancelled and the thread ends. A failure before ``ready`` raises here as TransportError.
        """
        loop = asyncio.get_running_loop()
        started: asyncio.Future[tuple[Bridge, T]] = loop.create_future()
        done: asyncio.Future[None] = loop.create_future()
        self._done = done

        async def root() -> None:
            async with trio.open_nursery() as nursery:
                bridge = Bridge(loop, trio.lowlevel.current_trio_token(), nursery)

                def ready(value: T) -> None:
                    bridge.to_loop(_settle, started, (bridge, value), None)

                await main(bridge, ready)
                nursery.cancel_scope.cancel()

        def target() -> None:
            error: BaseException | None = None
            try:
                trio.run(root)
            except BaseException as exc:  # the thread's last word goes to the loop; nothing here can re-raise it
                error = exc
            if error is not None:
                failure = TransportError(describe(error))
                failure.__cause__ = unwrap(error)
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, started, None, failure)
                log.warning("libp2p thread ended with an error", extra={"error": describe(error)})
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, started, None, TransportError("the libp2p node stopped"))
                loop.call_soon_threadsafe(_settle, done, None, None)

        self._thread = threading.Thread(target=target, name=self.name, daemon=True)
        self._thread.start()
        return await started

    async def join(self) -> None:
        """Wait for the trio thread to end (after ``main`` returned or the loop stopped)."""
        if self._done is not None:
            await asyncio.shield(self._done)
        if self._thread is not None:
            # the thread has posted its last callback; what is left of it is returning from target()
            await asyncio.to_thread(self._thread.join)
