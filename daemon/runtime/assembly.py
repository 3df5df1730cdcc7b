"""Open the hub's stateful parts in order, each closed in reverse by the exit stack:
tenancy (+ bootstrap key) -> authenticator -> usage ledger -> usage gate."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from daemon.api.admin import AdminApi
from daemon.api.admin_routes import mount_admin
from daemon.api.http_api import HttpApi
from daemon.core.envelope import Principal
from daemon.metering.billing import UsageReporter
from daemon.metering.gate import UsageGate
from daemon.metering.ledger.process import LedgerProcess
from daemon.runtime.config import HubConfig
from daemon.runtime.metrics import HubMetrics
from daemon.tenancy.authn import Authenticator
from daemon.tenancy.records import AuditEvent
from daemon.tenancy.store import BOOTSTRAP_KEY_FILE, TenancyStore

log = logging.getLogger("democratic_ai.hub")

LEDGER_FILE = "ledger.db"


@dataclass(frozen=True, slots=True)
class Parts:
    """The stateful parts ``open_parts`` opened; ``bootstrap_key`` is set only on the very first start."""

    store: TenancyStore
    authenticator: Authenticator
    ledger: LedgerProcess
    usage: UsageGate
    reports: UsageReporter
    admin: AdminApi
    bootstrap_key: str | None

    def mount_admin(self, api: HttpApi) -> None:
        """Add the /v1/tenants, /v1/users, /v1/api-keys and /v1/auth/* routes to ``api``."""
        mount_admin(api, self.admin)


def announce_bootstrap_key(key: str, state_dir: Path, stream: TextIO | None = None) -> None:
    """Show the first start's admin key, but only on a terminal: anywhere else (the journal under
    systemd, a log file) whoever reads the logs would hold the key, so say where the file is."""
    stream = stream if stream is not None else sys.stderr
    path = state_dir / BOOTSTRAP_KEY_FILE
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # no real file behind it, or closed
        terminal = False
    if terminal:
        print(f"bootstrap admin key (shown once, also in {path}):\n  {key}", file=stream, flush=True)
    else:
        log.warning(f"bootstrap admin key created: read it from {path} (0600); it is shown only on a terminal",
                    extra={"path": str(path)})


async def open_parts(config: HubConfig, state_dir: Path, metrics: HubMetrics,
                     stack: contextlib.AsyncExitStack, *, on_ledger_lost: Callable[[str], None] | None = None) -> Parts:
    """Open tenancy, authenticator and ledger onto ``stack`` (closed in reverse); build gate, reports, admin on them.

    ``on_ledger_lost``: called when the ledger writer process died and no new one came up in time.
    """
    store = await stack.enter_async_context(TenancyStore(state_dir))
    bootstrap_key = await store.run(store.ensure_bootstrap)
    authenticator = await stack.enter_async_context(Authenticator(store, config.auth, state_dir))
    # the writer runs in its own process: sharing the loop's GIL cost every batch milliseconds
    ledger = await stack.enter_async_context(LedgerProcess(state_dir / LEDGER_FILE, config.ledger,
                                                           on_lost=on_ledger_lost))
    metrics.extra.append(ledger.metrics_text)

    async def audit_refusal(principal: Principal, reason: str) -> None:
        # counted per (tenant, reason) per minute: a caller over its limit cannot fill the audit log
        await authenticator.audit_refusal(AuditEvent(action="call.refused", actor=principal.subject,
                                                     tenant_id=principal.tenant_id, success=False, error=reason))

    async def timezone_of(tenant_id: str) -> str:
        # read when the invoice is made: a tenant created (or changed) after start has its own zone
        tenant = await store.run(store.find_tenant, tenant_id)
        return tenant.timezone if tenant is not None else "UTC"

    default_plan = "starter" if "starter" in config.plans else next(iter(config.plans))
    usage = UsageGate(ledger, config.plans, metrics.registry, on_refusal=audit_refusal, default_plan=default_plan)
    reports = UsageReporter(ledger, config.plans, default_plan=default_plan, timezone_of=timezone_of)
    admin = AdminApi(store, authenticator, plans=tuple(config.plans), open_prepaid_account=ledger.open_account)
    return Parts(store, authenticator, ledger, usage, reports, admin, bootstrap_key)
