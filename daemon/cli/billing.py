"""``democratic-ai usage | invoice | credits``: billing from the state dir.

``usage`` and ``invoice`` read the ledger file directly (read-only), so they work while the
daemon runs.  They price with ``--config``'s plans, else with the plans the hub last served with
from this state dir (``plans.json``, written at each start), never silently with other ones.
``credits`` writes through a UsageLedger of its own; every batch chains onto
the file's true head under SQLite's write lock, so it is safe beside a running daemon
(which sees the new balance on its next write or refusal).

Tenants are looked up in tenancy.db read-only, by name, without opening the TenancyStore:
billing never writes there.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from daemon.cli.errors import CliError
from daemon.cli.ledger import ledger_path
from daemon.cli.output import print_json
from daemon.cli.parsing import SubParsers, add_command, add_config_option, add_group
from daemon.runtime.config import HubConfig, PlanConfig, state_dir_of


@dataclass(frozen=True, slots=True)
class TenantRow:
    """What billing needs of a tenant: its id (the ledger's key), plan and timezone (the period's edges)."""

    id: str
    name: str
    plan: str
    timezone: str


def _state_dir(args: argparse.Namespace, config: HubConfig) -> Path:
    """``--state-dir`` when given, else the config's ``[state] dir``."""
    return Path(args.state_dir) if getattr(args, "state_dir", None) else config.state_dir


def find_tenant(state_dir: Path, name: str) -> TenantRow:
    """Tenant name -> id, plan, timezone, from the tenancy database (read-only)."""
    path = state_dir / "tenancy.db"
    if not path.is_file():
        raise CliError(f"no tenancy database at {path}; is --state-dir right?")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT id, name, plan, timezone FROM tenants WHERE name = ?", (name,)).fetchone()
    except sqlite3.Error as exc:
        raise CliError(f"cannot read tenants from {path}: {exc}") from None
    finally:
        conn.close()
    if row is None:
        raise CliError(f"no tenant named {name!r}")
    return TenantRow(*row)


def _plan(args: argparse.Namespace, config: HubConfig, state_dir: Path, tenant: TenantRow) -> tuple[str, PlanConfig]:
    """The tenant's plan from ``--config``, else from the plans the hub last served with here."""
    from daemon.metering.plans import PLANS_FILE, load_plans

    if getattr(args, "config", None):
        plans, source = config.plans, str(args.config)
    else:
        served = load_plans(state_dir)
        if served is None:
            raise CliError(f"no {PLANS_FILE} in {state_dir}: the hub has not served from this state dir, so its "
                           "plans are unknown; pass --config with the hub's config file")
        plans, source = served, str(state_dir / PLANS_FILE)
    if tenant.plan in plans:
        return tenant.plan, plans[tenant.plan]
    raise CliError(f"tenant {tenant.name!r} is on plan {tenant.plan!r}, which {source} does not define")


def _need_ledger(state_dir: Path) -> Path:
    path = ledger_path(state_dir)
    if not path.is_file():
        raise CliError(f"no usage ledger at {path}; has the hub run here?")
    return path


def _balance(ledger: Path, tenant: TenantRow) -> str | None:
    """The tenant's prepaid balance as the ledger stores it; None when the tenant is not prepaid."""
    from daemon.metering.ledger.chain import connect_ro

    conn = connect_ro(ledger)
    try:
        row = conn.execute("SELECT balance FROM credit_balances WHERE tenant_id = ?", (tenant.id,)).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


def cmd_usage(args: argparse.Namespace) -> int:
    """A tenant's usage summary for a month (default: this month, UTC), with its credits."""
    from daemon.metering.billing import current_period, invoice_from_file, report

    config = HubConfig.from_toml(getattr(args, "config", None))
    state_dir = _state_dir(args, config)
    tenant = find_tenant(state_dir, args.tenant)
    plan_name, plan = _plan(args, config, state_dir, tenant)
    path = _need_ledger(state_dir)
    inv = invoice_from_file(path, tenant.id, plan_name, plan, args.period or current_period(time.time()),
                            tenant.timezone, tenant.name)
    balance = _balance(path, tenant)
    print_json(report(inv, None if balance is None else Decimal(balance)))
    return 0


