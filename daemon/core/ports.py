"""The pipeline's ports: what it needs from the rest of the hub, as Protocols.

The pipeline depends on these and on nothing above ``core/``; the rest of the hub
provides them:

- ``Authenticator`` — ``tenancy/authn.py``
- ``UsageGate`` and its ``Admission`` — ``metering/gate.py``
- ``ModuleSet`` and ``ModuleHandle`` — ``hosting/module_host.py`` (local modules) and
  ``hosting/remote_module.py`` (attached ones, which raise ``ModuleGone``)
- ``Forwarder`` — ``federation/forwarder.py``; ``NoPeers`` on a hub with no fleet
- ``CallObserver`` — ``runtime/metrics.py`` (``HubMetrics``)
- ``CallFeed`` — ``console/events.py`` (``EventBus``), the live view of answered calls
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.core.envelope import CapabilityEntry, Credentials, Envelope, Forwarded, Principal, ProgressPart, Receipt
from daemon.core.errors import CapabilityNotFound, Unavailable
from daemon.core.i18n import t
from daemon.core.router import Router
from daemon.core.scheduler import ModuleScheduler
from modules.sdk import Call, CapabilitySpec


class Authenticator(Protocol):
    """Who is calling, and may they do this."""

    async def authenticate(self, credentials: Credentials, *, ip: str = "", user_agent: str = "") -> Principal:
        """The caller behind ``credentials``; UNAUTHENTICATED when there is none."""
        ...

    def authorize(self, principal: Principal, permission: str) -> None:
        """Return when ``principal`` holds ``permission``; PERMISSION_DENIED otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class Admission:
    """What the usage gate decided before execution; handed back to it at record time."""

    headers: dict[str, str] = field(default_factory=dict)
    token: Any = None


class UsageGate(Protocol):
    """Rate limits and credits before a call; its durable usage record after."""

    async def admit(self, envelope: Envelope) -> Admission:
        """Admit the call or raise RATE_LIMITED / INSUFFICIENT_CREDITS."""
        ...

    async def record(
        self, envelope: Envelope, module: str, usage: dict[str, float], compute_ms: float, bytes_out: int,
        admission: Admission,
    ) -> Receipt:
        """Record the call's usage durably; the receipt proves it was committed."""
        ...

    def release(self, admission: Admission) -> None:
        """The admitted call ended without a record (failed, cancelled): undo its reservation."""


class ModuleGone(Unavailable):
    """The module disconnected before answering (a remote module's socket closed)."""


class ModuleHandle(Protocol):
    """What the pipeline calls; local and remote modules both provide it."""

    module_id: str
    kind: str  # "local" | "remote"
    concurrency: int

    @property
    def capabilities(self) -> dict[str, CapabilitySpec]:
        """Action -> what the module declared for it."""
        ...

    def check_input(self, action: str, payload: Any) -> None:
        """Raise VALIDATION_ERROR naming the JSON pointer when ``payload`` breaks the input schema."""

    async def invoke(self, action: str, payload: Any, call: Call) -> Any:
        """Run ``action`` on an already checked payload; the result."""

    def stream(self, action: str, payload: Any, call: Call) -> AsyncIterator[Any]:
        """Run a streaming ``action``: ``Progress`` parts, then the result."""
        ...

    def describe(self) -> dict[str, Any]:
        """Extra facts shown in /v1/capabilities (the execution provider, the owner)."""
        ...


@dataclass(frozen=True, slots=True)
class FailedModule:
    """An enabled module that did not start, and why."""

    name: str
    error: str


class ModuleSet(Protocol):
    """The modules of this hub, their router and their schedulers, kept in step."""

    router: Router
    failed: dict[str, FailedModule]

    def handle(self, module_id: str) -> ModuleHandle:
        """The module ``module_id`` (one the router returned)."""
        ...

    def handles(self) -> list[ModuleHandle]:
        """Every module up now."""
        ...

    def scheduler(self, module_id: str) -> ModuleScheduler:
        """The queue and slots of ``module_id``."""
        ...

    def stats(self) -> dict[str, tuple[int, int]]:
        """Module id -> (calls in flight, calls queued)."""
        ...


class Forwarder(Protocol):
    """Where a call goes when no local module has its action (federation).

    The pipeline asks ``serves`` first, so a call no peer can take is refused before it is
    admitted; then it admits the call against the caller's own limits and credits, forwards it
    and records the peer's answer in this hub's ledger (served-by-peer).
    """

    def serves(self, envelope: Envelope) -> bool:
        """True when some peer advertises ``envelope``'s action and the call may still hop."""
        ...

    def check_input(self, envelope: Envelope) -> None:
        """VALIDATION_ERROR when the payload breaks the input schema the peers advertise (before admission)."""

    async def forward(self, envelope: Envelope) -> Forwarded:
        """Have a peer serve ``envelope``; CAPABILITY_NOT_FOUND, UNAVAILABLE or the peer's own error."""
        ...

    def forward_stream(self, envelope: Envelope) -> AsyncIterator[ProgressPart | Forwarded]:
        """A streaming call served by a peer: its progress parts, then its answer; closing it cancels there."""
        ...

    def capabilities(self) -> list[CapabilityEntry]:
        """What the peers serve that this hub does not, for /v1/capabilities (origin "peer:<node id>")."""
        ...


class NoPeers:
    """The federation hook of a hub with no fleet: nothing to forward to."""

    def serves(self, envelope: Envelope) -> bool:
        """Never."""
        return False

    def check_input(self, envelope: Envelope) -> None:
        """Nothing to check against."""

    async def forward(self, envelope: Envelope) -> Forwarded:
        """Always CAPABILITY_NOT_FOUND."""
        raise not_found(envelope)

    async def forward_stream(self, envelope: Envelope) -> AsyncIterator[ProgressPart | Forwarded]:
        """Always CAPABILITY_NOT_FOUND."""
        raise not_found(envelope)
        yield  # pragma: no cover - makes this an async generator

    def capabilities(self) -> list[CapabilityEntry]:
        """None."""
        return []


def not_found(envelope: Envelope) -> CapabilityNotFound:
    """The one CAPABILITY_NOT_FOUND of a call that neither this hub nor its peers can serve."""
    return CapabilityNotFound(
        t("errors.ports.no_module_hub_peers", action=envelope.action),
        {"action": envelope.action},
    )


class CallFeed(Protocol):
    """Who watches answered calls live (the console's event bus); false while nobody listens."""

    def __bool__(self) -> bool: ...

    def publish_call(self, *, action: str, module: str | None, status: str, latency_ms: float,
                     tenant_id: str, door: str) -> None:
        """One answered call: no payloads, only what a live view shows."""
        ...


class CallObserver(Protocol):
    """Counts answered calls (the hub's Prometheus metrics)."""

    def observe_call(self, door: str, action: str, code: str, seconds: float) -> None:
        """One call answered through ``door`` with result ``code`` after ``seconds``."""
