"""``democratic-ai key create | revoke | list``: a tenant's API keys, straight on the state dir.

A key is printed once, when it is made; after that only its prefix is shown.
"""

from __future__ import annotations

import argparse
import time

from daemon.cli.errors import CliError
from daemon.cli.output import note, print_table
from daemon.cli.parsing import SubParsers, add_command, add_group
from daemon.cli.tenancy import audit, with_store
from daemon.core.i18n import t
from daemon.tenancy.rbac import ROLE_NAMES
from daemon.tenancy.records import ApiKey, from_iso
from daemon.tenancy.store import TenancyStore

SECONDS_A_DAY = 86400


def _create(store: TenancyStore, args: argparse.Namespace) -> int:
    tenant = store.get_tenant(args.tenant)
    expires_at = None
    if args.expires_days is not None:
        if args.expires_days <= 0:
            raise CliError(t("cli.keys.expires_days_positive_number"))
        expires_at = time.time() + args.expires_days * SECONDS_A_DAY
    key, raw = store.create_api_key(
        tenant.id, args.role, rate_limit=args.rate, expires_at=expires_at, created_by="cli"
    )
    audit(store, "api_key.create", tenant.id, key.subject)
    note(t("cli.keys.created", prefix=key.prefix, role=key.role, tenant=tenant.name))
    print(raw)
    return 0


def _revoke(store: TenancyStore, args: argparse.Namespace) -> int:
    scope = store.get_tenant(args.tenant).id if args.tenant else None
    key = store.revoke_api_key(args.prefix, scope)
    audit(store, "api_key.revoke", key.tenant_id, key.subject)
    print(f"revoked {key.prefix}")
    return 0


def _list(store: TenancyStore, args: argparse.Namespace) -> int:
    tenant = store.get_tenant(args.tenant)
    rows = [(k.prefix, k.role, k.rate_limit or "-", key_state(k), k.expires_at or "-",
             k.last_used_at or "-", k.created_by) for k in store.list_api_keys(tenant.id)]
    print_table(("PREFIX", "ROLE", "RATE", "STATE", "EXPIRES", "LAST USED", "CREATED BY"), rows)
    return 0


def key_state(key: ApiKey) -> str:
    """``revoked``, ``expired`` (by the clock now) or ``active``; revocation wins over expiry."""
    if key.revoked_at:
        return "revoked"
    if key.expires_at and from_iso(key.expires_at) <= time.time():
        return "expired"
    return "active"


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``key create | revoke | list``."""
    keys = add_group(subparsers, "key", "API keys")
    p = add_command(keys, "create", parents, "create an API key (printed once)", with_store(_create))
    p.add_argument("--tenant", required=True)
    p.add_argument("--role", default="user", help=", ".join(ROLE_NAMES) + " (default: user)")
    p.add_argument("--rate", default=None, help="the key's own rate limit, e.g. 100/min")
    p.add_argument("--expires-days", type=int, default=None)
    p = add_command(keys, "revoke", parents, "revoke an API key by its prefix", with_store(_revoke))
    p.add_argument("prefix")
    p.add_argument("--tenant", default=None, help="only within this tenant")
    p = add_command(keys, "list", parents, "list a tenant's API keys", with_store(_list))
    p.add_argument("--tenant", required=True)
