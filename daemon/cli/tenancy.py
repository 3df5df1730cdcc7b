"""``democratic-ai tenant|user|key ...``: tenancy administration, straight on the state dir.

The CLI has no event loop, so it uses the store's plain methods.  A running daemon sees
what it writes (a revoked key, a deleted user) within a second: see daemon/auth.py.

Exit codes: 0 done; 2 bad input (a duplicate or unknown name, a bad rate or role), with one
line on stderr and no traceback; 1 anything else that went wrong (the database, the disk).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemon.core.errors import ConfigError, Conflict, HubError, NotFound, ValidationError
from daemon.runtime.config import HubConfig, state_dir_of
from daemon.tenancy.rbac import ROLE_NAMES
from daemon.tenancy.records import ApiKey, AuditEvent, check_password, from_iso, generate_password, hash_password
from daemon.tenancy.store import TenancyStore

#: the lead's hook for ``tenant export``: gets the state dir and the export, returns extra
#: top-level keys to merge in (usage, invoices from the ledger)
ExportExtra = Callable[[Path, dict[str, Any]], dict[str, Any]]
Command = Callable[[TenancyStore, argparse.Namespace], int]
SubParsers = argparse._SubParsersAction  # argparse exposes no public name for it

_BAD_INPUT = (ValidationError, Conflict, NotFound, ConfigError)


class _BadInput(Exception):
    """Bad input found by the CLI itself (not the store); exit 2."""


def state_dir_parent() -> argparse.ArgumentParser:
    """A parent parser with ``--state-dir``, for callers that have none (tests, ``main``)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--state-dir", default=None, help="state directory (default: ./var or $STATE_DIRECTORY)")
    return parent


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    """Open the store, run ``command``, turn known failures into one stderr line and an exit code."""

    def run(args: argparse.Namespace) -> int:
        store = TenancyStore(state_dir_of(args))
        try:
            return command(store, args)
        except (*_BAD_INPUT, _BadInput) as exc:
            print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
            return 2
        except HubError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        except (sqlite3.Error, OSError) as exc:
            print(f"error: {store.path}: {exc}", file=sys.stderr)
            return 1
        finally:
            store.close()

    return run


def _audit(store: TenancyStore, action: str, tenant_id: str | None, resource: str) -> None:
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    store.write_audit([AuditEvent(action, f"cli:{user}" if user else "cli", tenant_id, resource)])


def _plans(args: argparse.Namespace) -> tuple[str, ...]:
    """Plan names from the config (``--config`` when the caller's parser has one; else defaults)."""
    return tuple(HubConfig.from_toml(getattr(args, "config", None)).plans)


# tenants


def _tenant_create(store: TenancyStore, args: argparse.Namespace) -> int:
    plans = _plans(args)
    if args.plan not in plans:
        raise _BadInput(f"plan: {args.plan!r} is not one of {', '.join(plans)}")
    tenant = store.create_tenant(args.name, args.plan)
    _audit(store, "tenant.create", tenant.id, f"tenant:{tenant.id}")
    print(f"created tenant {tenant.name} (plan {tenant.plan}, id {tenant.id})")
    return 0


def _tenant_list(store: TenancyStore, args: argparse.Namespace) -> int:
    rows = [(t.name, t.plan, t.status, t.id) for t in store.list_tenants()]
    _print_table(("NAME", "PLAN", "STATUS", "ID"), rows)
    return 0


def _tenant_export(export_extra: ExportExtra | None) -> Command:
    def export(store: TenancyStore, args: argparse.Namespace) -> int:
        data = store.export_tenant(args.name)
        _audit(store, "tenant.export", data["tenant"]["id"], f"tenant:{data['tenant']['id']}")
        if export_extra is not None:
            data.update(export_extra(store.state_dir, data))
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return 0

    return export


# users


def _user_create(store: TenancyStore, args: argparse.Namespace) -> int:
    tenant = store.get_tenant(args.tenant)
    if args.role not in ROLE_NAMES:
        raise _BadInput(f"role: {args.role!r} is not one of {', '.join(ROLE_NAMES)}")
    generated = not args.password_stdin
    password = generate_password() if generated else sys.stdin.readline().rstrip("\r\n")
    check_password(password)
    user = store.create_user(tenant.id, args.email, args.role, hash_password(password))
    _audit(store, "user.create", tenant.id, user.subject)
    print(f"created user {user.email} ({user.role}) in tenant {tenant.name}, id {user.id}", file=sys.stderr)
    if generated:
        print("password (shown once, store it now):", file=sys.stderr)
        print(password)
    return 0


