"""``democratic-ai usage | invoice | credits``: billing from the state dir.

``usage`` and ``invoice`` read the ledger file directly (read-only), so they work while the
daemon runs.  They price with ``--config``'s plans, else with the plans the hub last served with
from this state dir (``plans.json``, written at each start), never silently with other ones.
``credits`` writes through a UsageLedger of its own; every batch chains onto
the file's true head under SQLite's write lock, so it is safe beside a running daemon
(which sees the new balance on its next write or refusal).

Tenants are looked up in tenancy.db read-only, by name, without opening the TenancyStore:
billing never writes there.

On the central billing node, ``invoice --all-sites`` bills a tenant (the same id at every site)
from ``central.db``, the rows every site synced there: one invoice whose usage totals all sites,
and each site's share beside it.  ``usage`` takes sub-commands from the caller
(``usage export``, see sync.py) while ``usage --tenant NAME`` stays as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.cli.errors import CliError
from daemon.cli.ledger import ledger_path
from daemon.cli.output import print_json
from daemon.cli.parsing import SubParsers, add_command, add_config_option, add_group
from daemon.core.i18n import t
from daemon.runtime.config import HubConfig, PlanConfig, state_dir_of

if TYPE_CHECKING:
    from daemon.metering.billing import Invoice

#: ``register``'s hook that adds sub-commands under ``usage`` (``usage export``): gets the
#: sub-parsers of ``usage`` and the parents every leaf takes
UsageSubcommands = Callable[[SubParsers, list[argparse.ArgumentParser]], None]


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
        raise CliError(t("cli.cli_billing.no_tenancy_database_state", path=path))
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT id, name, plan, timezone FROM tenants WHERE name = ?", (name,)).fetchone()
    except sqlite3.Error as exc:
        raise CliError(t("cli.cli_billing.cannot_read_tenants", path=path, exc=exc)) from None
    finally:
        conn.close()
    if row is None:
        raise CliError(t("cli.cli_billing.no_tenant_named", name=name))
    return TenantRow(*row)


def _plan(args: argparse.Namespace, config: HubConfig, state_dir: Path, tenant: TenantRow) -> tuple[str, PlanConfig]:
    """The tenant's plan from ``--config``, else from the plans the hub last served with here."""
    from daemon.metering.plans import PLANS_FILE, load_plans

    if getattr(args, "config", None):
        plans, source = config.plans, str(args.config)
    else:
        served = load_plans(state_dir)
        if served is None:
            raise CliError(t("cli.cli_billing.no_hub_not_served", plans_file=PLANS_FILE, state_dir=state_dir))
        plans, source = served, str(state_dir / PLANS_FILE)
    if tenant.plan in plans:
        return tenant.plan, plans[tenant.plan]
    raise CliError(t("cli.cli_billing.tenant_plan_which_does", name=tenant.name, plan=tenant.plan, source=source))


def _need_ledger(state_dir: Path) -> Path:
    path = ledger_path(state_dir)
    if not path.is_file():
        raise CliError(t("cli.cli_billing.no_usage_ledger_hub", path=path))
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

    if not args.tenant:  # not required by argparse, so that ``usage export`` needs no tenant
        raise CliError(t("cli.cli_billing.usage_tenant_name_required"))
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
    if args.all_sites:
        return _all_sites_invoice(args, state_dir, tenant, plan_name, plan)
    inv = invoice_from_file(_need_ledger(state_dir), tenant.id, plan_name, plan, args.period,
                            tenant.timezone, tenant.name)
    if sys.stdout.isatty() and not args.json:
        print(inv.render_table())
    else:
        print_json(inv.to_dict())
    return 0


def _all_sites_invoice(args: argparse.Namespace, state_dir: Path, tenant: TenantRow, plan_name: str,
                       plan: PlanConfig) -> int:
    """``invoice --all-sites``: the tenant's invoice from every site's rows in central.db, with each site's share.

    The central ledger files each row under a billing period (a late row past the grace days
    under the month it arrived in, as an adjustment), and the invoice takes the rows filed under its own.
    """
    from daemon.cli.sync import open_central
    from daemon.metering.billing import build_invoice, metric_quantities, parse_period
    from daemon.metering.central import combine_totals

    bounds = parse_period(args.period)
    central = open_central(state_dir)
    names = {site.node_id: site.name for site in central.sites()}
    site_totals = central.totals(tenant.id, bounds.label)  # a year: its twelve months
    inv = build_invoice(combine_totals(tenant.id, site_totals.values()), plan_name, plan, bounds,
                        tenant.timezone, tenant.name)
    sites = [{"node_id": node_id, "name": names.get(node_id, ""), "events": totals.events,
              "usage": {metric: f"{quantity:f}" for metric, quantity in metric_quantities(totals).items()}}
             for node_id, totals in sorted(site_totals.items(), key=lambda item: (names.get(item[0], ""), item[0]))]
    if sys.stdout.isatty() and not args.json:
        print(inv.render_table())
        print(_sites_table(inv, sites))
    else:
        print_json({**inv.to_dict(), "sites": sites})
    return 0


def _sites_table(inv: Invoice, sites: list[dict[str, Any]]) -> str:
    """Each metric of the invoice, then one line per site under it: where the usage came from."""
    lines = ["", "By site:"]
    for metric, total in inv.usage.items():
        lines.append(f"  {metric}: {total:f}")
        for site in sites:
            lines.append(f"    {site['name'] or site['node_id']}  {site['usage'].get(metric, '0')}")
    return "\n".join(lines)


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


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser], *,
             usage_subcommands: UsageSubcommands | None = None) -> None:
    """Add ``usage``, ``invoice`` and ``credits top-up | enable | balance``.

    ``usage_subcommands`` adds sub-commands under ``usage`` (main.py passes ``usage export``).  They
    are optional: ``usage --tenant NAME`` (no sub-command) is the usage summary, as it always was.
    """
    usage = add_command(subparsers, "usage", parents, "a tenant's usage summary", cmd_usage)
    usage.add_argument("--tenant", metavar="NAME", help="the tenant (required without a sub-command)")
    usage.add_argument("--period", metavar="YYYY-MM", help="default: the current month (UTC)")
    add_config_option(usage)
    if usage_subcommands is not None:
        usage_subcommands(usage.add_subparsers(dest="usage_command", required=False, metavar="[export]"),
                          parents)

    invoice = add_command(subparsers, "invoice", parents, "a tenant's invoice for a month", cmd_invoice)
    invoice.add_argument("--tenant", required=True, metavar="NAME")
    invoice.add_argument("--period", required=True, metavar="YYYY-MM")
    invoice.add_argument("--all-sites", action="store_true",
                         help="on the central billing node: one invoice across every site (from central.db)")
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
