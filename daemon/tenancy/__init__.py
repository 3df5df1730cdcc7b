"""Tenancy: who may call the hub, as whom, and what they did.

- records.py — Tenant, User, ApiKey, KeyGrant, UserGrant, LoginRecord, AuditEvent (frozen),
  ``iso``/``from_iso`` times and the input checks (``check_email``, ``check_role``, ...);
- rbac.py — ROLES and their permissions, ``allows``, ``can_grant``, ``is_cross_tenant``;
- secrets.py — secrets at rest: argon2id passwords, API key generation and ``key_hash``,
  ``generate_password``, ``load_jwt_secret`` (the HS256 key file);
- tokens.py — JWT access/refresh pairs: ``issue_pair``, ``verify``, TokenRejected (no I/O);
- schema.py — the tables of tenancy.db, ``connect``, rows to records;
- audit.py — AuditQueue: audit events waiting for the writer, written in batches;
- database.py — TenancyDatabase: the one connection, transactions, the writer thread
  (``run``), the audit log;
- store.py — TenancyStore: tenants, users, API keys and revoked tokens (plain methods; the
  daemon runs them with ``await store.run(store.method, ...)``);
- cache.py — CredentialCache: verified credentials by sha256, with the revocation epoch;
- throttle.py — IpLimiter (per client IP) and FailureTally (failures per minute), sans-IO;
- guard.py — AuthGuard: those two in front of authentication and login, tallies to the audit log;
- passwords.py — PasswordPool: argon2id on its own bounded pool;
- authn.py — Authenticator: credentials to a Principal through a cache, login, refresh
  (with reuse detection), revocation.
"""
