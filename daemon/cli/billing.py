"""``democratic-ai usage | invoice | ledger verify | credits``: billing from the state dir.

These read the ledger file directly (read-only), so they work while the daemon
runs.  ``credits`` writes through a UsageLedger of its own; every batch chains
onto the file's true head under SQLite's write lock, so it is safe beside a
running daemon (which sees the new balance on its next write or refusal).

Exit codes: 0 ok, 1 ledger verification failed, 2 bad input (unknown tenant,
bad period, missing state).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.core.errors import ConfigError, HubError
from daemon.runtime.config import HubConfig, PlanConfig, state_dir_of


@dataclass(frozen=True, slots=True)
class TenantRow:
    id: str
    name: str
    plan: str
    timezone: str


class CliError(Exception):
    """A clear, user-facing failure: printed, exit 2."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             parents: list[argparse.ArgumentParser]) -> None:
    usage = subparsers.add_parser("usage", parents=parents, help="a tenant's usage summary")
    usage.add_argument("--tenant", required=True, metavar="NAME")
    usage.add_argument("--period", metavar="YYYY-MM", help="default: the current month (UTC)")
    _config_arg(usage)
    usage.set_defaults(func=cmd_usage)

    invoice = subparsers.add_parser("invoice", parents=parents, help="a tenant's invoice for a month")
    invoice.add_argument("--tenant", required=True, metavar="NAME")
    invoice.add_argument("--period", required=True, metavar="YYYY-MM")
    invoice.add_argument("--json", action="store_true", help="JSON even on a terminal")
    _config_arg(invoice)
    invoice.set_defaults(func=cmd_invoice)

    ledger = subparsers.add_parser("ledger", help="the usage ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="COMMAND")
    verify = ledger_sub.add_parser("verify", parents=parents, help="check the hash chain end to end")
    verify.set_defaults(func=cmd_verify)

    credits = subparsers.add_parser("credits", help="prepaid credits")
    credits_sub = credits.add_subparsers(dest="credits_command", required=True, metavar="COMMAND")
    top_up = credits_sub.add_parser("top-up", parents=parents, help="add credits (makes the tenant prepaid)")
    top_up.add_argument("--tenant", required=True, metavar="NAME")
    top_up.add_argument("amount", metavar="AMOUNT")
    top_up.add_argument("--actor", default="admin:cli", help="who, as an opaque id (default admin:cli)")
    top_up.set_defaults(func=cmd_top_up)
    enable = credits_sub.add_parser("enable", parents=parents,
                                    help="make the tenant prepaid at a balance of 0")
    enable.add_argument("--tenant", required=True, metavar="NAME")
    enable.add_argument("--actor", default="admin:cli")
    enable.set_defaults(func=cmd_enable)
    balance = credits_sub.add_parser("balance", parents=parents, help="a tenant's credit balance")
    balance.add_argument("--tenant", required=True, metavar="NAME")
    balance.set_defaults(func=cmd_balance)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    if not any("--config" in a.option_strings for a in parser._actions):
        parser.add_argument("--config", help="TOML config file, for its [plans] (default: embedded)")


# -- helpers -------------------------------------------------------------------------------

def _config(args: argparse.Namespace) -> HubConfig:
    try:
        return HubConfig.from_toml(getattr(args, "config", None))
    except ConfigError as exc:
        raise CliError(f"bad config: {exc}") from None


def _state_dir(args: argparse.Namespace, config: HubConfig | None = None) -> Path:
    if getattr(args, "state_dir", None):
        return Path(args.state_dir)
    if config is not None:
        return config.state_dir
    return state_dir_of(args)


def _ledger_path(state_dir: Path) -> Path:
    from daemon.metering.ledger.writer import LEDGER_FILE

    return state_dir / LEDGER_FILE


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


def _plan(config: HubConfig, tenant: TenantRow) -> tuple[str, PlanConfig]:
    if tenant.plan in config.plans:
        return tenant.plan, config.plans[tenant.plan]
    raise CliError(f"tenant {tenant.name!r} is on plan {tenant.plan!r}, which the config does not define")


def _need_ledger(state_dir: Path) -> Path:
    path = _ledger_path(state_dir)
    if not path.is_file():
        raise CliError(f"no usage ledger at {path}; has the hub run here?")
    return path


def _emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _run(func: Any, args: argparse.Namespace) -> int:
    try:
        return int(func(args))
    except (CliError, HubError) as exc:
        print(f"democratic-ai: {exc}", file=sys.stderr)
        return 2


# -- commands ------------------------------------------------------------------------------

def cmd_usage(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        import time

        from daemon.metering.billing import current_period, invoice_from_file, report
        from daemon.metering.ledger.chain import connect_ro

        config = _config(args)
        state_dir = _state_dir(args, config)
        tenant = find_tenant(state_dir, args.tenant)
        plan_name, plan = _plan(config, tenant)
        path = _need_ledger(state_dir)
        inv = invoice_from_file(path, tenant.id, plan_name, plan, args.period or current_period(time.time()),
                                tenant.timezone, tenant.name)
        conn = connect_ro(path)
        try:
            row = conn.execute("SELECT balance FROM credit_balances WHERE tenant_id = ?", (tenant.id,)).fetchone()
        finally:
            conn.close()
        from decimal import Decimal

        _emit(report(inv, Decimal(row[0]) if row else None))
        return 0

    return _run(run, args)


def cmd_invoice(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from daemon.metering.billing import invoice_from_file, parse_period

        parse_period(args.period)  # a bad period is refused before anything else is read
        config = _config(args)
        state_dir = _state_dir(args, config)
        tenant = find_tenant(state_dir, args.tenant)
        plan_name, plan = _plan(config, tenant)
        inv = invoice_from_file(_need_ledger(state_dir), tenant.id, plan_name, plan, args.period,
                                tenant.timezone, tenant.name)
        if sys.stdout.isatty() and not args.json:
            print(inv.render_table())
        else:
            _emit(inv.to_dict())
        return 0

    return _run(run, args)


def cmd_verify(args: argparse.Namespace) -> int:
    from daemon.metering.ledger.chain import verify

    result = verify(_ledger_path(_state_dir(args)))
    _emit(result.to_dict())
    if not result.ok:
        where = f" (first bad entry: seq {result.first_bad_seq})" if result.first_bad_seq else ""
        print(f"democratic-ai: ledger verification FAILED{where}: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _write(args: argparse.Namespace, kind: str) -> int:
    from daemon.metering.ledger.writer import UsageLedger

    config = _config(args)
    state_dir = _state_dir(args, config)
    tenant = find_tenant(state_dir, args.tenant)

    async def go() -> dict[str, Any]:
        async with UsageLedger(_ledger_path(state_dir), config.ledger) as ledger:
            if kind == "top_up":
                receipt = await ledger.top_up(tenant.id, args.amount, args.actor)
            else:
                receipt = await ledger.open_account(tenant.id, args.actor)
            balance = ledger.balance(tenant.id)
        return {"tenant": tenant.name, "tenant_id": tenant.id, "receipt": receipt.to_dict(),
                "balance": None if balance is None else f"{balance:f}"}

    _emit(asyncio.run(go()))
    return 0


def cmd_top_up(args: argparse.Namespace) -> int:
    return _run(lambda a: _write(a, "top_up"), args)


def cmd_enable(args: argparse.Namespace) -> int:
    return _run(lambda a: _write(a, "account"), args)


def cmd_balance(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        from daemon.metering.ledger.chain import connect_ro

        state_dir = _state_dir(args)
        tenant = find_tenant(state_dir, args.tenant)
        conn = connect_ro(_need_ledger(state_dir))
        try:
            row = conn.execute("SELECT balance FROM credit_balances WHERE tenant_id = ?", (tenant.id,)).fetchone()
        finally:
            conn.close()
        _emit({"tenant": tenant.name, "prepaid": row is not None, "balance": row[0] if row else None})
        return 0

    return _run(run, args)
