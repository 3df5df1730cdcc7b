"""``democratic-ai user create | delete``: people of a tenant, straight on the state dir."""

from __future__ import annotations

import argparse
import sys

from daemon.cli.errors import CliError
from daemon.cli.output import note
from daemon.cli.parsing import SubParsers, add_command, add_group
from daemon.cli.tenancy import audit, with_store
from daemon.core.i18n import t
from daemon.tenancy.rbac import ROLE_NAMES
from daemon.tenancy.records import check_password
from daemon.tenancy.secrets import generate_password, hash_password
from daemon.tenancy.store import TenancyStore


def _create(store: TenancyStore, args: argparse.Namespace) -> int:
    tenant = store.get_tenant(args.tenant)
    if args.role not in ROLE_NAMES:
        raise CliError(t("cli.users.role_not_one", role=args.role, choices=', '.join(ROLE_NAMES)))
    generated = not args.password_stdin
    password = generate_password() if generated else sys.stdin.readline().rstrip("\r\n")
    check_password(password)
    user = store.create_user(tenant.id, args.email, args.role, hash_password(password))
    audit(store, "user.create", tenant.id, user.subject)
    note(t("cli.users.created", email=user.email, role=user.role, tenant=tenant.name, id=user.id))
    if generated:
        note(t("cli.users.password_shown_once"))
        print(password)
    return 0


def _delete(store: TenancyStore, args: argparse.Namespace) -> int:
    user = store.delete_user(args.email, args.tenant)
    audit(store, "user.delete", user.tenant_id, user.subject)
    print(f"deleted {args.email}: personal data removed, billing kept as anonymous {user.subject}")
    return 0


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``user create | delete``."""
    users = add_group(subparsers, "user", "people")
    p = add_command(users, "create", parents, "create a user (a password is generated and printed once, "
                    "unless --password-stdin)", with_store(_create))
    p.add_argument("email")
    p.add_argument("--tenant", required=True)
    p.add_argument("--role", required=True, help=", ".join(ROLE_NAMES))
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p = add_command(users, "delete", parents, "remove a person's data; billing stays, anonymous", with_store(_delete))
    p.add_argument("email")
    p.add_argument("--tenant", required=True)
