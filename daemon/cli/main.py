"""``democratic-ai``: the daemon and its administration, one command line.

Admin commands work directly on the state dir (the daemon may be running: SQLite in WAL
mode lets both at once); ``call`` and ``capabilities`` are clients of a running hub.  Each
command group adds itself in its own file; this one builds the parser, runs ``serve`` and
``peers``, and is the console script's entry (``daemon.cli.main:main``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.cli import backup, billing, call, doctor, fleet, keys, ledger, peers, sync, tenants, users
from daemon.cli.errors import CommandFailed
from daemon.cli.parsing import add_command, state_dir_parent
from daemon.core.errors import HubError


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; every leaf takes ``--state-dir`` and stores ``func(args) -> exit code``."""
    parser = argparse.ArgumentParser(prog="democratic-ai", description="The democratic-ai edge AI hub.")
    parser.add_argument("--version", action="version", version=f"democratic-ai {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [state_dir_parent()]

    serve = add_command(sub, "serve", parents, "run the daemon in the foreground", cmd_serve)
    serve.add_argument("--config", help="TOML config file (default: embedded defaults)")
    call.register(sub, parents)
    tenants.register(sub, parents, export_extra=export_ledger)
    users.register(sub, parents)
    keys.register(sub, parents)
    billing.register(sub, parents, usage_subcommands=sync.register_usage_export)
    ledger.register(sub, parents)
    doctor.register(sub, parents)
    backup.register(sub, parents)
    fleet.register(sub, parents)
    peers.register(sub, parents)
    sync.register(sub, parents)
    return parser


def export_ledger(state_dir: Path, export: dict[str, Any]) -> dict[str, Any]:
    """``tenant export`` gets the tenant's usage events and invoices from the ledger too.

    Invoices are priced with the plans the hub last served with (plans.json); a state dir the hub
    never served from prices with the embedded plans, and the export says so.
    """
    from daemon.metering.billing import export_usage
    from daemon.metering.plans import load_plans
    from daemon.runtime.config import HubConfig

    plans = load_plans(state_dir)
    if plans is not None:
        return export_usage(state_dir, export, plans)
    exported = export_usage(state_dir, export, HubConfig.from_toml(None).plans)
    exported["invoices_priced_with"] = "the embedded default plans: the hub never served from this state dir"
    return exported


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the hub until SIGTERM or SIGINT; a bad config exits 2, a port or state dir it cannot use 1."""
    from daemon.runtime.config import HubConfig, StateConfig
    from daemon.runtime.hub import Hub, HubStopped
    from daemon.runtime.logs import setup_logging

    config = HubConfig.from_toml(args.config)
    if args.state_dir:  # the command line wins over the file
        config = config.with_overrides(state=StateConfig(dir=args.state_dir))
    setup_logging(config.log.level, config.log.json)
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(Hub(config, config_path=args.config).run())
    except HubStopped as exc:  # it served, then lost what it cannot serve without
        raise CommandFailed(str(exc)) from exc
    except (OSError, HubError) as exc:  # a taken port, an unusable state dir or ledger
        raise CommandFailed(f"cannot start: {exc}") from exc
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's), run the command, return its exit code (130 on Ctrl-C)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
