"""What the ``tenant``, ``user`` and ``key`` commands share: the state dir's TenancyStore, the audit.

The CLI has no event loop, so it uses the store's plain methods.  A running daemon sees what
it writes (a revoked key, a deleted user) within a second: see daemon/tenancy/authn.py.
Every change made here is audited as ``cli:$USER``, as the admin routes audit theirs.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from collections.abc import Callable

from daemon.cli.errors import Command, CommandFailed
from daemon.runtime.config import state_dir_of
from daemon.tenancy.records import AuditEvent
from daemon.tenancy.store import TenancyStore

#: a tenancy command: the opened store and the parsed arguments in, the exit code out
StoreCommand = Callable[[TenancyStore, argparse.Namespace], int]


def with_store(command: StoreCommand) -> Command:
    """Run ``command`` on the state dir's store, closed afterwards; a database or disk failure names the file."""

    def run(args: argparse.Namespace) -> int:
        store = TenancyStore(state_dir_of(args))
        try:
            return command(store, args)
        except (sqlite3.Error, OSError) as exc:
            raise CommandFailed(f"{store.path}: {exc}") from exc
        finally:
            store.close()

    return run


def audit(store: TenancyStore, action: str, tenant_id: str | None, resource: str) -> None:
    """Record ``action`` on ``resource`` as done by ``cli:$USER`` (``cli`` when no user is known)."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    store.write_audit([AuditEvent(action, f"cli:{user}" if user else "cli", tenant_id, resource)])
