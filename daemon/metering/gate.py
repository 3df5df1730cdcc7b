"""The usage gate: rate limits and credits before a call, the durable usage record after it.

The pipeline calls ``admit`` after authentication and before executing, and
``record`` after the module answered and before replying::

    admission = await gate.admit(envelope)          # may raise RateLimited 429 / CreditsExhausted 402
    result = await execute(...)                     # failed: drop the admission (or gate.release it)
    receipt = await gate.record(envelope, module_id, usage, compute_ms, bytes_out, admission)
    reply(result, receipt, headers=admission.headers)   # RateLimit-* on success replies too

Limits (plan ``rate_limits`` and the key's own ``Principal.rate_limit``):

| metric          | algorithm      | cost at admit         | charged after the call  |
|-----------------|----------------|-----------------------|-------------------------|
| api_calls       | sliding window | 1                     | -                       |
| compute_time    | token bucket   | must not be in debt   | the call's compute ms   |
| bandwidth       | leaky bucket   | bytes in              | bytes out               |
| storage_bytes   | fixed window   | must not be over      | units["storage_bytes"]  |

All limiters are checked before any is consumed, so a refused call leaves no
trace in any of them.  Limit state lives in memory only: a restart gives every
key and tenant fresh windows and full buckets (at most one extra window of
calls per restart).  A limiter back at rest (its window over, its bucket full or
empty again) is dropped at the next sweep, at most every ``SWEEP_EVERY_S``: a new one
would decide the same, so memory follows the keys and tenants active lately, not
every key ever seen.  Credits are not in-memory state: they are ledger events,
and the balances are rebuilt from the ledger at open.

Prepaid credits: a tenant is prepaid once it has a credit balance (its first
top-up).  ``admit`` reserves the plan's ``call_price`` in memory, so concurrent
calls cannot overspend a balance; ``record`` turns the reservation into a
debit in the same ledger entry as the usage.  A call that fails before
``record`` gives its reservation back when its Admission is dropped (a weakref
finalizer) or at once with ``release``.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from daemon.core.envelope import Envelope, Principal, Receipt
from daemon.core.errors import ConfigError, CreditsExhausted, ModuleError, RateLimited, ValidationError
from daemon.core.fastinit import fast_init
from daemon.core.i18n import t
from daemon.core.ports import Admission
from daemon.metering.ledger.events import MAX_BYTES, MAX_COMPUTE_MS, UsageEvent
from daemon.metering.ledger.writer import Ledger
from daemon.metering.ratelimit import Decision, FixedWindow, LeakyBucket, Limiter, SlidingWindow, TokenBucket
from daemon.runtime.config import PlanConfig, parse_rate

log = logging.getLogger(__name__)

#: the seed's metric -> algorithm table
ALGORITHMS: dict[str, Callable[[float, float], Limiter]] = {
    "api_calls": SlidingWindow,
    "compute_time": TokenBucket,  # quota in compute milliseconds
    "bandwidth": LeakyBucket,  # quota in bytes (in + out)
    "storage_bytes": FixedWindow,  # quota in bytes reported by modules
}

#: a prepaid tenant refused for credits re-reads its balance from disk at most this often
BALANCE_REFRESH_S = 1.0
#: how often (gate clock seconds) admission drops the limiters that are back at rest
SWEEP_EVERY_S = 60.0

RefusalHook = Callable[[Principal, str], object]


@fast_init
@dataclass(frozen=True, slots=True, weakref_slot=True)
class Ticket:
    """The gate's part of an Admission (its ``token``): what record will debit."""

    tenant_id: str
    plan: str
    price: Decimal  # debited from credits on record; 0 for a postpaid tenant
    reservation: int = 0  # 0 when nothing is reserved


@dataclass(slots=True)
class _Check:
    reason: str
    limiter: Limiter
    cost: float
    window_s: float
    #: an api_calls check: its quota goes into the RateLimit-* headers of every admitted call
    calls: bool = False
    #: its RateLimit-Limit and RateLimit-Policy values, the same for every call (made at first use)
    fixed: tuple[str, str] | None = None


