"""The tables of ``tenancy.db``, how a connection to it is opened, and rows to records.

Times are stored as fixed-width UTC text (records.iso), so text order is time order in
SQL.  Secrets never appear in clear: ``api_keys.hash`` is sha256 of the key and
``users.password_hash`` argon2id (secrets.py); the file itself is 0600.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import sqlite_utils

from daemon.tenancy.records import ApiKey, Tenant, User

SCHEMA = """
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
CREATE INDEX IF NOT EXISTS users_email ON users(email);
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
    error TEXT NOT NULL DEFAULT '',
    count INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS audit_tenant ON audit(tenant_id, id);
"""

#: the columns of ApiKey and User: never the key hash or the password hash
KEY_COLUMNS = (
    "id, tenant_id, prefix, role, scopes, rate_limit, expires_at, revoked_at, created_by, "
    "created_at, last_used_at"
)
USER_COLUMNS = "id, tenant_id, email, role, status, created_at"


def connect(path: Path) -> sqlite_utils.Database:
    """Open (creating it 0600 in a 0700 directory if need be) the database at ``path``:
    WAL, foreign keys on, synchronous=NORMAL, the schema in place."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fresh = not path.exists()
    # one thread at a time uses it (see store.py), not always the creating one
    conn = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
    if fresh:
        os.chmod(path, 0o600)  # password and key hashes live here
    db = sqlite_utils.Database(conn)
    db.enable_wal()
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
    conn.executescript(SCHEMA)
    _migrate(conn)
    return db


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a tenancy.db made by an older hub up to SCHEMA (columns added since)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
    if "count" not in columns:  # failed authentications became one row per minute with a count
        conn.execute("ALTER TABLE audit ADD COLUMN count INTEGER NOT NULL DEFAULT 1")


def tenant_from_row(row: dict[str, Any]) -> Tenant:
    """A ``tenants`` row (or a join carrying its columns) as a Tenant."""
    return Tenant(
        id=row["id"],
        name=row["name"],
        plan=row["plan"],
        status=row["status"],
        timezone=row["timezone"],
        credits_enabled=bool(row["credits_enabled"]),
        created_at=row["created_at"],
    )


def user_from_row(row: dict[str, Any]) -> User:
    """A row of USER_COLUMNS as a User."""
    return User(
        id=row["id"],
        tenant_id=row["tenant_id"],
        email=row["email"],
        role=row["role"],
        status=row["status"],
        created_at=row["created_at"],
    )


def key_from_row(row: dict[str, Any]) -> ApiKey:
    """A row of KEY_COLUMNS as an ApiKey (``scopes`` is stored as a JSON list)."""
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        prefix=row["prefix"],
        role=row["role"],
        scopes=tuple(json.loads(row["scopes"] or "[]")),
        rate_limit=row["rate_limit"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )
