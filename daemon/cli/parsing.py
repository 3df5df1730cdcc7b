"""What every command group's ``register()`` shares when it adds itself to the parser.

Each leaf command is added through :func:`add_command`, which stores it behind
``errors.guarded``: that is how every command, whatever its group, fails the same way.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

from daemon.cli.errors import Command, guarded

#: argparse's ``add_subparsers()`` result; argparse gives it no public name
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def state_dir_parent() -> argparse.ArgumentParser:
    """A parent parser giving a leaf ``--state-dir`` (unset means ./var, or $STATE_DIRECTORY)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--state-dir", default=None,
                        help="the hub's state dir (default: ./var, or $STATE_DIRECTORY under systemd)")
    return parent


def add_group(subparsers: SubParsers, name: str, help_text: str) -> SubParsers:
    """A command with sub-commands (``tenant create``, ``ledger verify``); one of them is required."""
    group = subparsers.add_parser(name, help=help_text, description=help_text)
    return group.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def add_command(subparsers: SubParsers, name: str, parents: list[argparse.ArgumentParser], help_text: str,
                command: Command) -> argparse.ArgumentParser:
    """A leaf command: ``args.func`` runs ``command`` behind the one error wrapper."""
    parser = subparsers.add_parser(name, parents=parents, help=help_text, description=help_text)
    parser.set_defaults(func=guarded(command))
    return parser


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config``, for commands that read the config's ``[plans]``; skipped when a parent gave it."""
    if not any("--config" in action.option_strings for action in parser._actions):
        parser.add_argument("--config",
                            help="TOML config file, for its [plans] (default: the plans the hub last served with)")
