"""The module SDK: ``@capability`` and the ``Module`` base class.

A capability is a method of a ``Module`` subclass decorated with ``@capability``.
Three shapes are accepted:

* ``async def f(self, payload, call) -> dict`` runs on the event loop (I/O-bound work);
* ``def f(self, payload, call) -> dict`` runs in the hub's thread pool (CPU-bound work:
  the event loop never waits for it);
* ``async def f(self, payload, call)`` that *yields* is a streaming capability: it yields
  ``Progress`` parts and, last, its result (a dict).

Input and output are validated against the declared JSON Schemas; a bad input is a
VALIDATION_ERROR naming the JSON pointer of the failing field, a bad output is a
MODULE_ERROR (the module broke its own contract, not the caller).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import jsonschema.exceptions

from daemon.core.errors import HubError, ModuleError, ValidationError
from daemon.core.i18n import t

ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress part of a streaming capability: ``progress`` in 0..1."""

    progress: float
    message: str = ""
    data: Any = None


@dataclass(slots=True)
class Call:
    """What a handler sees of the call it serves."""

    id: str
    action: str
    tenant_id: str = ""
    trace_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    usage: dict[str, float] = field(default_factory=dict)

    def report_usage(self, **units: float) -> None:
        """Report model units (audio_seconds=, images=, tokens=...); they are billed with the call."""
        for unit, quantity in units.items():
            self.usage[unit] = self.usage.get(unit, 0.0) + float(quantity)


@dataclass(frozen=True, slots=True)
class CapabilitySpec:
    """What ``@capability`` records on a method."""

    action: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    streaming: bool
    blocking: bool  # a plain ``def``: runs in the thread pool

    def to_dict(self) -> dict[str, Any]:
        """What /v1/capabilities, gRPC and MCP show of it."""
        return {
            "action": self.action,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "streaming": self.streaming,
        }


def capability(
    action: str,
    input_schema: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a method of a Module as the capability ``action``."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        streaming = inspect.isasyncgenfunction(fn)
        blocking = not streaming and not inspect.iscoroutinefunction(fn)
        fn.__capability__ = CapabilitySpec(  # type: ignore[attr-defined]
            action=action,
            description=description or (inspect.getdoc(fn) or "").split("\n")[0],
            input_schema=input_schema or ANY_OBJECT,
            output_schema=output_schema or ANY_OBJECT,
            streaming=streaming,
            blocking=blocking,
        )
        return fn

    return mark


def _pointer(path: Any) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path) if path else ""


class SchemaValidator:
    """A compiled JSON Schema whose first failure names the field's JSON pointer."""

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        self._validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
        # the commonest schema (echo's, remote modules that declare none) needs no validator run
        self._any_object = schema == ANY_OBJECT

    def check_input(self, payload: Any, action: str) -> None:
        """VALIDATION_ERROR naming the JSON pointer of ``payload``'s first bad field (the caller's fault)."""
        failure = self.first_error(payload)
        if failure is not None:
            pointer, reason = failure
            raise ValidationError(t("errors.remote_module.payload_invalid", pointer=pointer or '', reason=reason),
                                  {"pointer": pointer, "reason": reason, "action": action})

    def first_error(self, instance: Any) -> tuple[str, str] | None:
        """``(pointer, reason)`` of the most relevant failure, or None when valid."""
        if self._any_object:
            return None if isinstance(instance, dict) else ("", f"{instance!r} is not of type 'object'")
        if self._validator.is_valid(instance):  # the cheap question first; ranking errors costs more
            return None
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(instance))
        if error is None:
            return None
        path = list(error.absolute_path)
        # a missing required property is reported on the object; name the property itself
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [name for name in error.validator_value if name not in error.instance]
            if missing:
                path.append(missing[0])
        return _pointer(path), error.message


@dataclass(frozen=True, slots=True)
class ModuleRuntime:
    """What the hub lends a module: its thread pool, state dir, options and logger."""

    executor: concurrent.futures.Executor
    state_dir: Path
    options: dict[str, Any]
    logger: logging.Logger
    onnx_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int = 1


