"""What the console shows, gathered from parts the hub already has: no second bookkeeping.

Modules and their load come from the module host; tenants from tenancy; calls, invoices and
latencies from the usage ledger file, read in a worker thread (so they survive a restart and
never stall the loop); the fleet's peers from federation.  What a viewer gets is scoped:
super_admin sees the whole hub, everyone else their own tenant only, and money and call counts
only with billing:read.  Ledger reads are bounded: ``READERS`` worker threads at most, and an
answer is reused for ``REUSE_S`` by viewers of the same scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from daemon.console.events import Viewer, iso
from daemon.core.i18n import language_var, t
from daemon.core.pipeline import Pipeline
from daemon.metering.billing import build_invoice, parse_period
from daemon.metering.ledger.chain import connect_ro, verify
from daemon.metering.ledger.process import LedgerProcess
from daemon.metering.ledger.reader import ledger_head
from daemon.metering.ledger.totals import read_totals
from daemon.runtime.config import PlanConfig
from daemon.tenancy.records import Tenant
from daemon.tenancy.store import TenancyStore

#: module latencies are the ledger's compute times of the last minute, at most this many calls
LATENCY_WINDOW_S = 60
LATENCY_SAMPLES = 10_000
#: how long latencies read from the ledger are reused by the live feed
LATENCY_REUSE_S = 10.0
#: ledger reads running at once (worker threads), whoever asks
READERS = 2
#: how long one scope's overview or usage answer is reused
REUSE_S = 1.5


@dataclass(frozen=True, slots=True)
class HubFacts:
    """The hub's parts the console reads; callables are read at each use (peers join later)."""

    pipeline: Pipeline
    store: TenancyStore
    ledger: LedgerProcess
    plans: Mapping[str, PlanConfig]
    default_plan: str
    node_name: str
    version: str
    started_at: float  # wall clock
    readiness: Callable[[], dict[str, Any]]
    doors: Callable[[], list[dict[str, str]]]
    peers: Callable[[], list[dict[str, Any]] | None]  # None: the hub federates with nobody


# -- ledger reads (sync: run in a worker thread) ------------------------------------------------
def first_seq_since(conn: sqlite3.Connection, ts_us: int) -> int:
    """The first seq at or after ``ts_us``: a binary search, since ts_us never decreases along seq."""
    low, high = 1, int(conn.execute("SELECT seq FROM head").fetchone()[0]) + 1
    while low < high:
        middle = (low + high) // 2
        row = conn.execute("SELECT ts_us FROM events WHERE seq = ?", (middle,)).fetchone()
        if row is None or row[0] >= ts_us:
            high = middle
        else:
            low = middle + 1
    return low


def read_usage_series(path: Path, start_us: int, minutes: int, tenant_id: str | None) -> list[dict[str, Any]]:
    """Calls per minute from ``start_us`` by (tenant, action); one tenant's only unless ``tenant_id`` is None."""
    if not path.is_file():
        return []
    with contextlib.closing(connect_ro(path)) as conn:
        first = first_seq_since(conn, start_us)
        query = ("SELECT tenant_id, action, (ts_us - ?) / 60000000, total(api_calls) FROM events "
                 "WHERE seq >= ? AND kind = 'usage'")
        args: list[Any] = [start_us, first]
        if tenant_id is not None:
            query, args = query + " AND tenant_id = ?", [*args, tenant_id]
        rows = conn.execute(query + " GROUP BY 1, 2, 3", args).fetchall()
    series: dict[tuple[str, str], list[int]] = {}
    for tenant, action, minute, calls in rows:
        if 0 <= minute < minutes:
            series.setdefault((tenant, action), [0] * minutes)[int(minute)] += int(calls)
    return [{"tenant_id": tenant, "action": action, "counts": counts}
            for (tenant, action), counts in sorted(series.items())]


def read_tenant_calls(path: Path, since_us: tuple[int, int], tenant_id: str | None = None
                      ) -> dict[str, tuple[int, int]]:
    """Per tenant: calls since ``since_us[0]`` (today) and since ``since_us[1]`` (the period); one tenant's
    only unless ``tenant_id`` is None."""
    if not path.is_file():
        return {}
    today_us, period_us = since_us
    with contextlib.closing(connect_ro(path)) as conn:
        first = first_seq_since(conn, min(today_us, period_us))
        where, args = ("", ()) if tenant_id is None else (" AND tenant_id = ?", (tenant_id,))
        rows = conn.execute(
            "SELECT tenant_id, total(CASE WHEN ts_us >= ? THEN api_calls ELSE 0 END),"
            " total(CASE WHEN ts_us >= ? THEN api_calls ELSE 0 END)"
            f" FROM events WHERE seq >= ? AND kind = 'usage'{where} GROUP BY tenant_id",
            (today_us, period_us, first, *args)).fetchall()
    return {tenant: (int(today), int(period)) for tenant, today, period in rows}


