"""In-memory stand-ins for the pipeline's ports, and an in-process hub built on them.

No sockets, no subprocess, no ledger: ``in_process_hub`` wires a real ``Pipeline``,
``ModuleHost`` (holding the built-in echo module and ``OrderModule``), ``HubMetrics``,
``HttpApi`` and ``McpEndpoint`` the way ``daemon/runtime/hub.py`` does, with
``FakeAuthenticator`` and ``FakeUsageGate`` in place of tenancy and metering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.api.http_api import ApiRequest, ApiResponse, HttpApi
from daemon.api.mcp.endpoint import McpEndpoint
from daemon.core.envelope import (
    CapabilityEntry,
    Credentials,
    Envelope,
    Forwarded,
    PeerReceipt,
    Principal,
    ProgressPart,
    Receipt,
    ServingModule,
)
from daemon.core.errors import PermissionDenied, Unauthenticated
from daemon.core.pipeline import Pipeline
from daemon.core.ports import Admission, NoPeers
from daemon.hosting.module_host import LocalModule, ModuleHost
from daemon.runtime.config import HttpConfig, ModulesConfig
from daemon.runtime.metrics import HubMetrics
from modules.sdk import Call, Module, capability

KEY = "dai_test_key"
VIEWER_KEY = "dai_viewer_key"


def principal(subject: str = "key:test", permissions: frozenset[str] = frozenset({"module:use", "module:read"}),
              ) -> Principal:
    """A caller of tenant t1 holding ``permissions``."""
    return Principal(tenant_id="t1", tenant_name="acme", plan="starter", role="user",
                     permissions=permissions, subject=subject, key_id=subject.removeprefix("key:"))


class FakeAuthenticator:
    """Known API keys -> principals; ``authorize`` checks the principal's own permissions."""

    def __init__(self, keys: Mapping[str, Principal] | None = None) -> None:
        self.keys = dict(keys) if keys is not None else {
            KEY: principal(),
            VIEWER_KEY: principal("key:viewer", frozenset({"module:read"})),
        }

    async def authenticate(self, credentials: Credentials, *, ip: str = "", user_agent: str = "") -> Principal:
        """The key's principal; UNAUTHENTICATED for a missing or unknown key."""
        found = self.keys.get(credentials.api_key or "")
        if found is None:
            raise Unauthenticated("no valid API key")
        return found

    def authorize(self, principal: Principal, permission: str) -> None:
        """PERMISSION_DENIED unless ``principal`` holds ``permission``."""
        if permission not in principal.permissions:
            raise PermissionDenied(f"{principal.subject} lacks {permission}", {"permission": permission})


@dataclass(frozen=True, slots=True)
class Recorded:
    """One usage record the gate was asked to make."""

    action: str
    module: str
    subject: str
    bytes_out: int


class FakeUsageGate:
    """Admits every call and records usage in lists (no limits, no ledger)."""

    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.recorded: list[Recorded] = []
        self.released: list[Admission] = []

    async def admit(self, envelope: Envelope) -> Admission:
        """Admit ``envelope``; the token is its position in ``admitted``."""
        self.admitted.append(envelope.action)
        return Admission(headers={"RateLimit-Remaining": "99"}, token=len(self.admitted))

    async def record(self, envelope: Envelope, module: str, usage: dict[str, float], compute_ms: float,
                     bytes_out: int, admission: Admission) -> Receipt:
        """Remember the record; the receipt's seq counts records from 1."""
        self.recorded.append(Recorded(envelope.action, module, envelope.principal.subject, bytes_out))
        return Receipt(seq=len(self.recorded), hash=f"h{len(self.recorded)}")

    def release(self, admission: Admission) -> None:
        """Remember the release (the real gate makes it a no-op once the call is recorded)."""
        self.released.append(admission)


