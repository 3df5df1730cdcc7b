"""TenancyStore: tenants, users, API keys and revoked tokens, in ``<state_dir>/tenancy.db``.

One set of plain, blocking methods.  The CLI calls them directly; the daemon calls the
same ones on the store's writer thread, ``await store.run(store.create_api_key, ...)``
(database.py holds the connection, that thread and the audit log).

Every read of tenant data takes a ``tenant_id`` (or returns the tenant it belongs to), so
callers cannot forget the scope.  Secrets are never stored in clear (secrets.py); the
tables and the row mappers are schema.py.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
import zoneinfo
from collections.abc import Iterable
from typing import Any

from daemon.core.errors import Conflict, NotFound, ValidationError
from daemon.core.i18n import t
from daemon.runtime.files import atomic_write
from daemon.tenancy.database import TenancyDatabase
from daemon.tenancy.rbac import allows, permissions_for
from daemon.tenancy.records import (
    ApiKey,
    AuditEvent,
    KeyGrant,
    LoginRecord,
    Tenant,
    User,
    UserGrant,
    check_email,
    check_rate,
    check_role,
    check_tenant_name,
    iso,
)
from daemon.tenancy.schema import KEY_COLUMNS, USER_COLUMNS, key_from_row, tenant_from_row, user_from_row
from daemon.tenancy.secrets import KEY_PREFIX, key_hash, new_api_key

BOOTSTRAP_KEY_FILE = "bootstrap-admin.key"


def family_key(family: str) -> str:
    """A family's row in ``revoked_tokens``, beside the jtis (which are plain hex)."""
    return f"fam:{family}"


def canonical_tenant_id(text: str) -> str:
    """A tenant id given by an operator, as a UUID's canonical text; ValidationError if it is not a UUID."""
    try:
        if not isinstance(text, str) or len(text) > 64:
            raise ValueError(text)
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise ValidationError(t("errors.store.id_not_uuid", value=str(text)[:64], nil=uuid.UUID(int=0)),
                              {"field": "id"}) from None