def _user_delete(store: TenancyStore, args: argparse.Namespace) -> int:
    user = store.delete_user(args.email, args.tenant)
    _audit(store, "user.delete", user.tenant_id, user.subject)
    print(f"deleted {args.email}: personal data removed, billing kept as anonymous {user.subject}")
    return 0


# keys


def _key_create(store: TenancyStore, args: argparse.Namespace) -> int:
    tenant = store.get_tenant(args.tenant)
    expires_at = None
    if args.expires_days is not None:
        if args.expires_days <= 0:
            raise _BadInput("--expires-days: must be a positive number of days")
        expires_at = time.time() + args.expires_days * 86400
    key, raw = store.create_api_key(
        tenant.id, args.role, rate_limit=args.rate, expires_at=expires_at, created_by="cli"
    )
    _audit(store, "api_key.create", tenant.id, key.subject)
    print(f"created key {key.prefix} ({key.role}) for tenant {tenant.name}; shown once, store it now:",
          file=sys.stderr)
    print(raw)
    return 0


def _key_revoke(store: TenancyStore, args: argparse.Namespace) -> int:
    scope = store.get_tenant(args.tenant).id if args.tenant else None
    key = store.revoke_api_key(args.prefix, scope)
    _audit(store, "api_key.revoke", key.tenant_id, key.subject)
    print(f"revoked {key.prefix}")
    return 0


def _key_list(store: TenancyStore, args: argparse.Namespace) -> int:
    tenant = store.get_tenant(args.tenant)
    rows = [(k.prefix, k.role, k.rate_limit or "-", _key_state(k), k.expires_at or "-",
             k.last_used_at or "-", k.created_by) for k in store.list_api_keys(tenant.id)]
    _print_table(("PREFIX", "ROLE", "RATE", "STATE", "EXPIRES", "LAST USED", "CREATED BY"), rows)
    return 0


def _key_state(key: ApiKey) -> str:
    if key.revoked_at:
        return "revoked"
    if key.expires_at and from_iso(key.expires_at) <= time.time():
        return "expired"
    return "active"


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# wiring


def register(
    subparsers: SubParsers,
    parents: list[argparse.ArgumentParser],
    *,
    export_extra: ExportExtra | None = None,
) -> None:
    """Add ``tenant``, ``user`` and ``key``; every leaf gets ``parents`` and ``func(args) -> int``."""

    def leaf(group: SubParsers, name: str, help_text: str, command: Command) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(name, parents=parents, help=help_text,
                                                           description=help_text)
        parser.set_defaults(func=_run(command))
        return parser

    tenants = subparsers.add_parser("tenant", help="tenants").add_subparsers(
        dest="tenant_command", required=True, metavar="COMMAND")
    p = leaf(tenants, "create", "create a tenant", _tenant_create)
    p.add_argument("name")
    p.add_argument("--plan", default="starter", help="a plan from the config (default: starter)")
    leaf(tenants, "list", "list tenants", _tenant_list)
    p = leaf(tenants, "export", "print everything held about a tenant, as JSON", _tenant_export(export_extra))
    p.add_argument("name")

    users = subparsers.add_parser("user", help="people").add_subparsers(
        dest="user_command", required=True, metavar="COMMAND")
    p = leaf(users, "create", "create a user (a password is generated and printed once, "
             "unless --password-stdin)", _user_create)
    p.add_argument("email")
    p.add_argument("--tenant", required=True)
    p.add_argument("--role", required=True, help=", ".join(ROLE_NAMES))
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p = leaf(users, "delete", "remove a person's data; billing stays, anonymous", _user_delete)
    p.add_argument("email")
    p.add_argument("--tenant", required=True)

    keys = subparsers.add_parser("key", help="API keys").add_subparsers(
        dest="key_command", required=True, metavar="COMMAND")
    p = leaf(keys, "create", "create an API key (printed once)", _key_create)
    p.add_argument("--tenant", required=True)
    p.add_argument("--role", default="user", help=", ".join(ROLE_NAMES) + " (default: user)")
    p.add_argument("--rate", default=None, help="the key's own rate limit, e.g. 100/min")
    p.add_argument("--expires-days", type=int, default=None)
    p = leaf(keys, "revoke", "revoke an API key by its prefix", _key_revoke)
    p.add_argument("prefix")
    p.add_argument("--tenant", default=None, help="only within this tenant")
    p = leaf(keys, "list", "list a tenant's API keys", _key_list)
    p.add_argument("--tenant", required=True)


def build_parser(export_extra: ExportExtra | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="democratic-ai")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
             [state_dir_parent()], export_extra=export_extra)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (``python -m daemon.cli.tenancy``) until daemon/cli.py mounts these."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
