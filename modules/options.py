"""Module options (``[modules.options."<module>"]``): known keys, checked types, defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.core.errors import ConfigError
from modules.model_files import ModelFile


@dataclass(frozen=True, slots=True)
class Option:
    """One known option: accepted types, default (None: the hub's value), inclusive numeric bounds."""

    types: tuple[type, ...]
    default: Any
    minimum: float | None = None
    maximum: float | None = None


#: keys every ONNX module accepts; the helper reads them (OnnxSettings.from_runtime)
ONNX_KEYS: dict[str, Option] = {
    # execution providers for this module's sessions; default: the hub's [modules] providers
    "providers": Option((list, str), None),
    # intra-op threads for this module's sessions; default: the hub's [modules] threads (0 = cores)
    "threads": Option((int,), None, minimum=0, maximum=256),
}


def read_options(module: str, options: Mapping[str, Any], known: Mapping[str, Option]) -> dict[str, Any]:
    """``options`` checked against ``known`` plus the ONNX keys, defaults filled in."""
    allowed = {**ONNX_KEYS, **known}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f'modules.options."{module}".{unknown[0]}: unknown option; '
                          f"known: {', '.join(sorted(allowed))}")
    values: dict[str, Any] = {}
    for key, spec in allowed.items():
        value: Any = options.get(key, spec.default)
        where = f'modules.options."{module}".{key}'
        if value is None:
            values[key] = None
            continue
        if (isinstance(value, bool) and bool not in spec.types) or not isinstance(value, spec.types):
            raise ConfigError(f"{where}: expected {' or '.join(t.__name__ for t in spec.types)}, "
                              f"got {value!r}")
        number = float(value) if isinstance(value, int | float) else None
        if spec.minimum is not None and number is not None and number < spec.minimum:
            raise ConfigError(f"{where}: must be >= {spec.minimum}")
        if spec.maximum is not None and number is not None and number > spec.maximum:
            raise ConfigError(f"{where}: must be <= {spec.maximum}")
        values[key] = value
    return values


def model_override(values: Mapping[str, Any], default: ModelFile) -> ModelFile:
    """The ``model`` option (a path, with an optional ``sha256``) or the shipped file."""
    if not values.get("model"):
        return default
    return ModelFile(Path(values["model"]).expanduser(), values.get("sha256"))
