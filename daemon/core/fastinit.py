"""A cheaper ``__init__`` for the frozen, slotted dataclasses made once or more per call.

A frozen dataclass's generated ``__init__`` sets each field with ``object.__setattr__``, looked
up again for every field: an Envelope of 20 fields costs ~3 µs to make, a few of them per call
add up to a tenth of the pipeline.  ``fast_init`` swaps in an ``__init__`` with the same
signature, defaults and default factories that stores through the class's own slot descriptors
(bound once, at class creation): the same object, built in about half the time.  Everything
else the dataclass made (frozen ``__setattr__``, ``__eq__``, ``__repr__``, ``replace``,
pickling) is untouched, and mypy keeps reading the dataclass's own signature.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


class _Factory:
    """The default of a field with a ``default_factory``: replaced by a fresh value per instance."""

    __slots__ = ("make",)

    def __init__(self, make: Any) -> None:
        self.make = make


def fast_init(cls: type[T]) -> type[T]:
    """Give the frozen slotted dataclass ``cls`` an equivalent, faster ``__init__`` (a class decorator)."""
    params = dataclasses.fields(cls)  # type: ignore[arg-type]
    if not cls.__dataclass_params__.frozen or "__slots__" not in cls.__dict__:  # type: ignore[attr-defined]
        raise TypeError(f"fast_init is for frozen dataclasses with slots, not {cls.__name__}")
    if hasattr(cls, "__post_init__") or any(f.kw_only or not f.init for f in params):
        raise TypeError(f"fast_init does not handle __post_init__, kw_only or init=False ({cls.__name__})")
    scope: dict[str, Any] = {}
    signature, body = [], []
    for f in params:
        scope[f"_set_{f.name}"] = cls.__dict__[f.name].__set__  # the slot's member descriptor
        if f.default is not dataclasses.MISSING:
            scope[f"_default_{f.name}"] = f.default
            signature.append(f"{f.name}=_default_{f.name}")
            body.append(f"    _set_{f.name}(self, {f.name})")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_default_{f.name}"] = _Factory(f.default_factory)
            signature.append(f"{f.name}=_default_{f.name}")
            body.append(f"    _set_{f.name}(self, {f.name}.make() if {f.name} is _default_{f.name} else {f.name})")
        else:
            signature.append(f.name)
            body.append(f"    _set_{f.name}(self, {f.name})")
    source = f"def __init__(self, {', '.join(signature)}):\n" + "\n".join(body or ["    pass"])
    exec(compile(source, f"<fast_init {cls.__qualname__}>", "exec"), scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
