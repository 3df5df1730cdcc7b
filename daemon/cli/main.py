"""``democratic-ai``: the daemon and its administration, one command line.

Admin commands work directly on the state dir (the daemon may be running: SQLite
in WAL mode lets both at once); ``call`` and ``capabilities`` are clients of a
running hub.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.core.errors import ConfigError, HubError
from daemon.runtime.config import state_dir_of


def _state_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--state-dir", default=None,
                        help="the hub's state dir (default: ./var, or $STATE_DIRECTORY under systemd)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="democratic-ai", description="The democratic-ai edge AI hub.")
    parser.add_argument("--version", action="version", version=f"democratic-ai {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [_state_parent()]

    serve = sub.add_parser("serve", parents=parents, help="run the daemon in the foreground")
    serve.add_argument("--config", help="TOML config file (default: embedded defaults)")
    serve.set_defaults(func=cmd_serve)

    from daemon.cli import call as client

    client.register(sub, parents)
    from daemon.cli import billing as cli_billing
    from daemon.cli import tenancy as cli_tenancy

    cli_tenancy.register(sub, parents, export_extra=export_ledger)
    cli_billing.register(sub, parents)

    peers = sub.add_parser("peers", parents=parents, help="federated peers this hub knows")
    peers.set_defaults(func=cmd_peers)
    return parser


def export_ledger(state_dir: Path, export: dict[str, Any]) -> dict[str, Any]:
    """``tenant export`` gets the tenant's usage events and invoices from the ledger too."""
    from daemon.metering.billing import export_usage
    from daemon.runtime.config import HubConfig

    return export_usage(state_dir, export, HubConfig.from_toml(None).plans)


def cmd_serve(args: argparse.Namespace) -> int:
    from daemon.runtime.config import HubConfig, StateConfig
    from daemon.runtime.hub import Hub
    from daemon.runtime.logs import setup_logging

    try:
        config = HubConfig.from_toml(args.config)
    except ConfigError as exc:
        print(f"democratic-ai: bad config: {exc}", file=sys.stderr)
        return 2
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
    except (OSError, HubError) as exc:  # a taken port, an unusable state dir or ledger
        print(f"democratic-ai: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    path = state_dir_of(args) / "peers.json"
    peers = json.loads(path.read_text()) if path.exists() else []
    print(json.dumps({"peers": peers}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