def read_latencies(path: Path, since_us: int) -> dict[str, tuple[float, float]]:
    """Per module: (p50, p99) of the compute ms of its calls since ``since_us`` (the last ones only)."""
    if not path.is_file():
        return {}
    with contextlib.closing(connect_ro(path)) as conn:
        first = first_seq_since(conn, since_us)
        rows = conn.execute("SELECT module, compute_ms FROM events WHERE seq >= ? AND kind = 'usage' "
                            "ORDER BY seq DESC LIMIT ?", (first, LATENCY_SAMPLES)).fetchall()
    by_module: dict[str, list[float]] = {}
    for module, compute_ms in rows:
        by_module.setdefault(module, []).append(float(compute_ms))
    return {module: _percentiles(values) for module, values in by_module.items()}


def _percentiles(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return round(values[0], 3), round(values[0], 3)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return round(cuts[49], 3), round(cuts[98], 3)


class Reuse:
    """Answers by key, each reused for ``max_age_s`` (sans-IO: ``now`` is given); at most ``size`` kept."""

    def __init__(self, max_age_s: float = REUSE_S, size: int = 256) -> None:
        self.max_age_s = max_age_s
        self.size = size
        self._answers: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, now: float) -> Any | None:
        """The answer kept for ``key`` when it is younger than ``max_age_s``; None otherwise."""
        kept = self._answers.get(key)
        return kept[1] if kept is not None and now - kept[0] < self.max_age_s else None

    def put(self, key: Any, value: Any, now: float) -> None:
        """Keep ``value`` for ``key``; stale answers go first when ``size`` are kept."""
        if len(self._answers) >= self.size:
            self._answers = {k: v for k, v in self._answers.items() if now - v[0] < self.max_age_s}
            if len(self._answers) >= self.size:
                self._answers.clear()
        self._answers[key] = (now, value)


