"""Admin operations behind ``/v1/tenants``, ``/v1/users``, ``/v1/api-keys`` and ``/v1/auth/*``.

Transport-agnostic: each method takes the caller's Principal (None for the token routes),
the JSON body (for a GET, the query parameters) and the path parameters as keywords, plus
``ip`` / ``user_agent`` for the audit log, and returns a JSON-able dict or raises a HubError
leaf.  Every call is audited, successes and failures alike.

Isolation: only the ``*`` grant (super_admin) reaches another tenant, by naming it in
``tenant`` (name or id).  For anyone else another tenant's tenant, users and keys do not
exist: the answer is NOT_FOUND, never PERMISSION_DENIED, so existence does not leak.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from daemon.core.envelope import Principal
from daemon.core.errors import HubError, NotFound, PermissionDenied, ValidationError
from daemon.core.i18n import Text, t
from daemon.tenancy.authn import Authenticator
from daemon.tenancy.rbac import ROLE_NAMES, allows, can_grant, is_cross_tenant
from daemon.tenancy.records import AuditEvent, Tenant, check_email, check_password, check_role
from daemon.tenancy.secrets import generate_password
from daemon.tenancy.store import TenancyStore

Body = dict[str, Any] | None


def _field(body: Body, name: str, kind: type, *, required: bool = False, default: Any = None) -> Any:
    """``body[name]`` checked to be a ``kind``; ValidationError names the field."""
    if body is not None and not isinstance(body, dict):
        raise ValidationError(t("errors.admin.body_expected_json_object"))
    value = (body or {}).get(name, default)
    if value is None:
        if required:
            raise ValidationError(t("errors.admin.required", name=name), {"field": name})
        return None
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ValidationError(t("errors.admin.expected_got", name=name, type_name=kind.__name__, value=value),
                              {"field": name})
    return value


class _Audit:
    """What an admin call did, filled in as it goes and written when it ends."""

    def __init__(self, principal: Principal | None, action: str, tenant_id: str | None) -> None:
        self.actor = principal.subject if principal is not None else "anonymous"
        self.action = action
        self.tenant_id = tenant_id
        self.resource = ""


class AdminApi:
    """The admin operations of the module docstring: RBAC-checked, tenant-isolated, every call audited."""

    def __init__(
        self,
        store: TenancyStore,
        authenticator: Authenticator,
        *,
        plans: tuple[str, ...] = (),
        open_prepaid_account: Callable[[str, str], Awaitable[object]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        #: makes a tenant created with ``credits_enabled`` prepaid in the ledger (balance 0)
        self._open_prepaid_account = open_prepaid_account
        self._auth = authenticator
        self._clock = clock
        #: plan names a tenant may have (the config's [plans]); empty: any name
        self._plans = plans

    @contextlib.asynccontextmanager
    async def _audited(
        self, principal: Principal | None, action: str, ip: str, user_agent: str
    ) -> AsyncIterator[_Audit]:
        record = _Audit(principal, action, principal.tenant_id if principal is not None else None)
        try:
            yield record
        except HubError as exc:
            await self._store.audit(AuditEvent(action, record.actor, record.tenant_id, record.resource,
                                               ip, user_agent, False, f"{exc.code}: {exc.message}"))
            raise
        await self._store.audit(
            AuditEvent(action, record.actor, record.tenant_id, record.resource, ip, user_agent)
        )

    def _need(self, principal: Principal, permission: str) -> None:
        self._auth.authorize(principal, permission)

    async def _tenant_of(self, principal: Principal, body: Body) -> Tenant:
        """The tenant a call acts on: the caller's own, or (super_admin only) the one named."""
        ref = _field(body, "tenant", str)
        if ref is None or ref in (principal.tenant_id, principal.tenant_name):
            return await self._store.run(self._store.get_tenant, principal.tenant_id)
        if not is_cross_tenant(principal.permissions):
            raise NotFound(t("errors.admin.tenant_not_found", ref=ref), {"tenant": ref})
        return await self._store.run(self._store.get_tenant, ref)

    # tenants

    async def list_tenants(
        self, principal: Principal, body: Body = None, *, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """tenant:read: every tenant for super_admin, only the caller's own for anyone else."""
        async with self._audited(principal, "tenant.list", ip, user_agent):
            self._need(principal, "tenant:read")
            if is_cross_tenant(principal.permissions):
                tenants = await self._store.run(self._store.list_tenants)
            else:
                tenants = [await self._store.run(self._store.get_tenant, principal.tenant_id)]
            return {"tenants": [tenant.to_dict() for tenant in tenants]}

    async def get_tenant(
        self, principal: Principal, body: Body = None, *, tenant_id: str, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """tenant:read; another tenant is NOT_FOUND unless the caller is super_admin."""
        async with self._audited(principal, "tenant.read", ip, user_agent) as audit:
            audit.resource = f"tenant:{tenant_id}"
            self._need(principal, "tenant:read")
            tenant = await self._tenant_of(principal, {"tenant": tenant_id})
            return {"tenant": tenant.to_dict()}

    async def update_tenant(
        self, principal: Principal, body: Body, *, tenant_id: str, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """``{"status": "active"|"suspended"}`` and/or ``{"plan"}``: both super_admin's only.

        A tenant's own admin may not suspend (or reinstate) it: suspension is the operator's
        lever over a tenant, and a tenant_admin holds ``tenant:update`` for its own settings.
        """
        async with self._audited(principal, "tenant.update", ip, user_agent) as audit:
            audit.resource = f"tenant:{tenant_id}"
            tenant = await self._tenant_of(principal, {"tenant": tenant_id})
            audit.tenant_id = tenant.id
            self._need(principal, "tenant:update")
            status = _field(body, "status", str)
            plan = _field(body, "plan", str)
            if status is None and plan is None:
                raise ValidationError(t("errors.admin.give_status_plan"), {"field": "status"})
            if plan is not None:
                self._need(principal, "billing:update")  # held by '*' only: prices are the operator's
                if self._plans and plan not in self._plans:
                    raise ValidationError(t("errors.admin.plan_not_one", plan=plan, choices=', '.join(self._plans)),
                                          {"field": "plan"})
                tenant = await self._store.run(self._store.set_tenant_plan, tenant.id, plan)
            if status is not None:
                self._need(principal, "tenant:suspend")  # held by '*' only, as billing:update is
                tenant = await self._store.run(self._store.set_tenant_status, tenant.id, status)
            return {"tenant": tenant.to_dict()}

    async def create_tenant(
        self, principal: Principal, body: Body, *, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """tenant:create (super_admin); a credits_enabled tenant also gets a prepaid ledger account at balance 0."""
        async with self._audited(principal, "tenant.create", ip, user_agent) as audit:
            name = _field(body, "name", str, required=True)
            audit.resource = f"tenant:{name}"
            self._need(principal, "tenant:create")  # only '*' holds it: super_admin
            plan = _field(body, "plan", str, default="starter")
            if self._plans and plan not in self._plans:
                raise ValidationError(t("errors.admin.plan_not_one", plan=plan, choices=', '.join(self._plans)),
                                      {"field": "plan"})
            tenant = await self._store.run(
                self._store.create_tenant,
                name,
                plan,
                timezone=_field(body, "timezone", str, default="UTC"),
                credits_enabled=_field(body, "credits_enabled", bool, default=False),
            )
            audit.resource, audit.tenant_id = f"tenant:{tenant.id}", tenant.id
            if tenant.credits_enabled and self._open_prepaid_account is not None:
                await self._open_prepaid_account(tenant.id, principal.subject)
            return {"tenant": tenant.to_dict()}

    # users

    async def list_users(
        self, principal: Principal, body: Body = None, *, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """user:read lists the tenant's users, user:read:self only the caller; neither is PERMISSION_DENIED."""
        async with self._audited(principal, "user.list", ip, user_agent) as audit:
            tenant = await self._tenant_of(principal, body)
            audit.tenant_id = tenant.id
            if allows(principal.permissions, "user:read"):
                users = await self._store.run(self._store.list_users, tenant.id)
            elif allows(principal.permissions, "user:read:self"):
                everyone = await self._store.run(self._store.list_users, tenant.id)
                users = [u for u in everyone if u.id == principal.user_id]
            else:
                self._need(principal, "user:read")
                users = []
            return {"users": [user.to_dict() for user in users]}

    async def create_user(
        self, principal: Principal, body: Body, *, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """user:create, with a role the caller may grant; without ``password`` one is generated and shown once."""
        async with self._audited(principal, "user.create", ip, user_agent) as audit:
            tenant = await self._tenant_of(principal, body)
            audit.tenant_id = tenant.id
            self._need(principal, "user:create")
            email = _field(body, "email", str, required=True)
            role = _field(body, "role", str, default="user")
            self._check_grant(principal, role)
            password = _field(body, "password", str)
            generated = password is None
            if password is None:
                password = generate_password()
            check_email(email)
            check_role(role)
            check_password(password)
            # argon2id takes ~0.1 s: on the bounded login pool, never the store's one writer or the loop
            password_hash = await self._auth.hash_password(password)
            user = await self._store.run(self._store.create_user, tenant.id, email, role, password_hash)
            audit.resource = user.subject
            answer: dict[str, Any] = {"user": user.to_dict()}
            if generated:
                answer["password"] = password  # shown once, never again
            return answer

    async def delete_user(
        self, principal: Principal, body: Body = None, *, user_id: str, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """user:delete; an unknown user is NOT_FOUND before any permission check, so denial leaks nothing."""
        async with self._audited(principal, "user.delete", ip, user_agent) as audit:
            audit.resource = f"user:{user_id}"
            tenant = await self._tenant_of(principal, body)
            audit.tenant_id = tenant.id
            target = await self._store.run(self._store.get_user, tenant.id, user_id)  # NotFound before denial
            self._need(principal, "user:delete")
            self._check_over(principal, target.role, t("errors.what.delete_user"))
            user = await self._store.run(self._store.delete_user_id, tenant.id, user_id)
            return {"user": user.to_dict()}

    # API keys

    async def list_api_keys(
        self, principal: Principal, body: Body = None, *, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """api_key:read lists the tenant's keys; api_key:read:own only the caller's own (created by it, or itself)."""
        async with self._audited(principal, "api_key.list", ip, user_agent) as audit:
            tenant = await self._tenant_of(principal, body)
            audit.tenant_id = tenant.id
            keys = await self._store.run(self._store.list_api_keys, tenant.id)
            if not allows(principal.permissions, "api_key:read"):
                self._need(principal, "api_key:read:own")
                keys = [key for key in keys if self._owns(principal, key.created_by, key.id)]
            return {"api_keys": [key.to_dict() for key in keys]}

    async def create_api_key(
        self, principal: Principal, body: Body, *, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """A key owned by the caller, with a role it may grant and optional expiry; the raw key is shown once."""
        async with self._audited(principal, "api_key.create", ip, user_agent) as audit:
            tenant = await self._tenant_of(principal, body)
            audit.tenant_id = tenant.id
            # the new key is the caller's own (created_by), so :own suffices
            self._need(principal, "api_key:create:own")
            role = _field(body, "role", str, default="user")
            self._check_grant(principal, role)
            expires_at = self._expiry(body)
            key, raw = await self._store.run(
                self._store.create_api_key,
                tenant.id,
                role,
                rate_limit=_field(body, "rate_limit", str),
                expires_at=expires_at,
                scopes=_field(body, "scopes", list, default=[]),
                created_by=principal.subject,
            )
            audit.resource = key.subject
            return {"api_key": key.to_dict(), "key": raw}  # the key is shown once, never again

    async def revoke_api_key(
        self, principal: Principal, body: Body = None, *, key_id: str, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """Revoke by id or prefix; super_admin may revoke any tenant's key without naming it."""
        async with self._audited(principal, "api_key.revoke", ip, user_agent) as audit:
            audit.resource = f"key:{key_id}"
            if is_cross_tenant(principal.permissions) and _field(body, "tenant", str) is None:
                scope: str | None = None
            else:
                scope = (await self._tenant_of(principal, body)).id
            key = await self._store.run(self._store.get_api_key, key_id, scope)  # NotFound across tenants
            audit.resource, audit.tenant_id = key.subject, key.tenant_id
            if not self._owns(principal, key.created_by, key.id):
                self._need(principal, "api_key:delete")
            else:
                self._need(principal, "api_key:delete:own")
            if key.id != principal.key_id:  # a key may always revoke itself
                self._check_over(principal, key.role, t("errors.what.revoke_key"))
            key = await self._auth.revoke_key(key.id, key.tenant_id)
            return {"api_key": key.to_dict()}

    # tokens (no principal: these are how a person gets one)

    async def token(
        self, principal: Principal | None, body: Body, *, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """Log in with email, password and tenant: a token pair; UNAUTHENTICATED without saying which was wrong."""
        email = _field(body, "email", str, required=True)
        password = _field(body, "password", str, required=True)
        tenant = _field(body, "tenant", str, required=True)
        # login audits itself, success and failure
        return await self._auth.login(email, password, tenant, ip=ip, user_agent=user_agent)

    async def refresh(
        self, principal: Principal | None, body: Body, *, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """A new token pair for ``refresh_token``, which is revoked on use: a second use is UNAUTHENTICATED."""
        refresh_token = _field(body, "refresh_token", str, required=True)
        return await self._auth.refresh(refresh_token, ip=ip, user_agent=user_agent)

    async def revoke(
        self, principal: Principal | None, body: Body, *, ip: str = "", user_agent: str = ""
    ) -> dict[str, Any]:
        """``{"token"}``: whoever holds a whole JWT whose signature verifies may revoke it, with or
        without credentials.  ``{"jti"}``: super_admin only, since a bare jti does not say whose
        token it is.  Anonymous failures are tallied by the authenticator (one audit row per ip
        and reason a minute) and touch no table, so nobody can fill the database from outside."""
        token = _field(body, "token", str)
        jti = _field(body, "jti", str)
        if token is None and jti is None:
            raise ValidationError(t("errors.admin.token_required_jti"), {"field": "token"})
        if principal is None:
            if token is None:
                raise PermissionDenied(t("errors.admin.revoking_bare_jti_needs"))
            revoked = await self._auth.revoke(token, ip=ip, user_agent=user_agent)
            await self._store.audit(AuditEvent("auth.revoke", "anonymous", None, f"jti:{revoked}", ip, user_agent))
            return {"revoked": revoked}
        async with self._audited(principal, "auth.revoke", ip, user_agent) as audit:
            if token is not None:
                revoked = await self._auth.revoke(token, ip=ip, user_agent=user_agent)
            else:
                self._need(principal, "*")
                revoked = await self._auth.revoke_jti(jti)
            audit.resource = f"jti:{revoked}"
            return {"revoked": revoked}

    # helpers

    @staticmethod
    def _owns(principal: Principal, created_by: str, key_id: str) -> bool:
        return created_by == principal.subject or key_id == principal.key_id

    @staticmethod
    def _check_grant(principal: Principal, role: str) -> None:
        if role not in ROLE_NAMES:
            raise ValidationError(t("errors.admin.role_not_one", role=role, choices=', '.join(ROLE_NAMES)),
                                  {"field": "role"})
        if not can_grant(principal.permissions, role):
            raise PermissionDenied(t("errors.admin.role_cannot_grant_role", actor_role=principal.role, role=role),
                                   {"role": role})

    @staticmethod
    def _check_over(principal: Principal, role: str, what: Text) -> None:
        """Acting on another principal needs a role that could grant the target's: no one acts above itself."""
        if not can_grant(principal.permissions, role):
            raise PermissionDenied(t("errors.admin.role_cannot_role", actor_role=principal.role, what=what,
                                     role=role), {"role": role})

    def _expiry(self, body: Body) -> float | None:
        days = _field(body, "expires_days", int)
        text = _field(body, "expires_at", str)
        if days is not None:
            if days <= 0:
                raise ValidationError(t("errors.admin.expires_days_positive"), {"field": "expires_days"})
            return self._clock() + days * 86400
        if text is not None:
            try:
                return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise ValidationError(t("errors.admin.expires_not_iso_time", text=text),
                                      {"field": "expires_at"}) from None
        return None