class UsageGate:
    """Rate limits + credits + the usage record; one per hub, used on the loop only."""

    def __init__(
        self,
        ledger: Ledger,
        plans: Mapping[str, PlanConfig],
        registry: CollectorRegistry | None = None,
        *,
        on_refusal: RefusalHook | None = None,
        default_plan: str = "starter",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if default_plan not in plans:
            raise ConfigError(f"plans: the default plan {default_plan!r} is not configured")
        for name, plan in plans.items():
            for metric in plan.rate_limits:
                if metric not in ALGORITHMS:
                    raise ConfigError(f"plans.{name}.rate_limits.{metric}: unknown metric, "
                                      f"use one of {sorted(ALGORITHMS)}")
        self._ledger = ledger
        self._plans = dict(plans)
        self._default = default_plan
        self._on_refusal = on_refusal
        self._clock = clock
        self._wall = wall_clock
        self._tenant_limits: dict[tuple[str, str, str], Limiter] = {}  # (tenant, plan, metric)
        self._key_limits: dict[tuple[str, str], SlidingWindow] = {}  # (key, rate text)
        self._reserved: dict[str, Decimal] = {}
        self._reservations: dict[int, tuple[str, Decimal]] = {}
        self._tokens = itertools.count(1)
        self._refreshed: dict[str, float] = {}
        self._swept = -math.inf
        #: each caller's limiter checks (key, its rate, tenant, plan); cleared with every sweep
        self._caller_checks: dict[tuple[str, str | None, str, str], list[_Check]] = {}
        self._m_refusals = Counter("democratic_ai_usage_refusals", "Calls refused before execution",
                                   ["reason"], registry=registry if registry is not None else CollectorRegistry())

    # -- admission -------------------------------------------------------------------------

    def admit(self, envelope: Envelope, now: float | None = None) -> Coroutine[Any, Any, Admission]:
        """The pipeline's entry: limits and credits for this envelope's caller.

        ``admit_call``'s coroutine itself, not one awaiting it: one frame less on every call.
        """
        return self.admit_call(envelope.principal, envelope.action, envelope.bytes_in, now)

    async def admit_call(self, principal: Principal, action: str, bytes_in: int = 0,
                         now: float | None = None) -> Admission:
        """Check the key's and the plan's limits and the credits; reserve one call's price.

        Raises RateLimited (with Retry-After and RateLimit-* headers) or CreditsExhausted;
        a refused call consumes nothing.
        """
        now = self._clock() if now is None else now
        if now - self._swept >= SWEEP_EVERY_S:
            self.sweep(now)
        plan_name, plan = self._plan(principal)
        checks = self._checks(principal, plan_name, plan, max(0, bytes_in))
        # one pass: each limiter decides once; the headers follow the api_calls quota closest to running out
        refused = False
        closest: tuple[_Check, Decision] | None = None
        decisions = []
        for c in checks:
            decision = c.limiter.peek(now, c.cost)
            decisions.append(decision)
            if not decision.allowed:
                refused = True
            elif c.calls and (closest is None or decision.remaining / decision.limit
                              < closest[1].remaining / closest[1].limit):
                closest = (c, decision)
        if refused:
            await self._refuse_limits(principal, checks, decisions)
        balance = self._ledger.balance(principal.tenant_id)
        # postpaid (no balance) needs no await: the usual call never suspends here
        price = Decimal(0) if balance is None else await self._credits(principal, plan)
        for check in checks:
            # every limiter allowed this cost at this instant: take it without deciding again
            check.limiter.charge(now, check.cost)
        if price:
            ticket = Ticket(principal.tenant_id, plan_name, price, next(self._tokens))
            self._reservations[ticket.reservation] = (principal.tenant_id, price)
            self._reserved[principal.tenant_id] = self._reserved.get(principal.tenant_id, Decimal(0)) + price
            # a call that dies before record must not hold its reservation forever
            weakref.finalize(ticket, self._unreserve, ticket.reservation)
        else:
            ticket = Ticket(principal.tenant_id, plan_name, price)
        if closest is None:
            return Admission(headers={}, token=ticket)
        headers = _headers(*closest)
        return Admission(headers=headers, token=ticket)

    async def _refuse_limits(self, principal: Principal, checks: list[_Check], decisions: list[Decision]) -> None:
        """RATE_LIMITED for the refusal that lasts longest, with Retry-After and its RateLimit-* fields."""
        refused = [(c, d) for c, d in zip(checks, decisions, strict=True) if not d.allowed]
        check, decision = max(refused, key=lambda cd: cd[1].retry_after_s)
        await self._refuse(principal, f"rate_limited_{check.reason}")
        headers = _headers(check, decision)
        retry = max(1, math.ceil(decision.retry_after_s))
        headers["Retry-After"] = str(retry)
        raise RateLimited(t("errors.gate.rate_limit_reached_retry", limit=_describe(check), retry=retry),
                          retry_after=retry, headers=headers, details={"limit": check.reason})

    @property
    def limiters(self) -> int:
        """How many per-key and per-tenant limiters the gate holds now."""
        return len(self._key_limits) + len(self._tenant_limits)

    def sweep(self, now: float) -> None:
        """Drop the limiters back at rest and stale balance-refresh stamps (admission calls it)."""
        self._swept = now
        self._caller_checks.clear()  # they may hold limiters dropped here
        for key in [k for k, limiter in self._key_limits.items() if limiter.at_rest(now)]:
            del self._key_limits[key]
        for tenant_key in [k for k, limiter in self._tenant_limits.items() if limiter.at_rest(now)]:
            del self._tenant_limits[tenant_key]
        for tenant in [tid for tid, at in self._refreshed.items() if now - at >= BALANCE_REFRESH_S]:
            del self._refreshed[tenant]

    def release(self, admission: Admission) -> None:
        """Give back the call's credit reservation (the call failed); idempotent."""
        if isinstance(admission.token, Ticket):
            self._unreserve(admission.token.reservation)

    def _unreserve(self, reservation: int) -> None:
        held = self._reservations.pop(reservation, None)
        if held is not None:
            tenant, price = held
            left = self._reserved.get(tenant, Decimal(0)) - price
            if left > 0:
                self._reserved[tenant] = left
            else:
                self._reserved.pop(tenant, None)

    def _plan(self, principal: Principal) -> tuple[str, PlanConfig]:
        if principal.plan in self._plans:
            return principal.plan, self._plans[principal.plan]
        # a tenant on a plan this hub's config does not list still gets limits and prices
        log.warning("tenant %s has unknown plan %r; using %r", principal.tenant_id, principal.plan,
                    self._default)
        return self._default, self._plans[self._default]

    def _checks(self, principal: Principal, plan_name: str, plan: PlanConfig, bytes_in: int) -> list[_Check]:
        # a caller's checks are the same limiters call after call: built once, until a sweep drops limiters
        who = (principal.key_id or principal.subject, principal.rate_limit, principal.tenant_id, plan_name)
        checks = self._caller_checks.get(who)
        if checks is None:
            checks = self._caller_checks[who] = self._build_checks(principal, plan_name, plan)
        if "bandwidth" not in plan.rate_limits:
            return checks
        return [_Check(c.reason, c.limiter, float(bytes_in), c.window_s, c.calls) if c.reason == "plan_bandwidth"
                else c for c in checks]

    def _build_checks(self, principal: Principal, plan_name: str, plan: PlanConfig) -> list[_Check]:
        checks: list[_Check] = []
        if principal.rate_limit:
            key = principal.key_id or principal.subject
            limiter = self._key_limits.get((key, principal.rate_limit))
            if limiter is None:
                try:
                    count, window = parse_rate(principal.rate_limit)
                except ValueError:
                    log.warning("key %s has a bad rate limit %r; ignored", key, principal.rate_limit)
                else:
                    limiter = self._key_limits[(key, principal.rate_limit)] = SlidingWindow(count, window)
            if limiter is not None:
                checks.append(_Check("key_api_calls", limiter, 1.0, limiter.window_s, calls=True))
        costs = {"api_calls": 1.0, "compute_time": 0.0, "bandwidth": 0.0, "storage_bytes": 0.0}  # bytes: per call
        for metric in plan.rate_limits:
            tenant_limiter = self._tenant_limiter(principal.tenant_id, plan_name, plan, metric)
            checks.append(_Check(f"plan_{metric}", tenant_limiter, costs[metric], tenant_limiter.window_s,
                                 calls=metric == "api_calls"))
        return checks

    def _tenant_limiter(self, tenant: str, plan_name: str, plan: PlanConfig, metric: str) -> Limiter:
        limiter = self._tenant_limits.get((tenant, plan_name, metric))
        if limiter is None:
            count, window = parse_rate(plan.rate_limits[metric])
            limiter = self._tenant_limits[(tenant, plan_name, metric)] = ALGORITHMS[metric](count, window)
        return limiter

    async def _credits(self, principal: Principal, plan: PlanConfig) -> Decimal:
        tenant = principal.tenant_id
        balance = self._ledger.balance(tenant)
        if balance is None:
            return Decimal(0)  # postpaid: billed by invoice
        price = Decimal(plan.call_price)
        if balance - self._reserved.get(tenant, Decimal(0)) >= price:
            return price
        now = self._clock()
        if now - self._refreshed.get(tenant, -math.inf) >= BALANCE_REFRESH_S:
            # a top-up from the CLI (another process) shows up here, not only on our next write
            self._refreshed[tenant] = now
            balance = await self._ledger.refresh_balance(tenant) or Decimal(0)
            if balance - self._reserved.get(tenant, Decimal(0)) >= price:
                return price
        await self._refuse(principal, "credits_exhausted")
        raise CreditsExhausted(t("errors.gate.tenant_no_credits_left", tenant=principal.tenant_name or tenant),
                               {"balance": str(balance), "price": str(price)})

    async def _refuse(self, principal: Principal, reason: str) -> None:
        self._m_refusals.labels(reason).inc()
        if self._on_refusal is None:
            return
        try:
            result = self._on_refusal(principal, reason)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # an audit failure must not turn a 429 into a 500; it is logged loudly instead
            log.exception("on_refusal hook failed for %s (%s)", principal.subject, reason)

    # -- the record ------------------------------------------------------------------------

    async def record(
        self,
        envelope: Envelope,
        module: str,
        usage: Mapping[str, float] | None,
        compute_ms: float,
        bytes_out: int,
        admission: Admission,
        now: float | None = None,
    ) -> Receipt:
        """Write the call's usage (and credit debit) durably; the receipt goes in the reply.

        Raises ModuleError (the module reported impossible usage) or Unavailable (the
        ledger cannot write: full disk, I/O error); in both cases nothing is billed.
        """
        ticket = admission.token
        if not isinstance(ticket, Ticket):
            raise TypeError("record() needs the Admission that admit() returned")
        units = dict(usage or {})
        try:
            principal = envelope.principal
            event = UsageEvent(
                tenant_id=principal.tenant_id, subject=principal.subject, action=envelope.action,
                module=module, plan=ticket.plan, api_calls=1, compute_ms=float(compute_ms),
                bytes_in=max(0, int(envelope.bytes_in)), bytes_out=int(bytes_out), units=units,
                credits=-ticket.price, ts=self._wall(), trace_id=envelope.trace_id or envelope.id)
            try:
                if not _plainly_valid(event):
                    event.validate()  # the full check, and its precise message when it refuses
            except ValidationError as exc:
                # what the call measured is impossible: the module's fault (502), not the caller's
                raise ModuleError(t("errors.gate.module_reported_impossible_usage", message=exc.message)) from None
            receipt = await self._ledger.append(event, validated=True)
        finally:
            # recorded: the debit is in the balance now; failed: nothing billed. Either way.
            self._unreserve(ticket.reservation)
        now = self._clock() if now is None else now
        plan_name, plan = self._plan(envelope.principal)
        post = {"compute_time": float(compute_ms), "bandwidth": float(bytes_out),
                "storage_bytes": float(units.get("storage_bytes", 0.0))}
        for metric in plan.rate_limits:
            if post.get(metric):
                self._tenant_limiter(ticket.tenant_id, plan_name, plan, metric).charge(now, post[metric])
        return receipt


def _plainly_valid(event: UsageEvent) -> bool:
    """True only for a usage event that ``UsageEvent.validate`` would pass: the usual call's, checked in a
    few comparisons (no units, exact types, within the caps).  False means "ask validate", not "invalid"."""
    compute_ms, bytes_in, bytes_out, credits = event.compute_ms, event.bytes_in, event.bytes_out, event.credits
    return (
        not event.units and event.kind == "usage" and event.api_calls == 1
        and 0 < len(event.tenant_id) <= 256 and 0 < len(event.subject) <= 256 and 0 < len(event.action) <= 256
        and "@" not in event.subject
        and type(compute_ms) is float and 0.0 <= compute_ms <= MAX_COMPUTE_MS
        and type(bytes_in) is int and 0 <= bytes_in <= MAX_BYTES
        and type(bytes_out) is int and 0 <= bytes_out <= MAX_BYTES
        and type(credits) is Decimal and (not credits or (credits.is_finite() and credits < 0))  # 0: postpaid
        and type(event.ts) is float and 0.0 <= event.ts < math.inf
    )


def _headers(check: _Check, decision: Decision) -> dict[str, str]:
    """The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers), both spellings."""
    fixed = check.fixed
    if fixed is None:  # a limiter's limit and window never change
        limit = int(decision.limit)
        fixed = check.fixed = (str(limit), f'"{check.reason}";q={limit};w={int(check.window_s)}')
    remaining = max(0, int(decision.remaining))
    reset = max(0, math.ceil(decision.reset_s))
    return {
        "RateLimit-Limit": fixed[0],
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset),
        "RateLimit-Policy": fixed[1],
        "RateLimit": f'"{check.reason}";r={remaining};t={reset}',
    }


def _describe(check: _Check) -> str:
    scope, _, metric = check.reason.partition("_")
    who = "this key" if scope == "key" else "the plan"
    return f"{metric} ({who}, {check.limiter.limit:g} per {check.window_s:g} s)"
