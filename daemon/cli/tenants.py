"""``democratic-ai tenant create | list | export``: tenants, straight on the state dir."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.cli.errors import CliError
from daemon.cli.output import print_json, print_table
from daemon.cli.parsing import SubParsers, add_command, add_group
from daemon.cli.tenancy import StoreCommand, audit, with_store
from daemon.core.i18n import t
from daemon.runtime.config import HubConfig
from daemon.tenancy.store import TenancyStore

#: ``tenant export``'s hook for data kept outside the tenancy store: gets the state dir and the
#: export, returns top-level keys to merge in (main.py passes the ledger's usage and invoices)
ExportExtra = Callable[[Path, dict[str, Any]], dict[str, Any]]


def _plans(args: argparse.Namespace) -> tuple[str, ...]:
    """Plan names from the config (``--config`` when the caller's parser has one; else defaults)."""
    return tuple(HubConfig.from_toml(getattr(args, "config", None)).plans)


def _create(store: TenancyStore, args: argparse.Namespace) -> int:
    plans = _plans(args)
    if args.plan not in plans:
        raise CliError(t("cli.tenants.plan_not_one", plan=args.plan, choices=', '.join(plans)))
    tenant = store.create_tenant(args.name, args.plan, tenant_id=args.id)
    audit(store, "tenant.create", tenant.id, f"tenant:{tenant.id}")
    print(f"created tenant {tenant.name} (plan {tenant.plan}, id {tenant.id})")
    return 0


def _list(store: TenancyStore, args: argparse.Namespace) -> int:
    print_table(("NAME", "PLAN", "STATUS", "ID"), [(t.name, t.plan, t.status, t.id) for t in store.list_tenants()])
    return 0


def _export(export_extra: ExportExtra | None) -> StoreCommand:
    def export(store: TenancyStore, args: argparse.Namespace) -> int:
        data = store.export_tenant(args.name)
        audit(store, "tenant.export", data["tenant"]["id"], f"tenant:{data['tenant']['id']}")
        if export_extra is not None:
            data.update(export_extra(store.state_dir, data))
        print_json(data)
        return 0

    return export


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser], *,
             export_extra: ExportExtra | None = None) -> None:
    """Add ``tenant create | list | export``; ``export_extra`` adds what other stores hold to an export."""
    tenants = add_group(subparsers, "tenant", "tenants")
    p = add_command(tenants, "create", parents, "create a tenant", with_store(_create))
    p.add_argument("name")
    p.add_argument("--plan", default="starter", help="a plan from the config (default: starter)")
    # provisioning (the Ansible role) makes tenants of the plans its hub.toml defines before the hub starts
    p.add_argument("--config", help="TOML config file whose [plans] --plan names (default: the embedded plans)")
    p.add_argument("--id", metavar="UUID",
                   help="the tenant's id (default: a new one); give a tenant the same id at every site of a fleet")
    add_command(tenants, "list", parents, "list tenants", with_store(_list))
    p = add_command(tenants, "export", parents, "print everything held about a tenant, as JSON",
                    with_store(_export(export_extra)))
    p.add_argument("name")
