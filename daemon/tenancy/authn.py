"""Who is calling: API keys and JWTs to a ``Principal``, RBAC checks, login and refresh.

This file orchestrates: the credential cache, the database lookups (through the store's
writer thread) and the audit log.  Signing and verifying a JWT is tokens.py (no I/O);
hashing and making secrets is secrets.py.

The hot path is one sha256 of the presented credential and one dict lookup: a credential
verified once is cached (keyed by its sha256) with its Principal until the earlier of its
own expiry and ``cache_max_age_s``.  Only a miss touches SQLite, through the store's writer
thread.

How a revocation reaches the cache:

- in this process (``revoke_key``, ``revoke``, AdminApi): the entry is dropped at once, and
  an epoch counter stops a lookup that was already in flight from caching a stale answer;
- from the CLI in another process: every ``recheck_interval_s`` (1 s) a background task
  reads ``PRAGMA data_version`` (changes only when another connection commits) and the
  store's ``generation`` (changes on writes through this connection that can invalidate a
  credential, like a tenant suspension); when either moved, the whole cache is dropped and
  refills on demand.  Other processes write to tenancy.db rarely (operator commands), so a
  full drop is simpler and cheaper than per-entry revalidation.  The same tick flushes the
  batched ``last_used_at`` of keys, so a request never waits for a write.

Before the caller is known it must cost little (guard.py): a credential that misses the
cache, a login, a refresh or a revocation first takes a token of the caller's IP (429
past it), and failures are audited as one row per (ip, reason) per minute with a count.
argon2id runs on its own bounded pool (passwords.py).  A refresh token used twice revokes
its whole family, the tokens issued from it included (tokens.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from daemon.core.envelope import Credentials, Principal
from daemon.core.errors import PermissionDenied, Unauthenticated
from daemon.core.i18n import Text, t
from daemon.runtime.config import AuthConfig
from daemon.tenancy import tokens
from daemon.tenancy.cache import Cached, CredentialCache
from daemon.tenancy.guard import AuthGuard
from daemon.tenancy.passwords import PasswordPool
from daemon.tenancy.rbac import allows, permissions_for
from daemon.tenancy.records import ApiKey, AuditEvent, Tenant, from_iso
from daemon.tenancy.secrets import KEY_PREFIX, generate_password, key_hash, load_jwt_secret
from daemon.tenancy.store import TenancyStore
from daemon.tenancy.tokens import TokenRejected, family_of

log = logging.getLogger(__name__)

_PURGE_EVERY_S = 3600.0


class Authenticator:
    """Turns credentials into a Principal; ``async with`` it to run the revocation recheck."""

    def __init__(
        self,
        store: TenancyStore,
        config: AuthConfig,
        state_dir: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        recheck_interval_s: float = 1.0,
        cache_max_age_s: float = 30.0,
        cache_size: int = 10_000,
    ) -> None:
        self._store = store
        self._config = config
        # read once at start-up, before serving (a tiny file)
        self._secret = load_jwt_secret(state_dir)
        self._clock = clock
        self._recheck_interval_s = recheck_interval_s
        self._cache_max_age_s = cache_max_age_s
        self._cache = CredentialCache(cache_size)
        self._used_keys: set[str] = set()
        self._seen_version: tuple[int, int] | None = None
        self._last_purge = 0.0
        self._task: asyncio.Task[None] | None = None
        self._dummy_hash: str | None = None
        self._guard = AuthGuard(store, config, clock)
        self._passwords = PasswordPool(config.login_threads, config.login_queue)

    # lifecycle

    async def start(self) -> None:
        """Note where the database stands and start the recheck task (idempotent)."""
        self._seen_version = (await self._store.run(self._store.data_version), self._store.generation)
        if self._task is None:
            self._task = asyncio.create_task(self._recheck_forever(), name="auth-recheck")

    async def aclose(self) -> None:
        """Stop the recheck task, write the last batch of key uses and failure tallies, stop the password pool."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are being cancelled ourselves, not just the task we stopped
        try:
            await self.flush_failures()
            if self._used_keys:
                await self._flush_used_keys()
        finally:
            self._passwords.close()

    async def flush_failures(self) -> None:
        """Hand every tallied authentication failure to the audit log now (shutdown, tests)."""
        await self._guard.drain()

    async def __aenter__(self) -> Authenticator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _recheck_forever(self) -> None:
        while True:
            await asyncio.sleep(self._recheck_interval_s)
            try:
                await self.recheck()
            except asyncio.CancelledError:
                raise
            except Exception:  # a locked or broken database must not end the recheck loop
                log.exception("authentication cache recheck failed")

    async def recheck(self) -> bool:
        """One tick of the revocation watch; True when the cache was dropped."""
        await self._guard.tick()
        if self._used_keys:
            await self._flush_used_keys()
        now = self._clock()
        if now - self._last_purge >= _PURGE_EVERY_S:
            self._last_purge = now
            await self._store.run(self._store.purge_revoked_tokens)
        version = (await self._store.run(self._store.data_version), self._store.generation)
        if version == self._seen_version:
            return False
        self._seen_version = version
        self._cache.drop_all()
        return True

    async def _flush_used_keys(self) -> None:
        used, self._used_keys = self._used_keys, set()
        await self._store.run(self._store.touch_keys, used, self._clock())

    # authentication

    async def authenticate(
        self, credentials: Credentials, *, ip: str = "", user_agent: str = ""
    ) -> Principal:
        """The caller's Principal; Unauthenticated (audited) or PermissionDenied (suspended)."""
        now = self._clock()
        if credentials.api_key:
            digest = key_hash(credentials.api_key)
            hit = self._cache.hit(self._cache.keys, digest, now)
            if hit is not None:
                if hit.principal.key_id is not None:
                    self._used_keys.add(hit.principal.key_id)
                return hit.principal
            await self._guard.admit("auth.api_key", ip, user_agent)
            return await self._authenticate_key(credentials.api_key, digest, ip, user_agent)
        if credentials.bearer:
            digest = key_hash(credentials.bearer)
            hit = self._cache.hit(self._cache.tokens, digest, now)
            if hit is not None:
                return hit.principal
            await self._guard.admit("auth.jwt", ip, user_agent)
            return await self._authenticate_token(credentials.bearer, digest, ip, user_agent)
        await self._fail("auth", t("errors.authn.missing_credentials"), ip=ip, user_agent=user_agent)

    async def _authenticate_key(self, raw: str, digest: str, ip: str, user_agent: str) -> Principal:
        visible = raw[: len(KEY_PREFIX) + 8] if raw.startswith(KEY_PREFIX) else ""
        actor = f"key:{visible}" if visible else "anonymous"
        if not visible or len(raw) > 256:  # not one of ours: no database read for garbage
            await self._fail("auth.api_key", t("errors.authn.invalid_api_key"), actor, ip=ip, user_agent=user_agent)
        epoch = self._cache.epoch
        grant = await self._store.run(self._store.lookup_key, digest)
        if grant is None:
            await self._fail("auth.api_key", t("errors.authn.invalid_api_key"), actor, ip=ip, user_agent=user_agent)
        key, tenant = grant.key, grant.tenant
        now = self._clock()
        problem: Text | None = None
        if key.revoked_at is not None:
            problem = t("errors.authn.api_key_revoked")
        elif key.expires_at is not None and from_iso(key.expires_at) <= now:
            problem = t("errors.authn.api_key_expired")
        if problem is not None:
            await self._fail("auth.api_key", problem, key.subject, tenant.id, ip=ip, user_agent=user_agent)
        await self._check_tenant(tenant, key.subject, ip, user_agent)
        principal = Principal(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            plan=tenant.plan,
            role=key.role,
            permissions=frozenset(key.scopes) if key.scopes else permissions_for(key.role),
            subject=key.subject,
            key_id=key.id,
            rate_limit=key.rate_limit,
            auth="api_key",
        )
        until = now + self._cache_max_age_s
        if key.expires_at is not None:
            until = min(until, from_iso(key.expires_at))
        self._cache.remember(self._cache.keys, digest, Cached(principal, until), epoch)
        self._used_keys.add(key.id)
        return principal

    async def _authenticate_token(self, token: str, digest: str, ip: str, user_agent: str) -> Principal:
        claims = await self._decode(token, "access", ip=ip, user_agent=user_agent)
        epoch = self._cache.epoch
        principal, jti = await self._user_principal(claims, ip, user_agent)
        until = min(float(claims["exp"]), self._clock() + self._cache_max_age_s)
        self._cache.remember(self._cache.tokens, digest, Cached(principal, until, jti, family_of(claims)), epoch)
        return principal

    async def _user_principal(
        self, claims: dict[str, Any], ip: str, user_agent: str, *, check_jti: bool = True
    ) -> tuple[Principal, str]:
        """Check a verified token's user, tenant and revocation (its jti's, its family's) in the database."""
        jti, user_id, tenant_id = str(claims["jti"]), str(claims["sub"]), str(claims.get("tenant_id", ""))
        actor = f"user:{user_id}"
        grant = await self._store.run(self._store.user_grant, tenant_id, user_id, jti if check_jti else None,
                                      family_of(claims))
        if grant.token_revoked:
            await self._fail("auth.jwt", t("errors.authn.token_revoked"), actor, tenant_id, ip=ip,
                             user_agent=user_agent)
        if grant.user is None or grant.tenant is None or grant.user.status != "active":
            await self._fail("auth.jwt", t("errors.authn.user_not_active"), actor, tenant_id or None,
                             ip=ip, user_agent=user_agent)
        await self._check_tenant(grant.tenant, actor, ip, user_agent)
        user, tenant = grant.user, grant.tenant
        # the role comes from the database, not the token: a demotion takes effect at once
        principal = Principal(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            plan=tenant.plan,
            role=user.role,
            permissions=permissions_for(user.role),
            subject=user.subject,
            user_id=user.id,
            auth="jwt",
        )
        return principal, jti

    async def _check_tenant(self, tenant: Tenant, actor: str, ip: str, user_agent: str) -> None:
        if tenant.active:
            return
        message = f"tenant {tenant.name!r} is suspended"
        await self._guard.fail(AuditEvent("auth", actor, tenant.id, f"tenant:{tenant.id}", ip, user_agent, False,
                                          message), PermissionDenied(t("errors.authn.tenant_suspended",
                                                                       name=tenant.name), {"tenant": tenant.name}))

    async def _fail(
        self,
        action: str,
        message: Text,
        actor: str = "anonymous",
        tenant_id: str | None = None,
        *,
        ip: str = "",
        user_agent: str = "",
    ) -> NoReturn:
        """Tally an authentication failure for the audit log (guard.py: one row per minute) and raise.

        The audit row keeps the English reason (operators read it); the caller gets it in its language.
        """
        await self._guard.fail(AuditEvent(action, actor, tenant_id, "", ip, user_agent, False, message.render("en")),
                               Unauthenticated(message))

    async def _decode(self, token: str, typ: str, *, ip: str = "", user_agent: str = "") -> dict[str, Any]:
        """The verified claims (see tokens.verify); a rejection is audited and raised."""
        action = "auth.jwt" if typ == "access" else "auth.refresh"
        try:
            return tokens.verify(token, self._secret, typ, now=self._clock())
        except TokenRejected as exc:
            actor, tenant_id = "anonymous", None
            if exc.claims is not None:
                actor = f"user:{exc.claims.get('sub', '')}"
                tenant_id = str(exc.claims.get("tenant_id") or "") or None
            await self._fail(action, t("errors.relayed", message=exc.reason), actor, tenant_id, ip=ip,
                             user_agent=user_agent)

    # authorization

    def authorize(self, principal: Principal, permission: str) -> None:
        """PermissionDenied naming ``permission`` unless the principal holds it."""
        if not allows(principal.permissions, permission):
            raise PermissionDenied(
                t("errors.authn.role_lacks_permission", actor_role=principal.role, permission=permission),
                {"permission": permission, "role": principal.role},
            )

    # people: login, refresh, revoke

    def _issue(self, user_id: str, tenant_id: str, role: str, family: str) -> dict[str, Any]:
        return tokens.issue_pair(
            self._secret, user_id, tenant_id, role, now=self._clock(), family=family,
            access_ttl_s=self._config.access_token_ttl_s, refresh_ttl_s=self._config.refresh_token_ttl_s,
        )

    async def audit_refusal(self, event: AuditEvent) -> None:
        """Audit a refused call (429, 402) as a count per minute: a caller cannot fill the log with them."""
        await self._guard.count(event)

    async def hash_password(self, password: str) -> str:
        """argon2id of ``password`` on the bounded login pool; 503 UNAVAILABLE when its queue is full."""
        return await self._passwords.hash(password)

    async def login(
        self, email: str, password: str, tenant_name: str | None, *, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """``{access_token, refresh_token, token_type, expires_in}`` for a right password.  ``tenant_name``
        None: the one tenant where ``email`` has a password (none or several: "", checked like any)."""
        await self._guard.admit("auth.login", ip, user_agent, login=True)
        if not all(isinstance(v, str) and v for v in (email, password, "-" if tenant_name is None else tenant_name)):
            await self._fail("auth.login", t("errors.authn.login_fields_required"), ip=ip, user_agent=user_agent)
        if tenant_name is None:  # "" is no tenant's name: the dummy hash below still runs
            tenant_name = await self._store.run(self._store.login_tenant, email) or ""
        record = await self._store.run(self._store.find_login, tenant_name, email)
        if self._dummy_hash is None:
            self._dummy_hash = await self._passwords.hash(generate_password())
        # verify even for an unknown user, so timing does not tell which e-mails exist
        stored = record.password_hash if record is not None else self._dummy_hash
        ok = await self._passwords.verify(stored, password)
        if record is None or not ok or record.user.status != "active":
            tenant_id = record.tenant.id if record is not None else None
            actor = record.user.subject if record is not None else "anonymous"
            await self._fail("auth.login", t("errors.authn.bad_login"), actor, tenant_id,
                             ip=ip, user_agent=user_agent)
        await self._check_tenant(record.tenant, record.user.subject, ip, user_agent)
        await self._store.audit(
            AuditEvent("auth.login", record.user.subject, record.tenant.id, record.user.subject, ip, user_agent)
        )
        return self._issue(record.user.id, record.tenant.id, record.user.role, tokens.new_family())

    async def refresh(self, refresh_token: str, *, ip: str = "", user_agent: str = "") -> dict[str, Any]:
        """A new token pair in the same family; the refresh token used is revoked (rotation).  A
        second use of it means someone else holds a copy: the whole family is revoked."""
        await self._guard.admit("auth.refresh", ip, user_agent)
        if not isinstance(refresh_token, str) or not refresh_token:
            await self._fail("auth.refresh", t("errors.authn.refresh_token_required"), ip=ip, user_agent=user_agent)
        claims = await self._decode(refresh_token, "refresh", ip=ip, user_agent=user_agent)
        actor, family = f"user:{claims['sub']}", family_of(claims)
        # revoke first, atomically: of two racing refreshes with the same token only one wins
        if not await self._store.run(self._store.revoke_token, str(claims["jti"]), float(claims["exp"])):
            reason = t("errors.authn.refresh_token_reused")
            if family is not None:
                await self._revoke_family(family)
                reason = t("errors.authn.refresh_token_reused_family")
            await self._fail("auth.refresh", reason, actor, str(claims["tenant_id"]), ip=ip, user_agent=user_agent)
        # the jti is now revoked by us: check its family, user and tenant
        principal, _ = await self._user_principal(claims, ip, user_agent, check_jti=False)
        await self._store.audit(
            AuditEvent("auth.refresh", actor, principal.tenant_id, actor, ip, user_agent)
        )
        assert principal.user_id is not None
        return self._issue(principal.user_id, principal.tenant_id, principal.role, family or tokens.new_family())

    async def _revoke_family(self, family: str) -> None:
        # the family's newest refresh token was issued no later than now: it is dead by now + its ttl
        await self._store.run(self._store.revoke_family, family, self._clock() + self._config.refresh_token_ttl_s)
        self._cache.drop(self._cache.tokens, lambda entry: entry.family == family)

    async def revoke(self, token: str, *, ip: str = "", user_agent: str = "") -> str:
        """Revoke a whole JWT whose signature verifies (whoever holds it may); returns its jti.
        Anything else is UNAUTHENTICATED and touches no table: anyone may call this."""
        await self._guard.admit("auth.revoke", ip, user_agent)
        try:
            jti, expires = tokens.revocation_target(token, self._secret)
        except TokenRejected as exc:
            await self._fail("auth.revoke", t("errors.relayed", message=exc.reason), ip=ip, user_agent=user_agent)
        await self._store.run(self._store.revoke_token, jti, expires)
        self._cache.drop(self._cache.tokens, lambda entry: entry.jti == jti)
        return jti

    async def revoke_jti(self, jti: str) -> str:
        """Revoke a bare jti (administrators only: it does not say whose token it is); returns it."""
        # we do not know its expiry, so keep it for the longest a token lives
        expires = self._clock() + max(self._config.refresh_token_ttl_s, self._config.access_token_ttl_s)
        await self._store.run(self._store.revoke_token, jti, expires)
        self._cache.drop(self._cache.tokens, lambda entry: entry.jti == jti)
        return jti

    async def revoke_key(self, ref: str, tenant_id: str | None = None) -> ApiKey:
        """Revoke an API key (id or prefix) and drop it from the cache at once."""
        self._cache.epoch += 1  # a lookup in flight while the database changes must not be cached
        key = await self._store.run(self._store.revoke_api_key, ref, tenant_id)
        self._cache.drop(self._cache.keys, lambda entry: entry.principal.key_id == key.id)
        return key