class BoundCapability:
    """A capability bound to its module instance: validates, runs, validates."""

    def __init__(self, module: Module, spec: CapabilitySpec, fn: Callable[..., Any]) -> None:
        self.module = module
        self.spec = spec
        self._fn = fn
        self._input = SchemaValidator(spec.input_schema)
        self._output = SchemaValidator(spec.output_schema)

    def check_input(self, payload: Any) -> None:
        """VALIDATION_ERROR naming the JSON pointer of the first bad field (the caller's fault)."""
        self._input.check_input(payload, self.spec.action)

    def check_output(self, result: Any) -> Any:
        """``result`` unchanged when it fits the output schema; MODULE_ERROR (the module's fault) otherwise."""
        failure = self._output.first_error(result)
        if failure is not None:
            pointer, reason = failure
            raise ModuleError(
                t("errors.sdk.module_returned_invalid_result", name=self.module.name, pointer=pointer or '/',
                  reason=reason),
                {"pointer": pointer, "module": self.module.name},
            )
        return result

    async def invoke(self, payload: Any, call: Call, *, checked: bool = False) -> Any:
        """Run a unary capability (a streaming one is drained to its final result).

        ``checked``: the caller (the pipeline) already validated the input.
        """
        if self.spec.streaming:
            result: Any = None
            async for part in self.stream(payload, call, checked=checked):
                if not isinstance(part, Progress):
                    result = part
            return result
        if not checked:
            self.check_input(payload)
        try:
            if self.spec.blocking:
                loop = asyncio.get_running_loop()
                executor = self.module.runtime.executor if self.module.runtime else None
                result = await loop.run_in_executor(executor, functools.partial(self._fn, payload, call))
            else:
                result = await self._fn(payload, call)
        except HubError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a module bug must not become a 500
            raise ModuleError(t("errors.sdk.module_failed", name=self.module.name, type_name=type(exc).__name__,
                                exc=exc)) from exc
        return self.check_output(result)

    async def stream(self, payload: Any, call: Call, *, checked: bool = False) -> AsyncIterator[Any]:
        """Yield ``Progress`` parts, then the validated final result."""
        if not checked:
            self.check_input(payload)
        if not self.spec.streaming:
            yield await self.invoke(payload, call, checked=True)
            return
        final: Any = None
        produced = False
        agen = self._fn(payload, call)
        try:
            async for part in agen:
                if isinstance(part, Progress):
                    yield part
                else:
                    final, produced = part, True
        except HubError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise ModuleError(t("errors.sdk.module_failed", name=self.module.name, type_name=type(exc).__name__,
                                exc=exc)) from exc
        finally:
            await agen.aclose()
        if not produced:
            raise ModuleError(t("errors.sdk.module_ended_stream_without", name=self.module.name))
        yield self.check_output(final)


class Module:
    """Base class of every module.  Subclasses set ``name`` and decorate capabilities."""

    name: ClassVar[str] = ""
    concurrency: ClassVar[int] = 8  # calls run at once; the rest wait in the priority queue

    def __init__(self) -> None:
        self.runtime: ModuleRuntime | None = None

    async def start(self, runtime: ModuleRuntime) -> None:
        """Load models and warm up.  Raise to mark the module failed; the hub serves the rest."""
        self.runtime = runtime

    async def stop(self) -> None:
        """Release what ``start`` took."""

    def describe(self) -> dict[str, Any]:
        """Extra facts shown in /v1/capabilities (e.g. the execution provider)."""
        return {}

    def capabilities(self) -> list[BoundCapability]:
        """Every ``@capability`` method of this class, bound to this instance, in attribute-name order."""
        bound = []
        for attr in dir(type(self)):
            fn = getattr(type(self), attr, None)
            spec = getattr(fn, "__capability__", None)
            if isinstance(spec, CapabilitySpec):
                bound.append(BoundCapability(self, spec, getattr(self, attr)))
        return bound
