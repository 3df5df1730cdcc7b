"""The one pipeline every door hands its calls to.

authenticate -> authorize (RBAC) -> admit (rate limits, credits) -> route ->
schedule (priority, deadline, concurrency) -> execute (off the loop when CPU-bound)
-> record usage (durable before the reply) -> reply (+ receipt).

Doors decode their wire format into a ``CallRequest`` and ``Credentials`` and call
``call`` / ``stream`` / ``capabilities``; they hold no business logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import replace
from typing import Any

from daemon.core.decoding import OFFLOAD_BYTES
from daemon.core.envelope import (
    CallRequest,
    CallResult,
    CapabilityEntry,
    Credentials,
    Envelope,
    Forwarded,
    MessageType,
    Principal,
    ProgressPart,
    ServingModule,
    new_trace_id,
    new_uuid,
    trace_id_var,
)
from daemon.core.errors import (
    CapabilityNotFound,
    DeadlineExceeded,
    HubError,
    PermissionDenied,
    Unavailable,
    ValidationError,
)
from daemon.core.i18n import t
from daemon.core.ports import (
    Admission,
    Authenticator,
    CallFeed,
    CallObserver,
    Forwarder,
    ModuleGone,
    ModuleHandle,
    ModuleSet,
    NoPeers,
    UsageGate,
    not_found,
)
from daemon.core.router import ACTION_MAX_LENGTH, check_action
from modules.sdk import Call, CapabilitySpec, Progress

log = logging.getLogger("democratic_ai.pipeline")

CALL_PERMISSION = "module:use"
READ_PERMISSION = "module:read"
MAX_TARGET_LENGTH = 128  # a module id's own bound (hosting/remote_module.py)


#: json.dumps with options builds a JSONEncoder per call: one, made once, gives the same text
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII kept): the ``result_json`` doors splice into replies."""
    return _ENCODER.encode(value).encode()


async def each_by(stream: AsyncIterator[Any], deadline: float | None) -> AsyncGenerator[Any, None]:
    """``stream``'s items, each wait for the next bounded by ``deadline`` (loop time; None: unbounded).

    The deadline bounds each await, never a yield: a timeout must not fire in the consumer. The
    stream is closed when this generator is: use it under ``contextlib.aclosing`` so that happens
    at once however the iteration ends (finished, failed, or left early by the consumer).
    """
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    item = await anext(stream)
            except StopAsyncIteration:
                return
            yield item
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