class TenancyStore(TenancyDatabase):
    """The tenancy database's queries.  ``async with TenancyStore(dir)`` in the daemon; plain calls in the CLI."""

    #: bumped on every write here that can invalidate a cached credential, so the
    #: authenticator notices changes made through this connection (data_version does not)
    generation: int = 0

    # bootstrap

    def ensure_bootstrap(self) -> str | None:
        """First start: tenant ``default`` and a super_admin key, returned once and written to
        ``<state_dir>/bootstrap-admin.key`` (0600).  Afterwards: None."""
        with self._write() as conn:
            # keyed on the default tenant, not on "any tenant": a tenant made with the CLI
            # before the first start must not cost the operator the admin key
            if self._one("SELECT id FROM tenants WHERE name = 'default'") is not None:
                return None
            tenant = self._insert_tenant(conn, "default", "starter", "UTC", False)
            key, raw = self._insert_key(conn, tenant.id, "super_admin", None, None, (), "bootstrap")
            self._insert_audit(conn, [AuditEvent("tenant.bootstrap", "bootstrap", tenant.id, key.subject)])
            # inside the transaction: if the file cannot be written, no key exists that nobody has
            atomic_write(self.state_dir / BOOTSTRAP_KEY_FILE, (raw + "\n").encode(), private=True)
        return raw

    # tenants

    def _insert_tenant(
        self, conn: sqlite3.Connection, name: str, plan: str, timezone: str, credits: bool,
        tenant_id: str | None = None,
    ) -> Tenant:
        tenant = Tenant(tenant_id or str(uuid.uuid4()), name, plan, "active", timezone, credits, iso(self._clock()))
        if tenant_id is not None and conn.execute("SELECT 1 FROM tenants WHERE id = ?", (tenant_id,)).fetchone():
            # checked first, inside the write transaction: the name's UNIQUE error would name the wrong field
            raise Conflict(t("errors.store.tenant_id_already_exists", tenant_id=tenant_id), {"field": "id"})
        try:
            conn.execute(
                "INSERT INTO tenants (id, name, plan, status, timezone, credits_enabled, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant.id, name, plan, tenant.status, timezone, int(credits), tenant.created_at),
            )
        except sqlite3.IntegrityError:
            raise Conflict(t("errors.store.tenant_already_exists", name=name), {"field": "name"}) from None
        return tenant

    def create_tenant(
        self, name: str, plan: str = "starter", *, timezone: str = "UTC", credits_enabled: bool = False,
        tenant_id: str | None = None,
    ) -> Tenant:
        """A new active tenant; Conflict when the name (or the id) is taken.

        ``tenant_id`` gives the tenant a chosen id instead of a fresh one: a tenant is the same tenant
        across a fleet when it has the same id at every site, and the central node bills by that id.
        It must be a UUID; it is stored in its canonical form (lowercase, hyphenated).
        """
        check_tenant_name(name)
        if tenant_id is not None:
            tenant_id = canonical_tenant_id(tenant_id)
        if not isinstance(plan, str) or not plan:
            raise ValidationError(t("errors.store.plan_plan_name"), {"field": "plan"})
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValidationError(t("errors.store.timezone_not_time_zone", timezone=timezone),
                                  {"field": "timezone"}) from None
        with self._write() as conn:
            return self._insert_tenant(conn, name, plan, timezone, bool(credits_enabled), tenant_id)

    def list_tenants(self) -> list[Tenant]:
        """Every tenant, by name (operators only: this crosses tenants)."""
        return [tenant_from_row(row) for row in self._all("SELECT * FROM tenants ORDER BY name")]

    def find_tenant(self, ref: str) -> Tenant | None:
        """The tenant named (or with the id) ``ref``, or None."""
        row = self._one("SELECT * FROM tenants WHERE name = ? OR id = ?", (ref, ref))
        return tenant_from_row(row) if row else None

    def get_tenant(self, ref: str) -> Tenant:
        """The tenant named (or with the id) ``ref``; NotFound otherwise."""
        tenant = self.find_tenant(ref)
        if tenant is None:
            raise NotFound(t("errors.admin.tenant_not_found", ref=ref), {"tenant": ref})
        return tenant

    def set_tenant_status(self, ref: str, status: str) -> Tenant:
        """Suspend (``suspended``) or reinstate (``active``) a tenant; bumps ``generation``."""
        if status not in ("active", "suspended"):
            raise ValidationError(t("errors.store.status_not_active_suspended", status=status), {"field": "status"})
        tenant = self.get_tenant(ref)
        with self._write() as conn:
            conn.execute("UPDATE tenants SET status = ? WHERE id = ?", (status, tenant.id))
        self.generation += 1
        return self.get_tenant(tenant.id)

    def set_tenant_plan(self, ref: str, plan: str) -> Tenant:
        """Move a tenant to ``plan`` (not checked here against the config's plans: callers do)."""
        tenant = self.get_tenant(ref)
        with self._write() as conn:
            conn.execute("UPDATE tenants SET plan = ? WHERE id = ?", (plan, tenant.id))
        self.generation += 1  # cached principals carry the plan: the authenticator drops them
        return self.get_tenant(tenant.id)

    # users

    def create_user(self, tenant_id: str, email: str, role: str, password_hash: str) -> User:
        """Insert a user; hash the password with secrets.hash_password first (off the loop)."""
        email = check_email(email)
        check_role(role)
        user = User(str(uuid.uuid4()), tenant_id, email, role, "active", iso(self._clock()))
        with self._write() as conn:
            if self._one("SELECT id FROM tenants WHERE id = ?", (tenant_id,)) is None:
                raise NotFound(t("errors.store.tenant_not_found", tenant_id=tenant_id), {"tenant": tenant_id})
            try:
                conn.execute(
                    "INSERT INTO users (id, tenant_id, email, role, password_hash, status, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (user.id, tenant_id, email, role, password_hash, user.status, user.created_at),
                )
            except sqlite3.IntegrityError:
                raise Conflict(t("errors.store.user_already_exists_tenant", email=email), {"field": "email"}) from None
        return user

    def list_users(self, tenant_id: str) -> list[User]:
        """The tenant's users, oldest first; erased (deleted) users are left out."""
        rows = self._all(
            f"SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ? AND status != 'deleted'"
            " ORDER BY created_at, email",
            (tenant_id,),
        )
        return [user_from_row(row) for row in rows]

    def get_user(self, tenant_id: str, user_id: str) -> User:
        """The user ``user_id`` of ``tenant_id``; NotFound in another tenant or once erased."""
        row = self._one(
            f"SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ? AND id = ? AND status != 'deleted'",
            (tenant_id, user_id),
        )
        if row is None:
            raise NotFound(t("errors.store.user_not_found", user_id=user_id), {"user": user_id})
        return user_from_row(row)

    def find_login(self, tenant_name: str, email: str) -> LoginRecord | None:
        """What a login needs to check a password; None for no such (or password-less) user."""
        row = self._one(
            "SELECT u.id AS user_id, u.password_hash, u.email, u.role, u.status AS user_status,"
            " u.created_at AS user_created_at, t.* FROM users u JOIN tenants t ON t.id = u.tenant_id"
            " WHERE t.name = ? AND u.email = ? AND u.status != 'deleted'",
            (tenant_name, str(email).strip().lower()),
        )
        if row is None or not row["password_hash"]:
            return None
        user = User(row["user_id"], row["id"], row["email"], row["role"], row["user_status"],
                    row["user_created_at"])
        return LoginRecord(tenant_from_row(row), user, row["password_hash"])

    def login_tenant(self, email: str) -> str | None:
        """The one tenant where ``email`` has a password (a login that names none); None for none or several."""
        rows = self._all("SELECT t.name AS name FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.email = ?"
                         " AND u.status != 'deleted' AND u.password_hash IS NOT NULL AND u.password_hash != ''"
                         " LIMIT 2", (str(email).strip().lower(),))
        return str(rows[0]["name"]) if len(rows) == 1 else None

    def delete_user_id(self, tenant_id: str, user_id: str) -> User:
        """GDPR erasure: drop the e-mail and password hash, keep the id (billing refers to
        ``user:<id>`` only, which is then anonymous) and scrub the person's ip/user agent
        from the audit log."""
        user = self.get_user(tenant_id, user_id)
        with self._write() as conn:
            conn.execute(
                "UPDATE users SET email = NULL, password_hash = NULL, status = 'deleted', deleted_at = ?"
                " WHERE tenant_id = ? AND id = ?",
                (iso(self._clock()), tenant_id, user_id),
            )
            conn.execute(
                "UPDATE audit SET ip = '', user_agent = '' WHERE actor = ? OR resource = ?",
                (user.subject, user.subject),
            )
        self.generation += 1
        return User(user.id, tenant_id, None, user.role, "deleted", user.created_at)

    def delete_user(self, email: str, tenant: str) -> User:
        """Erase the person ``email`` of tenant ``tenant`` (a name or id); see delete_user_id."""
        found = self.get_tenant(tenant)
        row = self._one(
            "SELECT id FROM users WHERE tenant_id = ? AND email = ? AND status != 'deleted'",
            (found.id, check_email(email)),
        )
        if row is None:
            raise NotFound(t("errors.store.user_not_found_tenant", email=email, name=found.name), {"email": email})
        return self.delete_user_id(found.id, row["id"])

    # API keys

    def _insert_key(
        self,
        conn: sqlite3.Connection,
        tenant_id: str,
        role: str,
        rate_limit: str | None,
        expires_at: str | None,
        scopes: tuple[str, ...],
        created_by: str,
    ) -> tuple[ApiKey, str]:
        for _ in range(5):  # a 32-bit prefix may collide in a large fleet; draw again
            prefix, raw = new_api_key()
            key = ApiKey(str(uuid.uuid4()), tenant_id, prefix, role, scopes, rate_limit, expires_at,
                         None, created_by, iso(self._clock()), None)
            try:
                conn.execute(
                    "INSERT INTO api_keys (id, tenant_id, prefix, hash, role, scopes, rate_limit,"
                    " expires_at, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key.id, tenant_id, prefix, key_hash(raw), role, json.dumps(list(scopes)),
                     rate_limit, expires_at, created_by, key.created_at),
                )
            except sqlite3.IntegrityError:
                continue
            return key, raw
        raise Conflict(t("errors.store.could_not_draw_unique"))

    def create_api_key(
        self,
        tenant_id: str,
        role: str = "user",
        *,
        rate_limit: str | None = None,
        expires_at: float | None = None,
        scopes: Iterable[str] = (),
        created_by: str = "cli",
    ) -> tuple[ApiKey, str]:
        """A new key of ``tenant_id``: its metadata and the key itself, which is shown once."""
        check_role(role)
        rate_limit = check_rate(rate_limit)
        scope_list = tuple(scopes)
        role_permissions = permissions_for(role)
        for scope in scope_list:
            if not isinstance(scope, str) or not allows(role_permissions, scope):
                raise ValidationError(t("errors.store.scopes_not_within_role", scope=scope, role=role),
                                      {"field": "scopes"})
        if expires_at is not None and expires_at <= self._clock():
            raise ValidationError(t("errors.store.expires_future"), {"field": "expires_at"})
        with self._write() as conn:
            if self._one("SELECT id FROM tenants WHERE id = ?", (tenant_id,)) is None:
                raise NotFound(t("errors.store.tenant_not_found", tenant_id=tenant_id), {"tenant": tenant_id})
            expires = iso(expires_at) if expires_at is not None else None
            return self._insert_key(conn, tenant_id, role, rate_limit, expires, scope_list, created_by)

    def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        """The tenant's keys, revoked and expired ones included, oldest first."""
        rows = self._all(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = ? ORDER BY created_at, prefix",
            (tenant_id,),
        )
        return [key_from_row(row) for row in rows]

    def get_api_key(self, ref: str, tenant_id: str | None) -> ApiKey:
        """The key with id, prefix or whole value ``ref``, within ``tenant_id`` (None: any tenant, operators only).

        A whole key is matched by its hash and never echoed back: errors name only its prefix.
        """
        whole = ref.startswith(KEY_PREFIX) and ref.count("_") >= 2 and len(ref) > 32
        shown = "_".join(ref.split("_")[:2]) + "_…" if whole else ref
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE (id = ? OR prefix = ? OR hash = ?)"
        params: list[Any] = [ref, ref, key_hash(ref) if whole else ""]
        if tenant_id is not None:
            sql += " AND tenant_id = ?"
            params.append(tenant_id)
        row = self._one(sql, params)
        if row is None:
            raise NotFound(t("errors.store.api_key_not_found", shown=shown), {"key": shown})
        return key_from_row(row)

    def revoke_api_key(self, ref: str, tenant_id: str | None = None) -> ApiKey:
        """Revoke the key (idempotent); see get_api_key for ``ref`` and ``tenant_id``."""
        key = self.get_api_key(ref, tenant_id)
        with self._write() as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                (iso(self._clock()), key.id),
            )
        self.generation += 1
        return self.get_api_key(key.id, key.tenant_id)

    def lookup_key(self, hashed: str) -> KeyGrant | None:
        """The key whose sha256 is ``hashed`` (secrets.key_hash) with its tenant, or None."""
        row = self._one(
            "SELECT k.id AS key_id, k.tenant_id, k.prefix, k.role, k.scopes, k.rate_limit, k.expires_at,"
            " k.revoked_at, k.created_by, k.created_at AS key_created_at, k.last_used_at, t.*"
            " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.hash = ?",
            (hashed,),
        )
        if row is None:
            return None
        key = key_from_row({**row, "id": row["key_id"], "created_at": row["key_created_at"]})
        return KeyGrant(key, tenant_from_row(row))

    def touch_keys(self, key_ids: Iterable[str], at: float) -> None:
        """Record last use; batched by the authenticator so a request never waits for a write."""
        ids = list(key_ids)
        if not ids:
            return
        with self._write() as conn:
            conn.executemany(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?", [(iso(at), key_id) for key_id in ids]
            )

    # tokens

    def user_grant(self, tenant_id: str, user_id: str, jti: str | None, family: str | None = None) -> UserGrant:
        """What a verified JWT's user, tenant and revocation stand for now, in one read: revoked
        when its ``jti`` is (None: not asked) or its whole ``family`` is (see ``revoke_family``)."""
        names = [name for name in (jti, family_key(family) if family else None) if name is not None]
        revoked = bool(names) and self._one(
            f"SELECT jti FROM revoked_tokens WHERE jti IN ({', '.join('?' * len(names))})", names
        ) is not None
        tenant_row = self._one("SELECT * FROM tenants WHERE id = ?", (tenant_id,))
        user_row = self._one(
            f"SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ? AND id = ?", (tenant_id, user_id)
        )
        return UserGrant(
            user_from_row(user_row) if user_row else None, tenant_from_row(tenant_row) if tenant_row else None, revoked
        )

    def revoke_token(self, jti: str, expires_at: float) -> bool:
        """Revoke ``jti``; False when it already was (a reused refresh token)."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?, ?)", (jti, iso(expires_at))
            )
        return cursor.rowcount == 1

    def revoke_family(self, family: str, expires_at: float) -> bool:
        """Revoke every token of a login's family (refresh token reuse); kept, like a jti, until
        ``expires_at``, when the newest token of the family has expired anyway."""
        return self.revoke_token(family_key(family), expires_at)

    def purge_revoked_tokens(self) -> int:
        """Forget revocations of tokens that have expired anyway."""
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM revoked_tokens WHERE expires_at <= ?", (iso(self._clock()),))
        return cursor.rowcount

    # export

    def export_tenant(self, name: str) -> dict[str, Any]:
        """Everything the hub holds about tenant ``name``, without secrets or hashes."""
        tenant = self.get_tenant(name)
        users = self._all(f"SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ? ORDER BY created_at",
                          (tenant.id,))
        return {
            "exported_at": iso(self._clock()),
            "tenant": tenant.to_dict(),
            "users": [user_from_row(row).to_dict() for row in users],
            "api_keys": [key.to_dict() for key in self.list_api_keys(tenant.id)],
            "audit": self.audit_rows(tenant.id, limit=1_000_000),
        }
