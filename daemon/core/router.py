"""Sans-IO routing: which module serves a call.

Order (the seed's): a ``target`` module id when given (MODULE_NOT_FOUND when absent);
otherwise the modules that have the action, the least loaded chosen (in flight plus
queued, against its concurrency), round robin among ties.  The candidate list per
action is cached and the cache is dropped the moment a module comes or goes.
EVENT messages go to every module with the action (broadcast).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from daemon.core.errors import CapabilityNotFound, ModuleNotFound


@dataclass(frozen=True, slots=True)
class ModuleEntry:
    """What the router knows of a module: its id, actions and concurrency."""

    module_id: str
    actions: frozenset[str]
    concurrency: int


LoadFn = Callable[[str], int]  # module id -> calls in flight + queued


class Router:
    """Module membership and the routing decision; ``load`` is asked only when several modules have the action."""

    def __init__(self, load: LoadFn) -> None:
        self._load = load
        self._modules: dict[str, ModuleEntry] = {}
        self._candidates: dict[str, tuple[ModuleEntry, ...]] = {}
        self._turn: dict[str, int] = {}

    # -- membership ---------------------------------------------------------------
    def add(self, entry: ModuleEntry) -> None:
        """Register (or replace, by id) a module and drop the candidate cache."""
        self._modules[entry.module_id] = entry
        self._candidates.clear()

    def remove(self, module_id: str) -> None:
        """Forget a module; unknown ids are ignored.  Drops the candidate cache only when one was removed."""
        if self._modules.pop(module_id, None) is not None:
            self._candidates.clear()

    def __contains__(self, module_id: str) -> bool:
        return module_id in self._modules

    def modules(self) -> Iterable[ModuleEntry]:
        """A live view of the registered modules, in the order they were added."""
        return self._modules.values()

    def has_action(self, action: str) -> bool:
        """True when at least one registered module declares ``action`` (fills the cache)."""
        return bool(self._candidates_for(action))

    # -- decisions ------------------------------------------------------------------
    def route(self, action: str, target: str = "") -> str | None:
        """The module id to serve ``action``; None when no local module has it."""
        if target:
            entry = self._modules.get(target)
            if entry is None:
                raise ModuleNotFound(f"no module {target!r} is attached", {"target": target})
            if action not in entry.actions:
                raise CapabilityNotFound(
                    f"module {target!r} has no capability {action!r}",
                    {"target": target, "action": action, "actions": sorted(entry.actions)},
                )
            return target
        candidates = self._candidates_for(action)
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

    def broadcast(self, action: str) -> list[str]:
        """Every module id with ``action`` (for EVENT messages)."""
        return [c.module_id for c in self._candidates_for(action)]

    def _candidates_for(self, action: str) -> tuple[ModuleEntry, ...]:
        cached = self._candidates.get(action)
        if cached is None:
            cached = tuple(m for m in self._modules.values() if action in m.actions)
            self._candidates[action] = cached
        return cached