class RecordingForwarder:
    """The federation hook: a fleet whose one peer serves the actions in ``peer_results`` (none by default).

    It remembers each action it was asked about, and answers as a peer would: the peer's node id,
    its module, the result and the peer's own receipt.
    """

    PEER = "12D3KooWPeerNodeForTests"

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.forwarded: list[Envelope] = []
        self.peer_results: dict[str, Any] = {}

    def serves(self, envelope: Envelope) -> bool:
        """True for the actions in ``peer_results``."""
        self.asked.append(envelope.action)
        return envelope.action in self.peer_results

    def check_input(self, envelope: Envelope) -> None:
        """The peer declares no schema: anything goes."""

    async def forward(self, envelope: Envelope) -> Forwarded:
        """The peer's canned answer, or CAPABILITY_NOT_FOUND as ``NoPeers`` answers."""
        if envelope.action not in self.peer_results:
            return await NoPeers().forward(envelope)
        self.forwarded.append(envelope)
        result = self.peer_results[envelope.action]
        return Forwarded(served_by=self.PEER, module="peer-echo", result=result,
                         result_json=json.dumps(result).encode(), usage={}, compute_ms=1.0,
                         receipt=PeerReceipt(self.PEER, 7, "ab" * 32))

    async def forward_stream(self, envelope: Envelope) -> AsyncIterator[ProgressPart | Forwarded]:
        """One progress part, then the answer."""
        yield ProgressPart(envelope.id, 0.5, "half way at the peer")
        yield await self.forward(envelope)

    def capabilities(self) -> list[CapabilityEntry]:
        """The peer's actions, as /v1/capabilities lists them."""
        return [CapabilityEntry(action=action, description="", input_schema={}, output_schema={}, streaming=False,
                                modules=(ServingModule(self.PEER, "peer"),), origin=f"peer:{self.PEER}")
                for action in sorted(self.peer_results)]


class OrderModule(Module):
    """One call at a time; a call with ``hold`` waits for ``release``; ``ran`` lists names in run order."""

    name = "order"
    concurrency = 1

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[str] = []
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    @capability("order.run", description="Appends payload.name to ran (after release, when payload.hold).")
    async def run(self, payload: dict[str, Any], call: Call) -> dict[str, Any]:
        """Record the call's name; hold the module's only slot first when asked to."""
        if payload.get("hold"):
            self.holding.set()
            await self.release.wait()
        self.ran.append(str(payload["name"]))
        return {"name": payload["name"]}


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds


@dataclass(slots=True)
class InProcessHub:
    """The wired parts, so tests reach both the front (api, mcp) and the fakes behind it."""

    pipeline: Pipeline
    host: ModuleHost
    auth: FakeAuthenticator
    gate: FakeUsageGate
    forwarder: RecordingForwarder
    metrics: HubMetrics
    api: HttpApi
    mcp: McpEndpoint
    order: OrderModule
    clock: FakeClock = field(default_factory=FakeClock)


@contextlib.asynccontextmanager
async def in_process_hub(state_dir: Path, *, allowed_origins: tuple[str, ...] = (), max_sessions: int = 1024,
                         max_sessions_per_tenant: int = 64, session_idle_s: float = 3600.0,
                         public_url: str = "", allowed_hosts: tuple[str, ...] = ()) -> AsyncIterator[InProcessHub]:
    """The hub's call path in memory: echo (started by the ModuleHost) and OrderModule, behind fakes."""
    host = ModuleHost(ModulesConfig(enabled=["echo"], threads=1), state_dir)
    await host.start()
    try:
        assert not host.failed, host.failed
        order = OrderModule()
        host.add(LocalModule(order))
        auth, gate, forwarder, metrics = FakeAuthenticator(), FakeUsageGate(), RecordingForwarder(), HubMetrics()
        pipeline = Pipeline(authenticator=auth, usage=gate, host=host, metrics=metrics, forwarder=forwarder)
        api = HttpApi(pipeline, metrics, readiness=lambda: {"ready": True})
        clock = FakeClock()
        http = HttpConfig(allowed_origins=list(allowed_origins), public_url=public_url,
                          allowed_hosts=list(allowed_hosts))
        mcp = McpEndpoint(api, http, max_sessions=max_sessions, max_sessions_per_tenant=max_sessions_per_tenant,
                          session_idle_s=session_idle_s, clock=clock)
        await mcp.start()
        try:
            yield InProcessHub(pipeline, host, auth, gate, forwarder, metrics, api, mcp, order, clock)
        finally:
            await mcp.close()
    finally:
        await host.stop()


def api_request(method: str, path: str, body: Any = None, *, key: str | None = KEY,
                headers: Mapping[str, str] | None = None, raw: bytes | None = None) -> ApiRequest:
    """An ApiRequest as a door would decode it: lower-case headers, ``body`` JSON-encoded unless ``raw``."""
    all_headers = {"content-type": "application/json", "x-trace-id": "trace-1"}
    if key is not None:
        all_headers["x-api-key"] = key
    all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return ApiRequest(method, path, all_headers, data, remote="127.0.0.1")


def body_json(response: ApiResponse) -> Any:
    """The response body decoded as JSON."""
    return json.loads(response.body)


async def wait_until(predicate: Callable[[], bool], *, turns: int = 100) -> None:
    """Let the loop run until ``predicate`` holds (no sleeping on wall time)."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")
