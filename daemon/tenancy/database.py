"""TenancyDatabase: tenancy.db's one connection, its transactions, the one thread that may
use it, and the audit log.  TenancyStore (store.py) builds its queries on it.

Threads: ONE SQLite connection (WAL).  The CLI, which runs without an event loop, calls
the store's plain methods directly on its main thread.  The daemon calls the same methods
through ``await store.run(store.method, ...)``, which runs them on a single dedicated
thread: that thread is the one writer of this database, and no SQLite call ever runs on
the loop.  Never mix the two styles in one process.  Audit events from the loop go
through ``await store.audit(event)`` (a queue, audit.py), so a request does not wait for
the disk.

A CLI command holds the write lock for a moment.  The daemon waits for it at most
``DAEMON_BUSY_TIMEOUT_MS`` (its one writer thread serves every lookup, so a long wait would
stall them all), then the call gets 503 UNAVAILABLE with Retry-After, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, Self, TypeVar

import sqlite_utils

from daemon.core.errors import Unavailable
from daemon.core.i18n import t
from daemon.tenancy.audit import AuditQueue
from daemon.tenancy.records import AuditEvent
from daemon.tenancy.schema import connect

P = ParamSpec("P")
T = TypeVar("T")

#: how long the daemon's writer waits for a lock another process (the CLI) holds
DAEMON_BUSY_TIMEOUT_MS = 1000
#: what a caller is told to wait when the database is locked
LOCKED_RETRY_AFTER_S = 1.0


def _locked(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code): another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc) or "busy" in str(exc)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class TenancyDatabase:
    """``<state_dir>/tenancy.db``, opened on first use.  ``async with`` it in the daemon."""

    def __init__(self, state_dir: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / "tenancy.db"
        self._clock = clock
        self._handle: sqlite_utils.Database | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._audit = AuditQueue(lambda events: self.run(self.write_audit, events))

    # connection and transactions

    @property
    def _db(self) -> sqlite_utils.Database:
        if self._handle is None:
            self._handle = connect(self.path)
        return self._handle

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken up front, so check-then-insert
        (bootstrap, duplicate names) is race-free against a CLI in another process."""
        conn = self._db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()  # also after a failed commit: never leave the transaction open
            raise

    def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        return next(iter(self._db.query(sql, params)), None)

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self._db.query(sql, params))

    def data_version(self) -> int:
        """Changes whenever ANOTHER connection (the CLI) commits to this database."""
        row = self._db.conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection (the CLI's end; the daemon's is ``aclose``)."""
        if self._handle is not None:
            self._handle.conn.close()
            self._handle = None

    # the daemon's face: one writer thread, the audit queue

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)``, one of the store's plain methods, on the store's single writer
        thread, so the loop never waits for SQLite: ``await store.run(store.get_tenant, ref)``."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tenancy-db")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
            raise Unavailable(t("errors.database.tenancy_database_locked_another"), {"database": "tenancy"},
                              retry_after=LOCKED_RETRY_AFTER_S) from None

    async def start(self) -> None:
        """Open the database on the writer thread and start draining audit events."""
        await self.run(self._open_for_daemon)
        self._audit.start()

    def _open_for_daemon(self) -> None:
        self._db.conn.execute(f"PRAGMA busy_timeout = {DAEMON_BUSY_TIMEOUT_MS}")

    async def aclose(self) -> None:
        """Write the queued audit events, close the connection, stop the writer thread."""
        await self._audit.aclose()
        if self._executor is not None:
            await self.run(self.close)
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # the audit log

    async def audit(self, event: AuditEvent) -> None:
        """Record ``event``.  Returns once it is queued for the writer, so a caller does not
        wait for the disk; when the queue is full or not running, once it is written."""
        await self._audit.put(event)

    async def flush_audit(self) -> None:
        """Wait until every queued audit event is written."""
        await self._audit.join()

    def _insert_audit(self, conn: sqlite3.Connection, events: Sequence[AuditEvent]) -> None:
        conn.executemany(
            "INSERT INTO audit (at, tenant_id, actor, action, resource, ip, user_agent, success, error, count)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.at, e.tenant_id, e.actor, e.action, e.resource, e.ip[:64], e.user_agent[:256],
              int(e.success), e.error[:500], e.count) for e in events],
        )

    def write_audit(self, events: Sequence[AuditEvent]) -> None:
        """Write ``events`` now, in one transaction (the CLI's way; the loop's is ``audit``)."""
        with self._write() as conn:
            self._insert_audit(conn, events)

    def audit_rows(self, tenant_id: str | None = None, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest audit rows, of one tenant or (None) of all, oldest first."""
        where, params = ("WHERE tenant_id = ?", [tenant_id]) if tenant_id is not None else ("", [])
        rows = self._all(f"SELECT * FROM audit {where} ORDER BY id DESC LIMIT ?", [*params, limit])
        for row in rows:
            row["success"] = bool(row["success"])
        return rows[::-1]
