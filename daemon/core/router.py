"""Sans-IO routing: which module serves a call, and for which tenant.

Order (the seed's): a ``target`` module id when given (MODULE_NOT_FOUND when absent);
otherwise the modules that have the action, the least loaded chosen (in flight plus
queued, against its concurrency), round robin among ties.  EVENT messages go to every
module with the action (broadcast).

Tenancy: a module is platform-wide (``tenant_id`` None: the local modules and those a
super_admin attached) or belongs to one tenant, and then serves that tenant's calls only.
For any other tenant it does not exist: not a candidate, and as a ``target`` MODULE_NOT_FOUND.

The candidate list per action is cached while the action has a module, and the cache is
dropped the moment a module comes or goes.  A miss is never cached: callers choose the
action string, so remembering misses would let them fill memory with names.

Action names are short and plain (``check_action``): they become metric labels, log
fields, ledger columns and MCP tool names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from daemon.core.errors import CapabilityNotFound, ModuleNotFound, ValidationError
from daemon.core.i18n import t

ACTION_MAX_LENGTH = 128
_ACTION = re.compile(r"[a-z0-9][a-z0-9._-]*")


def check_action(action: object, pointer: str = "/action") -> str:
    """``action`` when it is a valid action name; VALIDATION_ERROR naming ``pointer`` otherwise.

    Valid: 1-128 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit.
    The message never echoes the name: it may be megabytes of anything.
    """
    if not isinstance(action, str) or not action:
        raise ValidationError(t("errors.router.action_required"), {"pointer": pointer})
    if len(action) > ACTION_MAX_LENGTH or not _ACTION.fullmatch(action):
        raise ValidationError(
            t("errors.router.action_characters_z_starting", action_max_length=ACTION_MAX_LENGTH),
            {"pointer": pointer, "max_length": ACTION_MAX_LENGTH},
        )
    return action


@dataclass(frozen=True, slots=True)
class ModuleEntry:
    """What the router knows of a module: its id, actions, concurrency and owner tenant (None: everyone's)."""

    module_id: str
    actions: frozenset[str]
    concurrency: int
    tenant_id: str | None = None

    def serves(self, tenant_id: str) -> bool:
        """True when a call of ``tenant_id`` may reach this module."""
        return self.tenant_id is None or self.tenant_id == tenant_id


LoadFn = Callable[[str], int]  # module id -> calls in flight + queued


class Router:
    """Module membership and the routing decision; ``load`` is asked only when several modules have the action."""

    def __init__(self, load: LoadFn) -> None:
        self._load = load
        self._modules: dict[str, ModuleEntry] = {}
        self._candidates: dict[str, tuple[ModuleEntry, ...]] = {}
        self._turn: dict[str, int] = {}
        self._scoped = 0  # how many tenant modules there are: none, and no call needs filtering

    # -- membership ---------------------------------------------------------------
    def add(self, entry: ModuleEntry) -> None:
        """Register (or replace, by id) a module and drop the candidate cache."""
        self.remove(entry.module_id)
        self._modules[entry.module_id] = entry
        self._scoped += entry.tenant_id is not None
        self._forget()

    def remove(self, module_id: str) -> None:
        """Forget a module; unknown ids are ignored.  Drops the candidate cache only when one was removed."""
        entry = self._modules.pop(module_id, None)
        if entry is not None:
            self._scoped -= entry.tenant_id is not None
            self._forget()

    def _forget(self) -> None:
        self._candidates.clear()
        self._turn.clear()  # keyed by action: kept only for actions that still have modules

    def __contains__(self, module_id: str) -> bool:
        return module_id in self._modules

    def modules(self) -> Iterable[ModuleEntry]:
        """A live view of the registered modules, in the order they were added."""
        return self._modules.values()

    def has_action(self, action: str) -> bool:
        """True when at least one registered module, of any tenant, declares ``action``."""
        return bool(self._candidates_for(action))

    def platform_serves(self, action: str) -> bool:
        """True when a platform-wide module (local, or attached by super_admin) declares ``action``."""
        return any(entry.tenant_id is None for entry in self._candidates_for(action))

    def visible(self, module_id: str, tenant_id: str) -> bool:
        """True when ``module_id`` is registered and serves calls of ``tenant_id``."""
        entry = self._modules.get(module_id)
        return entry is not None and entry.serves(tenant_id)

    # -- decisions ------------------------------------------------------------------
    def route(self, action: str, target: str = "", *, tenant_id: str = "") -> str | None:
        """The module id to serve ``action`` for a call of ``tenant_id``; None when no module here has it."""
        if target:
            entry = self._modules.get(target)
            if entry is None or not entry.serves(tenant_id):
                raise ModuleNotFound(t("errors.router.no_module_attached", target=target), {"target": target})
            if action not in entry.actions:
                raise CapabilityNotFound(
                    t("errors.router.module_no_capability", target=target, action=action),
                    {"target": target, "action": action, "actions": sorted(entry.actions)},
                )
            return target
        candidates = self._serving(action, tenant_id)
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0].module_id
        loads = [self._load(c.module_id) / c.concurrency for c in candidates]
        least = min(loads)
        tied = [c for c, load in zip(candidates, loads, strict=True) if load == least]
        turn = self._turn.get(action, 0)
        self._turn[action] = turn + 1
        return tied[turn % len(tied)].module_id

    def broadcast(self, action: str, *, tenant_id: str = "") -> list[str]:
        """Every module id with ``action`` that serves ``tenant_id`` (for EVENT messages)."""
        return [c.module_id for c in self._serving(action, tenant_id)]

    def _serving(self, action: str, tenant_id: str) -> tuple[ModuleEntry, ...]:
        candidates = self._candidates_for(action)
        if not self._scoped:
            return candidates
        return tuple(c for c in candidates if c.serves(tenant_id))

    def _candidates_for(self, action: str) -> tuple[ModuleEntry, ...]:
        cached = self._candidates.get(action)
        if cached is None:
            cached = tuple(m for m in self._modules.values() if action in m.actions)
            if cached:  # only actions some module has: a miss must not cost memory
                self._candidates[action] = cached
        return cached

    def cached_actions(self) -> int:
        """How many actions the candidate cache holds now (bounded by the actions modules declare)."""
        return len(self._candidates)
