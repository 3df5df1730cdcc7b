"""Find module classes by name: built-ins first, then the `democratic_ai.modules` entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

from modules.builtin import BUILTINS
from modules.sdk import Module

ENTRY_POINT_GROUP = "democratic_ai.modules"


class UnknownModule(LookupError):
    """No module of that name, or its entry point is not a Module subclass; the message lists what exists."""


def available() -> dict[str, str]:
    """Every module name this install can load, with where it comes from."""
    names = {name: "builtin" for name in BUILTINS}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(ep.name, ep.value)
    return names


def find(name: str) -> type[Module]:
    """The Module class for ``name``: a built-in wins over an entry point of the same name; else UnknownModule."""
    if name in BUILTINS:
        return BUILTINS[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        cls = ep.load()
        if isinstance(cls, type) and issubclass(cls, Module):
            return cls
        raise UnknownModule(f"entry point {name} ({ep.value}) is not a Module subclass")
    raise UnknownModule(f"no module named {name!r}; available: {', '.join(sorted(available()))}")