def cmd_invoice(args: argparse.Namespace) -> int:
    """A tenant's invoice: a table on a terminal, JSON otherwise (or with ``--json``)."""
    from daemon.metering.billing import invoice_from_file, parse_period

    parse_period(args.period)  # a bad period is refused before anything else is read
    config = HubConfig.from_toml(getattr(args, "config", None))
    state_dir = _state_dir(args, config)
    tenant = find_tenant(state_dir, args.tenant)
    plan_name, plan = _plan(args, config, state_dir, tenant)
    inv = invoice_from_file(_need_ledger(state_dir), tenant.id, plan_name, plan, args.period,
                            tenant.timezone, tenant.name)
    if sys.stdout.isatty() and not args.json:
        print(inv.render_table())
    else:
        print_json(inv.to_dict())
    return 0


def _write(args: argparse.Namespace, kind: str) -> int:
    """Append a top-up or an account opening to the ledger; print its receipt and the new balance."""
    from daemon.metering.ledger.writer import UsageLedger

    config = HubConfig.from_toml(getattr(args, "config", None))
    state_dir = _state_dir(args, config)
    tenant = find_tenant(state_dir, args.tenant)

    async def go() -> dict[str, Any]:
        async with UsageLedger(ledger_path(state_dir), config.ledger) as ledger:
            if kind == "top_up":
                receipt = await ledger.top_up(tenant.id, args.amount, args.actor)
            else:
                receipt = await ledger.open_account(tenant.id, args.actor)
            balance = ledger.balance(tenant.id)
        return {"tenant": tenant.name, "tenant_id": tenant.id, "receipt": receipt.to_dict(),
                "balance": None if balance is None else f"{balance:f}"}

    print_json(asyncio.run(go()))
    return 0


def cmd_top_up(args: argparse.Namespace) -> int:
    """Add credits; a tenant that was not prepaid becomes prepaid."""
    return _write(args, "top_up")


def cmd_enable(args: argparse.Namespace) -> int:
    """Make a tenant prepaid at a balance of 0."""
    return _write(args, "account")


def cmd_balance(args: argparse.Namespace) -> int:
    """Whether a tenant is prepaid, and its balance."""
    state_dir = state_dir_of(args)
    tenant = find_tenant(state_dir, args.tenant)
    balance = _balance(_need_ledger(state_dir), tenant)
    print_json({"tenant": tenant.name, "prepaid": balance is not None, "balance": balance})
    return 0


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``usage``, ``invoice`` and ``credits top-up | enable | balance``."""
    usage = add_command(subparsers, "usage", parents, "a tenant's usage summary", cmd_usage)
    usage.add_argument("--tenant", required=True, metavar="NAME")
    usage.add_argument("--period", metavar="YYYY-MM", help="default: the current month (UTC)")
    add_config_option(usage)

    invoice = add_command(subparsers, "invoice", parents, "a tenant's invoice for a month", cmd_invoice)
    invoice.add_argument("--tenant", required=True, metavar="NAME")
    invoice.add_argument("--period", required=True, metavar="YYYY-MM")
    invoice.add_argument("--json", action="store_true", help="JSON even on a terminal")
    add_config_option(invoice)

    credits = add_group(subparsers, "credits", "prepaid credits")
    top_up = add_command(credits, "top-up", parents, "add credits (makes the tenant prepaid)", cmd_top_up)
    top_up.add_argument("--tenant", required=True, metavar="NAME")
    top_up.add_argument("amount", metavar="AMOUNT")
    top_up.add_argument("--actor", default="admin:cli", help="who, as an opaque id (default admin:cli)")
    enable = add_command(credits, "enable", parents, "make the tenant prepaid at a balance of 0", cmd_enable)
    enable.add_argument("--tenant", required=True, metavar="NAME")
    enable.add_argument("--actor", default="admin:cli")
    balance = add_command(credits, "balance", parents, "a tenant's credit balance", cmd_balance)
    balance.add_argument("--tenant", required=True, metavar="NAME")
