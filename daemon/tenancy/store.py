"""Tenants, users, API keys, revoked tokens and the audit log, in ``<state_dir>/tenancy.db``.

Threads: the store holds ONE SQLite connection (WAL).  The CLI, which runs without an
event loop, calls the plain methods on its main thread.  The daemon calls only the
``async_*`` methods, which run the plain ones on the store's single dedicated thread: that
thread is the one writer of this database, and no SQLite call ever runs on the loop.
Never mix the two styles in one process.

Every read of tenant data takes a ``tenant_id`` (or returns the tenant it belongs to), so
callers cannot forget the scope.  Secrets are never stored: API keys as sha256 (a key is
32 random bytes, so a fast hash is right), passwords as argon2id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sqlite3
import time
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlite_utils

from daemon.core.errors import Conflict, NotFound, ValidationError
from daemon.runtime.files import atomic_write
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
    check_password,
    check_rate,
    check_role,
    check_tenant_name,
    hash_password,
    iso,
    key_from_row,
    key_hash,
    tenant_from_row,
    user_from_row,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

KEY_PREFIX = "dai_"
BOOTSTRAP_KEY_FILE = "bootstrap-admin.key"
AUDIT_QUEUE_MAX = 1024  # audit events waiting for the writer; beyond this callers wait for the write
AUDIT_BATCH_MAX = 256


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    plan TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    timezone TEXT NOT NULL DEFAULT 'UTC',
    credits_enabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    email TEXT,
    role TEXT NOT NULL,
    password_hash TEXT,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS users_tenant_email ON users(tenant_id, email);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    prefix TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    scopes TEXT NOT NULL DEFAULT '[]',
    rate_limit TEXT,
    expires_at TEXT,
    revoked_at TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys(tenant_id);
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    tenant_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    success INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_tenant ON audit(tenant_id, id);
"""


_KEY_COLUMNS = (
    "id, tenant_id, prefix, role, scopes, rate_limit, expires_at, revoked_at, created_by, "
    "created_at, last_used_at"
)
_USER_COLUMNS = "id, tenant_id, email, role, status, created_at"


# -- the store ------------------------------------------------------------------------------