def _us(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


class Overview:
    """Builds the console's JSON from ``HubFacts``; remembers the last ledger verification."""

    def __init__(self, facts: HubFacts, *, clock: Callable[[], float] = time.time) -> None:
        self.facts = facts
        self.clock = clock
        #: the last end-to-end check of the ledger's chain: (ok, when); (None, None) before the first
        self.verified: tuple[bool | None, float | None] = (None, None)
        self._latencies: tuple[float, dict[str, tuple[float, float]]] = (float("-inf"), {})
        # whoever asks, at most READERS ledger reads run in worker threads at once
        self._readers = asyncio.Semaphore(READERS)
        self._reuse = Reuse()

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._readers:
            return await asyncio.to_thread(fn, *args)

    # -- pieces ----------------------------------------------------------------------------------
    def node(self) -> dict[str, Any]:
        """This hub: name, id, version, uptime, doors and whether it is ready (and why not)."""
        facts, now = self.facts, self.clock()
        state = facts.readiness()
        lang = language_var.get()
        texts = []
        if state.get("state") != "open":
            texts.append(t("errors.console.not_open", state=state.get("state")))
        if state.get("ledger") != "ok":
            texts.append(t("errors.console.ledger_down"))
        texts += [t("errors.console.module_failed", module=f["module"]) for f in state.get("failed_modules", [])]
        reasons = [text.render(lang) for text in texts]
        return {"name": facts.node_name, "node_id": facts.pipeline.node_id or None, "version": facts.version,
                "started_at": iso(facts.started_at), "uptime_s": round(now - facts.started_at, 1),
                "doors": facts.doors(), "ready": bool(state.get("ready")), "reasons": reasons}

    def modules(self, viewer: Viewer) -> list[dict[str, Any]]:
        """The modules ``viewer`` may see (a tenant's attached ones only to that tenant), with their load."""
        host = self.facts.pipeline.host
        stats = host.stats()
        latencies = self._latencies[1]
        out = []
        for handle in host.handles():
            if not viewer.everything and not host.router.visible(handle.module_id, viewer.tenant_id):
                continue
            running, queued = stats.get(handle.module_id, (0, 0))
            load: tuple[int | None, int | None] = (running, queued)
            if not viewer.everything and host.router.visible(handle.module_id, ""):
                load = (None, None)  # a shared module's load is everyone's calls: not a tenant's to see
            p50, p99 = latencies.get(handle.module_id, (None, None))
            provider = handle.describe().get("provider")
            out.append({"name": handle.module_id, "state": "loaded", "error": None,
                        "provider": provider if isinstance(provider, str) else None,
                        "capabilities": sorted(handle.capabilities), "in_flight": load[0], "queue_depth": load[1],
                        "p50_ms": p50, "p99_ms": p99})
        # why a module failed (paths, library errors) is the operator's business: names only for tenants
        out += [{"name": failed.name, "state": "failed", "error": failed.error if viewer.everything else None,
                 "provider": None, "capabilities": [], "in_flight": 0, "queue_depth": 0, "p50_ms": None,
                 "p99_ms": None} for failed in host.failed.values()]
        return sorted(out, key=lambda module: module["name"])

    def peers(self, viewer: Viewer) -> list[dict[str, Any]]:
        """The fleet's peers, for super_admin only; [] for everyone else and on a hub with no fleet."""
        views = self.facts.peers() if viewer.everything else None
        return [{"node_id": view["node_id"], "site": view["site"], "state": view["state"],
                 "rtt_ms": view["rtt_ms"], "capabilities": list(view["capabilities"])} for view in views or []]

    async def refresh_latencies(self, *, max_age_s: float = 0.0) -> None:
        """Read module latencies from the ledger again, unless the last read is younger than ``max_age_s``."""
        now = self.clock()
        if now - self._latencies[0] < max_age_s:
            return
        since = _us(datetime.fromtimestamp(now - LATENCY_WINDOW_S, UTC))
        self._latencies = (now, await self._read(read_latencies, self.facts.ledger.path, since))

    async def verify_ledger(self) -> None:
        """Walk the ledger's chain end to end in a worker thread and remember the verdict."""
        result = await self._read(verify, self.facts.ledger.path)
        self.verified = (result.ok, self.clock())

    async def tenants(self, viewer: Viewer) -> list[Tenant]:
        """Every tenant for super_admin; the viewer's own otherwise."""
        store = self.facts.store
        if viewer.everything:
            return await store.run(store.list_tenants)
        tenant = await store.run(store.find_tenant, viewer.tenant_id)
        return [tenant] if tenant is not None else []

    # -- the routes' answers -----------------------------------------------------------------------
    async def overview(self, viewer: Viewer) -> dict[str, Any]:
        """``GET /v1/console/overview``."""
        await self.refresh_latencies(max_age_s=1.0)
        # a call answered since makes the answer stale: what a caller just did shows at once
        key = ("tenants", viewer.scope, self.facts.pipeline.calls_total)
        kept = self._reuse.get(key, self.clock())
        if kept is None:
            tenants = await self.tenants(viewer)
            kept = await self._read(self._tenant_rows, tenants, self.clock(), viewer)
            self._reuse.put(key, kept, self.clock())
        rows, head = kept
        ok, at = self.verified
        return {
            "viewer": {"role": viewer.role, "tenant_id": viewer.tenant_id},
            "node": self.node(),
            "modules": self.modules(viewer),
            "tenants": rows,
            "ledger": {"last_seq": head, "verified": {"ok": ok, "at": iso(at) if at is not None else None},
                       "writer": "up" if self.facts.ledger.healthy else "down"},
            "peers": self.peers(viewer),
            "federation": self.facts.peers() is not None,
        }

    def _tenant_rows(self, tenants: list[Tenant], now: float, viewer: Viewer
                     ) -> tuple[list[dict[str, Any]], int]:
        """Calls today and this month, balance and estimated invoice per tenant (worker thread);
        name, plan and status only for a viewer without billing:read."""
        facts = self.facts
        path = facts.ledger.path
        if not viewer.billing:
            return [{"id": tenant.id, "name": tenant.name, "plan": tenant.plan, "status": tenant.status}
                    for tenant in tenants], ledger_head(path)[0]
        moment = datetime.fromtimestamp(now, UTC)
        period = parse_period(moment.strftime("%Y-%m"))
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        calls = read_tenant_calls(path, (_us(day), _us(period.start)),
                                  None if viewer.everything else viewer.tenant_id)
        rows = []
        for tenant in tenants:
            plan_name = tenant.plan if tenant.plan in facts.plans else facts.default_plan
            plan = facts.plans[plan_name]
            estimate: Decimal | None = None
            if path.is_file():
                totals = read_totals(path, tenant.id, period.start, period.end)
                estimate = build_invoice(totals, plan_name, plan, period, tenant.timezone, tenant.name).subtotal
            balance = facts.ledger.balance(tenant.id)
            today, this_period = calls.get(tenant.id, (0, 0))
            rows.append({"id": tenant.id, "name": tenant.name, "plan": tenant.plan, "status": tenant.status,
                         "calls_today": today, "calls_period": this_period,
                         "credits_balance": f"{balance:f}" if balance is not None else None,
                         "currency": plan.currency.upper(),
                         "estimated_invoice": f"{estimate:f}" if estimate is not None else None})
        return rows, ledger_head(path)[0]

    async def usage(self, viewer: Viewer, minutes: int) -> dict[str, Any]:
        """``GET /v1/console/usage``: calls per minute over the last ``minutes``, the current one last."""
        now = datetime.fromtimestamp(self.clock(), UTC).replace(second=0, microsecond=0)
        start = now - timedelta(minutes=minutes - 1)
        key = ("usage", viewer.scope, start, minutes, self.facts.pipeline.calls_total)
        series = self._reuse.get(key, self.clock())
        if series is None:
            series = await self._read(read_usage_series, self.facts.ledger.path, _us(start), minutes,
                                      None if viewer.everything else viewer.tenant_id)
            self._reuse.put(key, series, self.clock())
        return {"start": start.isoformat(), "minutes": minutes, "series": series}
