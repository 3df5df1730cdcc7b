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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from daemon.core.envelope import Credentials, Principal
from daemon.core.errors import PermissionDenied, Unauthenticated
from daemon.runtime.config import AuthConfig
from daemon.tenancy import tokens
from daemon.tenancy.rbac import allows, permissions_for
from daemon.tenancy.records import ApiKey, AuditEvent, Tenant, from_iso
from daemon.tenancy.secrets import (
    KEY_PREFIX,
    generate_password,
    hash_password,
    key_hash,
    load_jwt_secret,
    verify_password,
)
from daemon.tenancy.store import TenancyStore
from daemon.tenancy.tokens import TokenRejected

log = logging.getLogger(__name__)

_PURGE_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    valid_until: float  # wall clock: min(credential expiry, verification time + max age)
    jti: str | None = None


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
        self._cache_size = cache_size
        self._keys: dict[str, _Cached] = {}  # sha256(api key) -> verified principal
        self._tokens: dict[str, _Cached] = {}  # sha256(bearer token) -> verified principal
        self._epoch = 0  # bumped on every in-process revocation, see _remember
        self._used_keys: set[str] = set()
        self._seen_version: tuple[int, int] | None = None
        self._last_purge = 0.0
        self._task: asyncio.Task[None] | None = None
        self._dummy_hash: str | None = None

    # lifecycle

    async def start(self) -> None:
        """Note where the database stands and start the recheck task (idempotent)."""
        self._seen_version = (await self._store.run(self._store.data_version), self._store.generation)
        if self._task is None:
            self._task = asyncio.create_task(self._recheck_forever(), name="auth-recheck")

    async def aclose(self) -> None:
        """Stop the recheck task and write the last batch of key uses."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are being cancelled ourselves, not just the task we stopped
        if self._used_keys:
            await self._flush_used_keys()

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
        self._drop_all()
        return True

    async def _flush_used_keys(self) -> None:
        used, self._used_keys = self._used_keys, set()
        await self._store.run(self._store.touch_keys, used, self._clock())

    def _drop_all(self) -> None:
        self._epoch += 1
        self._keys.clear()
        self._tokens.clear()

    # authentication

    async def authenticate(
        self, credentials: Credentials, *, ip: str = "", user_agent: str = ""
    ) -> Principal:
        """The caller's Principal; Unauthenticated (audited) or PermissionDenied (suspended)."""
        now = self._clock()
        if credentials.api_key:
            digest = key_hash(credentials.api_key)
            hit = self._keys.get(digest)
            if hit is not None and hit.valid_until > now:
                if hit.principal.key_id is not None:
                    self._used_keys.add(hit.principal.key_id)
                return hit.principal
            return await self._authenticate_key(credentials.api_key, digest, ip, user_agent)
        if credentials.bearer:
            digest = key_hash(credentials.bearer)
            hit = self._tokens.get(digest)
            if hit is not None and hit.valid_until > now:
                return hit.principal
            return await self._authenticate_token(credentials.bearer, digest, ip, user_agent)
        await self._fail("auth", "missing credentials", ip=ip, user_agent=user_agent)

    async def _authenticate_key(self, raw: str, digest: str, ip: str, user_agent: str) -> Principal:
        visible = raw[: len(KEY_PREFIX) + 8] if raw.startswith(KEY_PREFIX) else ""
        actor = f"key:{visible}" if visible else "anonymous"
        if not visible or len(raw) > 256:  # not one of ours: no database read for garbage
            await self._fail("auth.api_key", "invalid API key", actor, ip=ip, user_agent=user_agent)
        epoch = self._epoch
        grant = await self._store.run(self._store.lookup_key, digest)
        if grant is None:
            await self._fail("auth.api_key", "invalid API key", actor, ip=ip, user_agent=user_agent)
        key, tenant = grant.key, grant.tenant
        now = self._clock()
        problem = ""
        if key.revoked_at is not None:
            problem = "API key revoked"
        elif key.expires_at is not None and from_iso(key.expires_at) <= now:
            problem = "API key expired"
        if problem:
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
        self._remember(self._keys, digest, _Cached(principal, until), epoch)
        self._used_keys.add(key.id)
        return principal

    async def _authenticate_token(self, token: str, digest: str, ip: str, user_agent: str) -> Principal:
        claims = await self._decode(token, "access", ip=ip, user_agent=user_agent)
        epoch = self._epoch
        principal, jti = await self._user_principal(claims, ip, user_agent)
        until = min(float(claims["exp"]), self._clock() + self._cache_max_age_s)
        self._remember(self._tokens, digest, _Cached(principal, until, jti), epoch)
        return principal

    async def _user_principal(
        self, claims: dict[str, Any], ip: str, user_agent: str, *, check_revoked: bool = True
    ) -> tuple[Principal, str]:
        """Check a verified token's user, tenant and revocation in the database."""
        jti, user_id, tenant_id = str(claims["jti"]), str(claims["sub"]), str(claims.get("tenant_id", ""))
        actor = f"user:{user_id}"
        grant = await self._store.run(self._store.user_grant, tenant_id, user_id, jti)
        if check_revoked and grant.token_revoked:
            await self._fail("auth.jwt", "token revoked", actor, tenant_id, ip=ip, user_agent=user_agent)
        if grant.user is None or grant.tenant is None or grant.user.status != "active":
            await self._fail("auth.jwt", "user is no longer active", actor, tenant_id or None,
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

    def _remember(self, cache: dict[str, _Cached], digest: str, entry: _Cached, epoch: int) -> None:
        if epoch != self._epoch:
            return  # a revocation happened while we looked it up: do not cache a stale answer
        if len(cache) >= self._cache_size:
            cache.pop(next(iter(cache)))  # the oldest entry; dicts keep insertion order
        cache[digest] = entry

    async def _check_tenant(self, tenant: Tenant, actor: str, ip: str, user_agent: str) -> None:
        if tenant.active:
            return
        message = f"tenant {tenant.name!r} is suspended"
        await self._store.audit(
            AuditEvent("auth", actor, tenant.id, f"tenant:{tenant.id}", ip, user_agent, False, message)
        )
        raise PermissionDenied(message, {"tenant": tenant.name})

    async def _fail(
        self,
        action: str,
        message: str,
        actor: str = "anonymous",
        tenant_id: str | None = None,
        *,
        ip: str = "",
        user_agent: str = "",
    ) -> NoReturn:
        """Audit an authentication failure (queued, the caller does not wait for the disk) and raise."""
        await self._store.audit(AuditEvent(action, actor, tenant_id, "", ip, user_agent, False, message))
        raise Unauthenticated(message)

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
            await self._fail(action, exc.reason, actor, tenant_id, ip=ip, user_agent=user_agent)

    # authorization

    def authorize(self, principal: Principal, permission: str) -> None:
        """PermissionDenied naming ``permission`` unless the principal holds it."""
        if not allows(principal.permissions, permission):
            raise PermissionDenied(
                f"role {principal.role} lacks the {permission} permission",
                {"permission": permission, "role": principal.role},
            )

    # people: login, refresh, revoke

    def _issue(self, user_id: str, tenant_id: str, role: str) -> dict[str, Any]:
        return tokens.issue_pair(
            self._secret, user_id, tenant_id, role, now=self._clock(),
            access_ttl_s=self._config.access_token_ttl_s, refresh_ttl_s=self._config.refresh_token_ttl_s,
        )

    async def login(
        self, email: str, password: str, tenant_name: str, *, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """``{access_token, refresh_token, token_type, expires_in}`` for a right password."""
        if not all(isinstance(v, str) and v for v in (email, password, tenant_name)):
            await self._fail("auth.login", "email, password and tenant are required", ip=ip, user_agent=user_agent)
        record = await self._store.run(self._store.find_login, tenant_name, email)
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(hash_password, generate_password())
        # verify even for an unknown user, so timing does not tell which e-mails exist
        stored = record.password_hash if record is not None else self._dummy_hash
        ok = await asyncio.to_thread(verify_password, stored, password)
        if record is None or not ok or record.user.status != "active":
            tenant_id = record.tenant.id if record is not None else None
            actor = record.user.subject if record is not None else "anonymous"
            await self._fail("auth.login", "bad email, password or tenant", actor, tenant_id,
                             ip=ip, user_agent=user_agent)
        await self._check_tenant(record.tenant, record.user.subject, ip, user_agent)
        await self._store.audit(
            AuditEvent("auth.login", record.user.subject, record.tenant.id, record.user.subject, ip, user_agent)
        )
        return self._issue(record.user.id, record.tenant.id, record.user.role)

    async def refresh(self, refresh_token: str, *, ip: str = "", user_agent: str = "") -> dict[str, Any]:
        """A new token pair; the refresh token used is revoked (rotation), so reuse fails."""
        if not isinstance(refresh_token, str) or not refresh_token:
            await self._fail("auth.refresh", "refresh_token is required", ip=ip, user_agent=user_agent)
        claims = await self._decode(refresh_token, "refresh", ip=ip, user_agent=user_agent)
        actor = f"user:{claims['sub']}"
        # revoke first, atomically: of two racing refreshes with the same token only one wins
        if not await self._store.run(self._store.revoke_token, str(claims["jti"]), float(claims["exp"])):
            await self._fail("auth.refresh", "refresh token already used or revoked", actor,
                             str(claims["tenant_id"]), ip=ip, user_agent=user_agent)
        # the jti is now revoked by us: check only that the user and tenant are still good
        principal, _ = await self._user_principal(claims, ip, user_agent, check_revoked=False)
        await self._store.audit(
            AuditEvent("auth.refresh", actor, principal.tenant_id, actor, ip, user_agent)
        )
        assert principal.user_id is not None
        return self._issue(principal.user_id, principal.tenant_id, principal.role)

    async def revoke(self, token_or_jti: str) -> str:
        """Revoke a JWT (given whole, signature checked) or a bare jti; returns the jti."""
        if token_or_jti.count(".") == 2:
            try:
                jti, expires = tokens.revocation_target(token_or_jti, self._secret)
            except TokenRejected as exc:
                raise Unauthenticated(exc.reason) from None
        else:
            # a bare jti: we do not know its expiry, so keep it for the longest a token lives
            jti = token_or_jti
            expires = self._clock() + max(self._config.refresh_token_ttl_s, self._config.access_token_ttl_s)
        self._epoch += 1
        for digest, entry in list(self._tokens.items()):
            if entry.jti == jti:
                del self._tokens[digest]
        await self._store.run(self._store.revoke_token, jti, expires)
        return jti

    async def revoke_key(self, ref: str, tenant_id: str | None = None) -> ApiKey:
        """Revoke an API key (id or prefix) and drop it from the cache at once."""
        self._epoch += 1
        key = await self._store.run(self._store.revoke_api_key, ref, tenant_id)
        self._epoch += 1
        for digest, entry in list(self._keys.items()):
            if entry.principal.key_id == key.id:
                del self._keys[digest]
        return key