class TenancyStore:
    """The tenancy database.  ``async with TenancyStore(dir)`` in the daemon; plain calls in the CLI."""

    def __init__(self, state_dir: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / "tenancy.db"
        self._clock = clock
        self._handle: sqlite_utils.Database | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._audit_queue: asyncio.Queue[AuditEvent | None] | None = None
        self._audit_task: asyncio.Task[None] | None = None
        #: bumped on every write here that can invalidate a cached credential, so the
        #: authenticator notices changes made through this connection (data_version does not)
        self.generation = 0

    # connection and transactions

    @property
    def _db(self) -> sqlite_utils.Database:
        if self._handle is None:
            self._handle = self._connect()
        return self._handle

    def _connect(self) -> sqlite_utils.Database:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = not self.path.exists()
        # one thread at a time uses it (see the module docstring), not always the creating one
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
        if fresh:
            os.chmod(self.path, 0o600)  # password and key hashes live here
        db = sqlite_utils.Database(conn)
        db.enable_wal()
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.executescript(_SCHEMA)
        return db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken up front, so check-then-insert
        (bootstrap, duplicate names) is race-free against a CLI in another process."""
        conn = self._db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        return next(iter(self._db.query(sql, params)), None)

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self._db.query(sql, params))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.conn.close()
            self._handle = None

    # the async face: one writer thread, the audit queue

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tenancy-db")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def start(self) -> None:
        """Open the database on the writer thread and start draining audit events."""
        await self._run(lambda: self._db)
        if self._audit_task is None:
            self._audit_queue = asyncio.Queue(maxsize=AUDIT_QUEUE_MAX)
            self._audit_task = asyncio.create_task(self._drain_audit(), name="tenancy-audit")

    async def aclose(self) -> None:
        """Write the queued audit events, close the connection, stop the writer thread."""
        task, queue = self._audit_task, self._audit_queue
        self._audit_task, self._audit_queue = None, None  # new events now go straight to the writer
        if task is not None and queue is not None:
            await queue.put(None)
            await task
        if self._executor is not None:
            await self._run(self.close)
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    async def __aenter__(self) -> TenancyStore:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def async_audit(self, event: AuditEvent) -> None:
        """Record ``event``.  Returns once it is queued for the writer, so a caller does not
        wait for the disk; when the queue is full or not running, once it is written."""
        queue = self._audit_queue
        if queue is not None:
            try:
                queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                pass
        await self._run(self.write_audit, [event])

    async def async_flush_audit(self) -> None:
        """Wait until every queued audit event is written."""
        if self._audit_queue is not None:
            await self._audit_queue.join()

    async def _drain_audit(self) -> None:
        queue = self._audit_queue
        assert queue is not None
        while True:
            batch: list[AuditEvent | None] = [await queue.get()]
            while len(batch) < AUDIT_BATCH_MAX and not queue.empty():
                batch.append(queue.get_nowait())
            events = [event for event in batch if event is not None]
            try:
                if events:
                    await self._run(self.write_audit, events)
            except asyncio.CancelledError:
                raise
            except sqlite3.Error:
                log.exception("audit write failed; %d audit events lost", len(events))
            finally:
                for _ in batch:
                    queue.task_done()
            if None in batch:
                return

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

    async def async_ensure_bootstrap(self) -> str | None:
        return await self._run(self.ensure_bootstrap)

    # tenants

    def _insert_tenant(
        self, conn: sqlite3.Connection, name: str, plan: str, timezone: str, credits: bool
    ) -> Tenant:
        tenant = Tenant(str(uuid.uuid4()), name, plan, "active", timezone, credits, iso(self._clock()))
        try:
            conn.execute(
                "INSERT INTO tenants (id, name, plan, status, timezone, credits_enabled, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant.id, name, plan, tenant.status, timezone, int(credits), tenant.created_at),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"tenant {name!r} already exists", {"field": "name"}) from None
        return tenant

    def create_tenant(
        self, name: str, plan: str = "starter", *, timezone: str = "UTC", credits_enabled: bool = False
    ) -> Tenant:
        check_tenant_name(name)
        if not isinstance(plan, str) or not plan:
            raise ValidationError("plan: must be a plan name", {"field": "plan"})
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValidationError(f"timezone: {timezone!r} is not a time zone", {"field": "timezone"}) from None
        with self._write() as conn:
            return self._insert_tenant(conn, name, plan, timezone, bool(credits_enabled))

    async def async_create_tenant(
        self, name: str, plan: str = "starter", *, timezone: str = "UTC", credits_enabled: bool = False
    ) -> Tenant:
        return await self._run(
            self.create_tenant, name, plan, timezone=timezone, credits_enabled=credits_enabled
        )

    def list_tenants(self) -> list[Tenant]:
        return [tenant_from_row(row) for row in self._all("SELECT * FROM tenants ORDER BY name")]

    async def async_list_tenants(self) -> list[Tenant]:
        return await self._run(self.list_tenants)

    def find_tenant(self, ref: str) -> Tenant | None:
        """The tenant named (or with the id) ``ref``, or None."""
        row = self._one("SELECT * FROM tenants WHERE name = ? OR id = ?", (ref, ref))
        return tenant_from_row(row) if row else None

    async def async_find_tenant(self, ref: str) -> Tenant | None:
        return await self._run(self.find_tenant, ref)

    def get_tenant(self, ref: str) -> Tenant:
        tenant = self.find_tenant(ref)
        if tenant is None:
            raise NotFound(f"tenant {ref!r} not found", {"tenant": ref})
        return tenant

    async def async_get_tenant(self, ref: str) -> Tenant:
        return await self._run(self.get_tenant, ref)

    def set_tenant_status(self, ref: str, status: str) -> Tenant:
        if status not in ("active", "suspended"):
            raise ValidationError(f"status: {status!r} is not active or suspended", {"field": "status"})
        tenant = self.get_tenant(ref)
        with self._write() as conn:
            conn.execute("UPDATE tenants SET status = ? WHERE id = ?", (status, tenant.id))
        self.generation += 1
        return self.get_tenant(tenant.id)

    async def async_set_tenant_status(self, ref: str, status: str) -> Tenant:
        return await self._run(self.set_tenant_status, ref, status)

    def set_tenant_plan(self, ref: str, plan: str) -> Tenant:
        tenant = self.get_tenant(ref)
        with self._write() as conn:
            conn.execute("UPDATE tenants SET plan = ? WHERE id = ?", (plan, tenant.id))
        self.generation += 1  # cached principals carry the plan: the authenticator drops them
        return self.get_tenant(tenant.id)

    async def async_set_tenant_plan(self, ref: str, plan: str) -> Tenant:
        return await self._run(self.set_tenant_plan, ref, plan)

    # users

    def create_user(self, tenant_id: str, email: str, role: str, password_hash: str) -> User:
        """Insert a user; hash the password with ``hash_password`` first (off the loop)."""
        email = check_email(email)
        check_role(role)
        user = User(str(uuid.uuid4()), tenant_id, email, role, "active", iso(self._clock()))
        with self._write() as conn:
            if self._one("SELECT id FROM tenants WHERE id = ?", (tenant_id,)) is None:
                raise NotFound(f"tenant {tenant_id!r} not found", {"tenant": tenant_id})
            try:
                conn.execute(
                    "INSERT INTO users (id, tenant_id, email, role, password_hash, status, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (user.id, tenant_id, email, role, password_hash, user.status, user.created_at),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"user {email!r} already exists in this tenant", {"field": "email"}) from None
        return user

    async def async_create_user(self, tenant_id: str, email: str, role: str, password: str) -> User:
        check_email(email)
        check_role(role)
        check_password(password)
        # argon2id takes ~0.1 s: hash on a pool thread, not on the one writer
        hashed = await asyncio.to_thread(hash_password, password)
        return await self._run(self.create_user, tenant_id, email, role, hashed)

    def list_users(self, tenant_id: str) -> list[User]:
        rows = self._all(
            f"SELECT {_USER_COLUMNS} FROM users WHERE tenant_id = ? AND status != 'deleted'"
            " ORDER BY created_at, email",
            (tenant_id,),
        )
        return [user_from_row(row) for row in rows]

    async def async_list_users(self, tenant_id: str) -> list[User]:
        return await self._run(self.list_users, tenant_id)

    def get_user(self, tenant_id: str, user_id: str) -> User:
        row = self._one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE tenant_id = ? AND id = ? AND status != 'deleted'",
            (tenant_id, user_id),
        )
        if row is None:
            raise NotFound(f"user {user_id!r} not found", {"user": user_id})
        return user_from_row(row)

    async def async_get_user(self, tenant_id: str, user_id: str) -> User:
        return await self._run(self.get_user, tenant_id, user_id)

    def find_login(self, tenant_name: str, email: str) -> LoginRecord | None:
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

    async def async_find_login(self, tenant_name: str, email: str) -> LoginRecord | None:
        return await self._run(self.find_login, tenant_name, email)

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

    async def async_delete_user_id(self, tenant_id: str, user_id: str) -> User:
        return await self._run(self.delete_user_id, tenant_id, user_id)

    def delete_user(self, email: str, tenant: str) -> User:
        """Erase the person ``email`` of tenant ``tenant`` (a name or id); see delete_user_id."""
        found = self.get_tenant(tenant)
        row = self._one(
            "SELECT id FROM users WHERE tenant_id = ? AND email = ? AND status != 'deleted'",
            (found.id, check_email(email)),
        )
        if row is None:
            raise NotFound(f"user {email!r} not found in tenant {found.name!r}", {"email": email})
        return self.delete_user_id(found.id, row["id"])

    async def async_delete_user(self, email: str, tenant: str) -> User:
        return await self._run(self.delete_user, email, tenant)

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
            prefix = KEY_PREFIX + secrets.token_hex(4)
            raw = f"{prefix}_{secrets.token_urlsafe(32)}"
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
        raise Conflict("could not draw a unique API key prefix; try again")

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
                raise ValidationError(f"scopes: {scope!r} is not within role {role}", {"field": "scopes"})
        if expires_at is not None and expires_at <= self._clock():
            raise ValidationError("expires_at: must be in the future", {"field": "expires_at"})
        with self._write() as conn:
            if self._one("SELECT id FROM tenants WHERE id = ?", (tenant_id,)) is None:
                raise NotFound(f"tenant {tenant_id!r} not found", {"tenant": tenant_id})
            expires = iso(expires_at) if expires_at is not None else None
            return self._insert_key(conn, tenant_id, role, rate_limit, expires, scope_list, created_by)

    async def async_create_api_key(
        self,
        tenant_id: str,
        role: str = "user",
        *,
        rate_limit: str | None = None,
        expires_at: float | None = None,
        scopes: Iterable[str] = (),
        created_by: str = "cli",
    ) -> tuple[ApiKey, str]:
        return await self._run(
            self.create_api_key, tenant_id, role, rate_limit=rate_limit, expires_at=expires_at,
            scopes=tuple(scopes), created_by=created_by,
        )

    def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        rows = self._all(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = ? ORDER BY created_at, prefix",
            (tenant_id,),
        )
        return [key_from_row(row) for row in rows]

    async def async_list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        return await self._run(self.list_api_keys, tenant_id)

    def get_api_key(self, ref: str, tenant_id: str | None) -> ApiKey:
        """The key with id or prefix ``ref``, within ``tenant_id`` (None: any tenant, operators only)."""
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE (id = ? OR prefix = ?)"
        params: list[Any] = [ref, ref]
        if tenant_id is not None:
            sql += " AND tenant_id = ?"
            params.append(tenant_id)
        row = self._one(sql, params)
        if row is None:
            raise NotFound(f"API key {ref!r} not found", {"key": ref})
        return key_from_row(row)

    async def async_get_api_key(self, ref: str, tenant_id: str | None) -> ApiKey:
        return await self._run(self.get_api_key, ref, tenant_id)

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

    async def async_revoke_api_key(self, ref: str, tenant_id: str | None = None) -> ApiKey:
        return await self._run(self.revoke_api_key, ref, tenant_id)

    def lookup_key(self, hashed: str) -> KeyGrant | None:
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

    async def async_lookup_key(self, hashed: str) -> KeyGrant | None:
        return await self._run(self.lookup_key, hashed)

    def touch_keys(self, key_ids: Iterable[str], at: float) -> None:
        """Record last use; batched by the authenticator so a request never waits for a write."""
        ids = list(key_ids)
        if not ids:
            return
        with self._write() as conn:
            conn.executemany(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?", [(iso(at), key_id) for key_id in ids]
            )

    async def async_touch_keys(self, key_ids: Iterable[str], at: float) -> None:
        await self._run(self.touch_keys, tuple(key_ids), at)

    # tokens

    def user_grant(self, tenant_id: str, user_id: str, jti: str) -> UserGrant:
        revoked = self._one("SELECT jti FROM revoked_tokens WHERE jti = ?", (jti,)) is not None
        tenant_row = self._one("SELECT * FROM tenants WHERE id = ?", (tenant_id,))
        user_row = self._one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE tenant_id = ? AND id = ?", (tenant_id, user_id)
        )
        return UserGrant(
            user_from_row(user_row) if user_row else None, tenant_from_row(tenant_row) if tenant_row else None, revoked
        )

    async def async_user_grant(self, tenant_id: str, user_id: str, jti: str) -> UserGrant:
        return await self._run(self.user_grant, tenant_id, user_id, jti)

    def revoke_token(self, jti: str, expires_at: float) -> bool:
        """Revoke ``jti``; False when it already was (a reused refresh token)."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?, ?)", (jti, iso(expires_at))
            )
        return cursor.rowcount == 1

    async def async_revoke_token(self, jti: str, expires_at: float) -> bool:
        return await self._run(self.revoke_token, jti, expires_at)

    def purge_revoked_tokens(self) -> int:
        """Forget revocations of tokens that have expired anyway."""
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM revoked_tokens WHERE expires_at <= ?", (iso(self._clock()),))
        return cursor.rowcount

    async def async_purge_revoked_tokens(self) -> int:
        return await self._run(self.purge_revoked_tokens)

    def data_version(self) -> int:
        """Changes whenever ANOTHER connection (the CLI) commits to this database."""
        row = self._db.conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    async def async_data_version(self) -> int:
        return await self._run(self.data_version)

    # audit and export

    def _insert_audit(self, conn: sqlite3.Connection, events: Sequence[AuditEvent]) -> None:
        conn.executemany(
            "INSERT INTO audit (at, tenant_id, actor, action, resource, ip, user_agent, success, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.at, e.tenant_id, e.actor, e.action, e.resource, e.ip[:64], e.user_agent[:256],
              int(e.success), e.error[:500]) for e in events],
        )

    def write_audit(self, events: Sequence[AuditEvent]) -> None:
        with self._write() as conn:
            self._insert_audit(conn, events)

    def audit_rows(self, tenant_id: str | None = None, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest audit rows, of one tenant or (None) of all, oldest first."""
        where, params = ("WHERE tenant_id = ?", [tenant_id]) if tenant_id is not None else ("", [])
        rows = self._all(f"SELECT * FROM audit {where} ORDER BY id DESC LIMIT ?", [*params, limit])
        for row in rows:
            row["success"] = bool(row["success"])
        return rows[::-1]

    async def async_audit_rows(self, tenant_id: str | None = None, *, limit: int = 1000) -> list[dict[str, Any]]:
        return await self._run(self.audit_rows, tenant_id, limit=limit)

    def export_tenant(self, name: str) -> dict[str, Any]:
        """Everything the hub holds about tenant ``name``, without secrets or hashes."""
        tenant = self.get_tenant(name)
        users = self._all(f"SELECT {_USER_COLUMNS} FROM users WHERE tenant_id = ? ORDER BY created_at",
                          (tenant.id,))
        return {
            "exported_at": iso(self._clock()),
            "tenant": tenant.to_dict(),
            "users": [user_from_row(row).to_dict() for row in users],
            "api_keys": [key.to_dict() for key in self.list_api_keys(tenant.id)],
            "audit": self.audit_rows(tenant.id, limit=1_000_000),
        }

    async def async_export_tenant(self, name: str) -> dict[str, Any]:
        return await self._run(self.export_tenant, name)