class Pipeline:
    """The doors' one entry point: ``call``, ``stream`` and ``capabilities``; ``drain`` ends it."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        usage: UsageGate,
        host: ModuleSet,
        metrics: CallObserver,
        forwarder: Forwarder | None = None,
        node_id: str = "",
        default_ttl_s: float | None = None,
    ) -> None:
        self.auth = authenticator
        self.usage = usage
        self.host = host
        self.metrics = metrics
        self.forwarder: Forwarder = forwarder or NoPeers()
        self.node_id = node_id
        #: the TTL of a call that carries none (None: such a call may wait and run without a deadline)
        self.default_ttl_s = default_ttl_s
        self.closing = False
        #: calls answered and, of those, failed since start (the console's rates)
        self.calls_total = 0
        self.errors_total = 0
        #: told of each answered call while it is truthy (someone watches); None: nobody ever will
        self.call_feed: CallFeed | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- doors call these -------------------------------------------------------------
    async def authenticate(self, credentials: Credentials, *, ip: str = "", user_agent: str = "") -> Principal:
        """The caller behind ``credentials`` (also for admin, MCP and attach routes); UNAUTHENTICATED if none."""
        return await self.auth.authenticate(credentials, ip=ip, user_agent=user_agent)

    def call(self, request: CallRequest, credentials: Credentials, *, ip: str = "",
             user_agent: str = "") -> Coroutine[Any, Any, CallResult]:
        """A unary call: the final result (a streaming capability is drained).

        Not a coroutine function itself: the call runs in ``_call``'s one coroutine (see there).
        """
        return self._call(request, self.usage, None, credentials, ip, user_agent)

    async def stream(
        self, request: CallRequest, credentials: Credentials, *, ip: str = "", user_agent: str = "",
    ) -> AsyncGenerator[ProgressPart | CallResult, None]:
        """Progress parts, then the final CallResult."""
        with _CallScope(self, request) as scope:
            principal = await self.authenticate(credentials, ip=ip, user_agent=user_agent)
            async with contextlib.aclosing(self._stream(scope, request, principal, self.usage)) as parts:
                async for part in parts:
                    yield part

    def call_for_peer(self, request: CallRequest, principal: Principal,
                      usage: UsageGate) -> Coroutine[Any, Any, CallResult]:
        """A call a fleet peer forwarded.

        ``principal`` is the origin's caller as the peer's signed assertion states it, and ``usage``
        records the call as served for that peer: the origin already admitted it against the
        caller's own limits and credits.
        """
        return self._call(request, usage, principal)

    async def stream_for_peer(self, request: CallRequest, principal: Principal,
                              usage: UsageGate) -> AsyncGenerator[ProgressPart | CallResult, None]:
        """``call_for_peer`` for a streaming capability."""
        with _CallScope(self, request) as scope:
            async with contextlib.aclosing(self._stream(scope, request, principal, usage)) as parts:
                async for part in parts:
                    yield part

    async def _call(self, request: CallRequest, usage: UsageGate, principal: Principal | None,
                    credentials: Credentials | None = None, ip: str = "", user_agent: str = "") -> CallResult:
        """authenticate (unless a peer vouched: ``principal``) -> admit -> schedule -> execute -> record, in
        one coroutine: a unary call is the hot path, and each nested coroutine frame is resumed again on every
        wake-up (the ledger's receipt, a queued slot)."""
        with _CallScope(self, request) as scope:
            if principal is None:
                assert credentials is not None
                principal = await self.auth.authenticate(credentials, ip=ip, user_agent=user_agent)
            envelope, handle = self._route(scope, request, principal)
            if handle is None or request.bytes_in > OFFLOAD_BYTES:
                envelope, handle = await self._checked(request, envelope, handle)
                if handle is None:
                    if envelope.type is MessageType.EVENT:
                        return await self._broadcast(envelope, usage)
                    return await self._forward(envelope, usage)
            else:
                handle.check_input(envelope.action, envelope.payload)  # before a token, a credit or a slot
            admission = await usage.admit(envelope)
            try:
                tried: set[str] = set()
                deadline = envelope.deadline
                while True:
                    call = self._call_for(envelope)
                    scheduler = self.host.scheduler(handle.module_id)
                    slots = scheduler.slots
                    if not slots.try_acquire():
                        await scheduler.acquire(envelope.priority, deadline)
                    try:
                        try:  # the slot, held as ``scheduler.slot`` would hold it, without an async context manager
                            started = time.perf_counter()
                            if deadline is None:
                                result = await handle.invoke(envelope.action, envelope.payload, call)
                            else:
                                async with asyncio.timeout_at(deadline):
                                    result = await handle.invoke(envelope.action, envelope.payload, call)
                            compute_ms = (time.perf_counter() - started) * 1000
                        finally:
                            slots.release()
                    except ModuleGone:
                        handle = self._another(envelope, handle, tried, yielded=False)
                        continue
                    break
                result_json = encode_json(result)
                receipt = await usage.record(envelope, handle.module_id, call.usage, compute_ms, len(result_json),
                                             admission)
                return CallResult(envelope.id, envelope.correlation_id, handle.module_id, result, receipt, call.usage,
                                  result_json, admission.headers, "", compute_ms)
            finally:
                usage.release(admission)  # a no-op once the call is recorded

    async def _stream(self, scope: _CallScope, request: CallRequest, principal: Principal,
                      usage: UsageGate) -> AsyncGenerator[ProgressPart | CallResult, None]:
        envelope, handle = await self._admit_stages(scope, request, principal)
        if handle is None:
            if envelope.type is MessageType.EVENT:
                yield await self._broadcast(envelope, usage)
            else:
                async with contextlib.aclosing(self._forward_stream(envelope, usage)) as forwarded:
                    async for part in forwarded:
                        yield part
            return
        admission = await usage.admit(envelope)
        try:
            tried: set[str] = set()
            while True:
                yielded = False
                try:
                    # closed at once when the caller leaves: the slot and the module's stream go with it
                    async with contextlib.aclosing(self._execute_stream(envelope, handle, admission, usage)) as parts:
                        async for part in parts:
                            yielded = True
                            yield part
                    return
                except ModuleGone:
                    handle = self._another(envelope, handle, tried, yielded=yielded)
        finally:
            usage.release(admission)

    async def _admit_stages(self, scope: _CallScope, request: CallRequest,
                            principal: Principal) -> tuple[Envelope, ModuleHandle | None]:
        """authorize -> envelope -> route -> input check; None: not served here (an event, or a peer's action)."""
        envelope, handle = self._route(scope, request, principal)
        return await self._checked(request, envelope, handle)

    def _route(self, scope: _CallScope, request: CallRequest,
               principal: Principal) -> tuple[Envelope, ModuleHandle | None]:
        """authorize -> envelope -> route; None: not served here (an event, or an action only a peer serves)."""
        self.auth.authorize(principal, CALL_PERMISSION)
        envelope = self._envelope(request, principal, scope.trace_id)
        scope.tenant_id = principal.tenant_id
        router = self.host.router
        if router.has_action(envelope.action):
            scope.action_label = envelope.action  # unknown actions share one label: bounded cardinality
        if envelope.type is MessageType.EVENT:
            return envelope, None
        module_id = router.route(envelope.action, envelope.target, tenant_id=principal.tenant_id)
        if module_id is None:
            if not self.forwarder.serves(envelope):
                raise not_found(envelope)  # before admission: a call nobody can serve costs nothing
            scope.action_label = "forwarded"
            scope.module = "peer"
            return envelope, None
        handle = self.host.handle(module_id)
        scope.module = module_id
        return envelope, handle

    async def _checked(self, request: CallRequest, envelope: Envelope,
                       handle: ModuleHandle | None) -> tuple[Envelope, ModuleHandle | None]:
        """The input check of a routed call (the module's, or the forwarder's for a peer's action)."""
        if handle is not None:
            await self._check_input(request, handle.check_input, envelope.action, envelope.payload)
        elif envelope.type is not MessageType.EVENT:
            await self._check_input(request, self.forwarder.check_input, envelope)
        return envelope, handle

    @staticmethod
    async def _check_input(request: CallRequest, check: Callable[..., None], *args: Any) -> None:
        """Bad input is refused before it costs a rate-limit token, a credit or a queue slot; a large
        payload is checked against its schema in a worker thread, as its body was decoded there."""
        if request.bytes_in > OFFLOAD_BYTES:
            await asyncio.to_thread(check, *args)
        else:
            check(*args)

    async def _forward(self, envelope: Envelope, usage: UsageGate) -> CallResult:
        """An action only a peer serves: admitted here against the caller's own limits and credits,
        served there, and recorded here as served-by-peer with the peer's receipt inside ours."""
        admission = await usage.admit(envelope)
        try:
            async with asyncio.timeout_at(envelope.deadline):
                forwarded = await self.forwarder.forward(envelope)
            return await self._record_forwarded(envelope, forwarded, admission, usage)
        finally:
            usage.release(admission)

    async def _forward_stream(self, envelope: Envelope,
                              usage: UsageGate) -> AsyncGenerator[ProgressPart | CallResult, None]:
        admission = await usage.admit(envelope)
        try:
            # leaving early closes the forwarder's stream, which cancels the call at the peer
            parts = each_by(self.forwarder.forward_stream(envelope), envelope.deadline)
            async with contextlib.aclosing(parts):
                async for part in parts:
                    if isinstance(part, ProgressPart):
                        yield part
                    else:
                        yield await self._record_forwarded(envelope, part, admission, usage)
                        return
            raise Unavailable(t("errors.pipeline.peer_ended_stream_without"))
        finally:
            usage.release(admission)

    async def _record_forwarded(self, envelope: Envelope, forwarded: Forwarded, admission: Admission,
                                usage: UsageGate) -> CallResult:
        module = f"peer:{forwarded.served_by}/{forwarded.module}"[:256]
        receipt = await usage.record(envelope, module, forwarded.usage, forwarded.compute_ms,
                                     len(forwarded.result_json), admission)
        return CallResult(
            id=envelope.id, correlation_id=envelope.correlation_id, module=forwarded.module,
            result=forwarded.result, receipt=replace(receipt, peer=forwarded.receipt), usage=forwarded.usage,
            result_json=forwarded.result_json, headers=admission.headers, served_by=forwarded.served_by,
            compute_ms=forwarded.compute_ms,
        )

    def _another(self, envelope: Envelope, handle: ModuleHandle, tried: set[str], *, yielded: bool) -> ModuleHandle:
        """A remote module dropped the call: another module with the action may take it."""
        tried.add(handle.module_id)
        retry = (None if yielded or envelope.target
                 else self.host.router.route(envelope.action, tenant_id=envelope.principal.tenant_id))
        if retry is None or retry in tried:
            raise ModuleGone(t("errors.pipeline.module_went_away_during", module_id=handle.module_id))
        return self.host.handle(retry)

    async def callable_capabilities(self, principal: Principal) -> list[CapabilityEntry]:
        """The capabilities this caller may call (MCP's tools): none for a role without module:use."""
        try:
            self.auth.authorize(principal, CALL_PERMISSION)
        except PermissionDenied:
            return []
        return await self.capabilities(principal)

    async def capabilities(self, principal: Principal) -> list[CapabilityEntry]:
        """What this caller's calls can reach (module:read): each action once, with the modules that serve it.

        That is the platform-wide modules and the caller's own tenant's, never another tenant's, and
        what only the fleet's peers serve.
        """
        self.auth.authorize(principal, READ_PERMISSION)
        entries = self.own_capabilities(principal.tenant_id)
        here = {entry.action for entry in entries}
        # what this hub serves itself it serves itself; the rest the peers may
        entries += [entry for entry in self.forwarder.capabilities() if entry.action not in here]
        return sorted(entries, key=lambda entry: entry.action)

    def own_capabilities(self, tenant_id: str = "") -> list[CapabilityEntry]:
        """What this hub's own modules serve for ``tenant_id``; "" gives the platform-wide ones (adverts)."""
        specs: dict[str, CapabilitySpec] = {}
        serving: dict[str, list[ServingModule]] = {}
        router = self.host.router
        for handle in self.host.handles():
            if not router.visible(handle.module_id, tenant_id):
                continue  # another tenant's module: for this caller it does not exist
            for action, spec in handle.capabilities.items():
                specs.setdefault(action, spec)  # the first module's declaration describes the action
                serving.setdefault(action, []).append(ServingModule(handle.module_id, handle.kind, handle.describe()))
        return [
            CapabilityEntry(
                action=action, description=spec.description, input_schema=spec.input_schema,
                output_schema=spec.output_schema, streaming=spec.streaming, modules=tuple(serving[action]),
                origin="remote" if any(m.kind == "remote" for m in serving[action]) else "local",
            )
            for action, spec in sorted(specs.items())
        ]

    def load(self) -> tuple[float, int]:
        """(calls running or queued per slot, free slots) over this hub's platform modules, for adverts."""
        stats = self.host.stats()
        slots = busy = 0
        for handle in self.host.handles():
            if self.host.router.visible(handle.module_id, ""):
                running, queued = stats.get(handle.module_id, (0, 0))
                slots += handle.concurrency
                busy += running + queued
        return (busy / slots if slots else 0.0), max(0, slots - busy)

    # -- lifecycle ----------------------------------------------------------------------
    async def drain(self, grace: float) -> bool:
        """Refuse new calls and wait up to ``grace`` seconds for in-flight ones; True when all ended."""
        self.closing = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        return self._idle.is_set()

    @property
    def in_flight(self) -> int:
        """Calls entered and not yet finished (unary or streaming); 0 is when ``drain`` returns True."""
        return self._in_flight

    def _enter(self) -> None:
        if self.closing:
            raise Unavailable(t("errors.pipeline.hub_shutting_down"))
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    # -- stages -------------------------------------------------------------------------
    def _envelope(self, request: CallRequest, principal: Principal, trace_id: str) -> Envelope:
        check_action(request.action)
        if not isinstance(request.target, str) or len(request.target) > MAX_TARGET_LENGTH:
            raise ValidationError(t("errors.pipeline.target_module_id_most", max_target_length=MAX_TARGET_LENGTH),
                                  {"pointer": "/target"})
        if not 0 <= request.priority <= 9:
            raise ValidationError(t("errors.pipeline.priority"), {"pointer": "/priority"})
        if request.ttl is not None and not request.ttl > 0:
            raise ValidationError(t("errors.http_api.ttl_positive_number_seconds"), {"pointer": "/ttl"})
        ttl = request.ttl if request.ttl is not None else self.default_ttl_s
        loop = asyncio.get_running_loop()
        message_id = new_uuid()  # Envelope.new_id, one call less
        # positional, in the field order: a keyword call of 20 fields costs ~1 µs more, per call
        return Envelope(
            message_id, request.type, request.action,
            request.payload if request.payload is not None else {},
            principal, request.target, request.priority, ttl,
            loop.time() + ttl if ttl is not None else None,  # deadline
            time.time(),  # timestamp
            request.correlation_id or message_id, request.headers, request.door, trace_id, request.bytes_in,
            principal.subject,  # source
            request.origin_node or self.node_id, request.hop_count, request.visited, request.assertion,
        )

    def _call_for(self, envelope: Envelope) -> Call:
        return Call(envelope.id, envelope.action, envelope.principal.tenant_id, envelope.trace_id, envelope.headers)

    async def _execute_stream(self, envelope: Envelope, handle: ModuleHandle, admission: Admission,
                              usage: UsageGate) -> AsyncGenerator[ProgressPart | CallResult, None]:
        call = self._call_for(envelope)
        async with self.host.scheduler(handle.module_id).slot(envelope.priority, envelope.deadline):
            started = time.perf_counter()
            result: Any = None
            parts = each_by(handle.stream(envelope.action, envelope.payload, call), envelope.deadline)
            async with contextlib.aclosing(parts):  # closed at once however this generator ends
                async for part in parts:
                    if isinstance(part, Progress):
                        yield ProgressPart(envelope.id, part.progress, part.message, part.data)
                    else:
                        result = part
            compute_ms = (time.perf_counter() - started) * 1000
        yield await self._record(envelope, handle, call, result, compute_ms, admission, usage)

    async def _record(self, envelope: Envelope, handle: ModuleHandle, call: Call, result: Any,
                      compute_ms: float, admission: Admission, usage: UsageGate) -> CallResult:
        """Usage is durable before the caller hears the answer."""
        result_json = encode_json(result)
        receipt = await usage.record(envelope, handle.module_id, call.usage, compute_ms, len(result_json),
                                     admission)
        return CallResult(
            id=envelope.id,
            correlation_id=envelope.correlation_id,
            module=handle.module_id,
            result=result,
            receipt=receipt,
            usage=call.usage,
            result_json=result_json,
            headers=admission.headers,
            compute_ms=compute_ms,
        )

    async def _broadcast(self, envelope: Envelope, usage: UsageGate) -> CallResult:
        """EVENT: deliver to every module with the action; answer how many took it."""
        module_ids = self.host.router.broadcast(envelope.action, tenant_id=envelope.principal.tenant_id)
        if not module_ids:
            raise CapabilityNotFound(t("errors.pipeline.no_module_listens_event", action=envelope.action))
        admission = await usage.admit(envelope)

        async def deliver(module_id: str) -> str | None:
            handle = self.host.handle(module_id)
            call = self._call_for(envelope)
            try:
                async with self.host.scheduler(module_id).slot(envelope.priority, envelope.deadline):
                    await handle.invoke(envelope.action, envelope.payload, call)
            except HubError as exc:
                log.warning("event delivery failed", extra={"module_id": module_id, "code": exc.code})
                return None
            return module_id

        delivered = [m for m in await asyncio.gather(*(deliver(m) for m in module_ids)) if m]
        result = {"delivered": len(delivered), "modules": delivered}
        result_json = encode_json(result)
        receipt = await usage.record(envelope, "broadcast", {}, 0.0, len(result_json), admission)
        return CallResult(envelope.id, envelope.correlation_id, "broadcast", result, receipt,
                          result_json=result_json, headers=admission.headers)


class _CallScope:
    """One call's bookkeeping around the stages: in-flight count (for draining), trace id,
    metrics by door/action/code, and the deadline's TimeoutError as DEADLINE_EXCEEDED."""

    __slots__ = ("action_label", "module", "pipeline", "request", "started", "tenant_id", "token", "trace_id")

    def __init__(self, pipeline: Pipeline, request: CallRequest) -> None:
        self.pipeline = pipeline
        self.request = request
        self.trace_id = request.trace_id or new_trace_id()
        self.action_label = "other"
        #: known once authenticated and routed; the live feed's who and where
        self.tenant_id = ""
        self.module: str | None = None

    def __enter__(self) -> _CallScope:
        self.pipeline._enter()  # raises when the hub is draining
        self.started = time.perf_counter()
        self.token = trace_id_var.set(self.trace_id)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        pipeline, request = self.pipeline, self.request
        pipeline._leave()
        if exc is None or isinstance(exc, GeneratorExit):
            code = "OK"
        elif isinstance(exc, HubError):
            code = exc.code
        elif isinstance(exc, TimeoutError):
            code = DeadlineExceeded.code
        elif isinstance(exc, asyncio.CancelledError):
            code = "CANCELLED"
        else:
            code = "INTERNAL"
        if code != "OK":
            # the action as sent may be anything (it failed validation, perhaps): bounded in the log
            log.info("call failed", extra={"code": code, "action": str(request.action)[:ACTION_MAX_LENGTH],
                                           "door": request.door})
        seconds = time.perf_counter() - self.started
        pipeline.metrics.observe_call(request.door, self.action_label, code, seconds)
        pipeline.calls_total += 1
        pipeline.errors_total += code != "OK"
        feed = pipeline.call_feed
        if feed:  # the whole cost of the live feed while nobody watches
            feed.publish_call(action=str(request.action)[:ACTION_MAX_LENGTH], module=self.module, status=code,
                              latency_ms=round(seconds * 1000, 3), tenant_id=self.tenant_id, door=request.door)
        trace_id_var.reset(self.token)
        if isinstance(exc, TimeoutError):
            raise DeadlineExceeded(t("errors.pipeline.call_deadline_passed_before")) from None
