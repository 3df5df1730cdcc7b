"""The plans the hub serves with, kept in its state dir so admin commands bill with the same ones.

The hub writes ``plans.json`` at every start.  ``democratic-ai invoice`` and ``usage`` without
``--config`` read it back: an invoice made from a shell then agrees with the hub's own
``GET /v1/usage`` estimate, instead of silently using the embedded plans.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from daemon.core.errors import ConfigError
from daemon.runtime.config import HubConfig, PlanConfig
from daemon.runtime.files import atomic_write

PLANS_FILE = "plans.json"


def save_plans(state_dir: Path, plans: Mapping[str, PlanConfig]) -> Path:
    """Write the plans as JSON (``[plans]`` of the config, keys as in TOML) into the state dir."""
    path = state_dir / PLANS_FILE
    atomic_write(path, json.dumps({name: asdict(plan) for name, plan in plans.items()}, indent=1).encode())
    return path


def load_plans(state_dir: Path) -> dict[str, PlanConfig] | None:
    """The plans the hub last served with from ``state_dir``; None when it never wrote them.

    ConfigError when the file is there but unreadable: better no invoice than a wrong one.
    """
    path = state_dir / PLANS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    # the config's own loader: the same key names, types and checks as [plans] in a TOML file
    return HubConfig.from_dict({"plans": data}).plans
