"""A module living in another process, attached over a WebSocket (/v1/modules/attach).

The wire is JSON frames.  The module registers, then serves calls:

    module -> hub  {"type": "register", "module_id", "concurrency"?, "units"?: {unit: max per call},
                    "capabilities": [
                       {"action", "description"?, "input_schema"?, "output_schema"?, "streaming"?}]}
    hub -> module  {"type": "registered", "module_id"}
    hub -> module  {"type": "call", "id", "action", "payload", "stream": bool, "trace_id", "tenant_id"}
    hub -> module  {"type": "cancel", "id"}
    module -> hub  {"type": "progress", "id", "progress", "message"?, "data"?}
    module -> hub  {"type": "result", "id", "result", "usage"?: {unit: quantity}}
    module -> hub  {"type": "error", "id", "error": {"code", "message"}}

Inputs and outputs are validated here against the registered schemas, as for a local
module.  When the socket closes its calls end UNAVAILABLE (``ModuleGone``), which lets
the pipeline retry them on another module with the action.

Usage is billed only in the units the register frame declared, each capped per call at
the declared maximum: a unit it did not declare (or a quantity that is not a finite,
non-negative number) is dropped and logged, a quantity over the cap is billed at the cap.
The call itself still succeeds, so a misreporting module cannot make its caller's call fail
or cost more than the module said it could.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.core.errors import CapabilityNotFound, ModuleError, ValidationError, error_from_body
from daemon.core.i18n import t
from daemon.core.ports import ModuleGone
from daemon.core.router import check_action
from modules.sdk import ANY_OBJECT, Call, CapabilitySpec, Progress, SchemaValidator

log = logging.getLogger("democratic_ai.modules")

Send = Callable[[dict[str, Any]], Awaitable[None]]

#: a register frame may declare this many capabilities and this many billing units
MAX_CAPABILITIES = 256
MAX_UNITS = 32
#: the largest per-call cap a unit may declare (the ledger's own sanity bound on one event)
MAX_UNIT_CAP = 1e12
_UNIT_NAME = re.compile(r"[a-z][a-z0-9_.]{0,63}")  # the ledger's unit names

_DONE = object()


@dataclass(frozen=True, slots=True)
class Registration:
    """A register frame, checked: the module's id, concurrency, capabilities and billing units."""

    module_id: str
    concurrency: int
    capabilities: dict[str, CapabilitySpec]
    units: Mapping[str, float] = field(default_factory=dict)  # unit -> the most one call may bill


def _parse_units(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict) or len(raw) > MAX_UNITS:
        raise ValidationError(t("errors.remote_module.units_object_most_unit", max_units=MAX_UNITS),
                              {"pointer": "/units"})
    units: dict[str, float] = {}
    for name, cap in raw.items():
        if not _UNIT_NAME.fullmatch(name):
            raise ValidationError(t("errors.remote_module.unit_name_characters_z"),
                                  {"pointer": "/units"})
        if isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 < cap <= MAX_UNIT_CAP:
            raise ValidationError(t("errors.remote_module.per_call_cap_unit", max_unit_cap=MAX_UNIT_CAP),
                                  {"pointer": f"/units/{name}"})
        units[name] = float(cap)
    return units


def parse_registration(frame: Any, max_concurrency: int) -> Registration:
    """Validate a register frame; ValidationError names the bad field."""
    if not isinstance(frame, dict) or frame.get("type") != "register":
        raise ValidationError(t("errors.remote_module.first_frame"), {"pointer": "/type"})
    module_id = frame.get("module_id")
    if not isinstance(module_id, str) or not module_id or len(module_id) > 128:
        raise ValidationError(t("errors.remote_module.module_id_non_empty"), {"pointer": "/module_id"})
    concurrency = frame.get("concurrency", 4)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= max_concurrency:
        raise ValidationError(t("errors.remote_module.concurrency", max_concurrency=max_concurrency),
                              {"pointer": "/concurrency"})
    raw = frame.get("capabilities")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_CAPABILITIES:
        raise ValidationError(t("errors.remote_module.capabilities_list", max_capabilities=MAX_CAPABILITIES),
                              {"pointer": "/capabilities"})
    units = _parse_units(frame.get("units", {}))
    capabilities: dict[str, CapabilitySpec] = {}
    for i, cap in enumerate(raw):
        if not isinstance(cap, dict):
            raise ValidationError(t("errors.remote_module.each_capability_needs_action"),
                                  {"pointer": f"/capabilities/{i}/action"})
        check_action(cap.get("action"), f"/capabilities/{i}/action")
        for key in ("input_schema", "output_schema"):
            schema = cap.get(key, ANY_OBJECT)
            try:
                SchemaValidator(schema)
            except Exception as exc:
                raise ValidationError(t("errors.remote_module.invalid", key=key, exc=exc),
                                      {"pointer": f"/capabilities/{i}/{key}"}) from None
        capabilities[cap["action"]] = CapabilitySpec(
            action=cap["action"],
            description=str(cap.get("description", "")),
            input_schema=cap.get("input_schema", ANY_OBJECT),
            output_schema=cap.get("output_schema", ANY_OBJECT),
            streaming=bool(cap.get("streaming", False)),
            blocking=False,  # it runs in its own process: nothing of ours waits on it
        )
    return Registration(module_id, concurrency, capabilities, units)


class RemoteModule:
    """The ModuleHandle of one attached socket: calls go out as frames, answers come back through ``deliver``."""

    kind = "remote"

    def __init__(self, module_id: str, concurrency: int, capabilities: dict[str, CapabilitySpec],
                 send: Send, *, owner: str = "", tenant_id: str | None = None,
                 units: Mapping[str, float] | None = None) -> None:
        self.module_id = module_id
        self.concurrency = concurrency
        self.owner = owner
        #: the tenant whose calls it serves; None: platform-wide (attached by super_admin)
        self.tenant_id = tenant_id
        #: unit -> the most one call may bill in it; usage in any other unit is dropped
        self.units: Mapping[str, float] = dict(units or {})
        self._dropped: set[str] = set()  # units already logged as undeclared (bounded by MAX_UNITS)
        self._capabilities = capabilities
        self._send = send
        self._inputs = {a: SchemaValidator(c.input_schema) for a, c in capabilities.items()}
        self._outputs = {a: SchemaValidator(c.output_schema) for a, c in capabilities.items()}
        self._pending: dict[str, asyncio.Queue[Any]] = {}
        self._gone = False

    @property
    def capabilities(self) -> dict[str, CapabilitySpec]:
        """Action -> spec, as the register frame declared them."""
        return self._capabilities

    def describe(self) -> dict[str, Any]:
        """A platform module: ``{"scope": "platform"}``; a tenant's: its scope, tenant and who attached it.

        A tenant module is shown only to its own tenant, so its owner is no one else's business;
        a platform module's owner (the operator's key) is nobody's.
        """
        if self.tenant_id is None:
            return {"scope": "platform"}
        facts: dict[str, Any] = {"scope": "tenant", "tenant_id": self.tenant_id}
        if self.owner:
            facts["owner"] = self.owner
        return facts

    def bill(self, usage: Any, call: Call) -> None:
        """Add a result frame's ``usage`` to the call: declared units only, each at most its per-call cap."""
        if not isinstance(usage, dict):
            return
        for unit, qty in usage.items():
            cap = self.units.get(unit) if isinstance(unit, str) else None
            if (cap is None or isinstance(qty, bool) or not isinstance(qty, int | float)
                    or not math.isfinite(qty) or qty < 0):
                self._drop(str(unit)[:64])
                continue
            call.usage[unit] = min(call.usage.get(unit, 0.0) + float(qty), cap)

    def check_input(self, action: str, payload: Any) -> None:
        """VALIDATION_ERROR naming the JSON pointer against the registered schema; CAPABILITY_NOT_FOUND if none."""
        validator = self._inputs.get(action)
        if validator is None:
            raise CapabilityNotFound(t("errors.module_host.module_no_capability", module_id=self.module_id,
                                       action=action))
        failure = validator.first_error(payload)
        if failure:
            pointer, reason = failure
            raise ValidationError(t("errors.remote_module.payload_invalid", pointer=pointer, reason=reason),
                                  {"pointer": pointer, "reason": reason})

    async def invoke(self, action: str, payload: Any, call: Call) -> Any:
        """The module's checked result (progress is dropped); ModuleGone when the socket closes first."""
        result: Any = None
        async for part in self._exchange(action, payload, call, stream=False):
            if not isinstance(part, Progress):
                result = part
        return result

    def stream(self, action: str, payload: Any, call: Call) -> AsyncIterator[Any]:
        """``Progress`` parts, then the checked result; a caller that stops early sends the module a cancel."""
        return self._exchange(action, payload, call, stream=True)

    async def _exchange(self, action: str, payload: Any, call: Call, *, stream: bool) -> AsyncIterator[Any]:
        self.check_input(action, payload)
        if self._gone:
            raise ModuleGone(t("errors.remote_module.module_gone", module_id=self.module_id))
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[call.id] = inbox
        finished = False
        try:
            await self._send({"type": "call", "id": call.id, "action": action, "payload": payload,
                              "stream": stream, "trace_id": call.trace_id, "tenant_id": call.tenant_id})
            while True:
                frame = await inbox.get()
                if frame is _DONE:
                    raise ModuleGone(t("errors.remote_module.module_disconnected_during_call",
                                       module_id=self.module_id))
                kind = frame.get("type")
                if kind == "progress":
                    yield Progress(float(frame.get("progress", 0)), str(frame.get("message", "")), frame.get("data"))
                elif kind == "result":
                    finished = True
                    self.bill(frame.get("usage"), call)
                    result = frame.get("result")
                    failure = self._outputs[action].first_error(result)
                    if failure:
                        raise ModuleError(t("errors.remote_module.module_returned_invalid_result",
                                            module_id=self.module_id, pointer=failure[0], reason=failure[1]))
                    yield result
                    return
                elif kind == "error":
                    finished = True
                    raise error_from_body(frame)
        finally:
            self._pending.pop(call.id, None)
            if not finished and not self._gone:
                # the caller went away (cancelled, deadline): tell the module to stop
                with contextlib.suppress(Exception):
                    await self._send({"type": "cancel", "id": call.id})

    def _drop(self, unit: str) -> None:
        if unit not in self._dropped and len(self._dropped) < MAX_UNITS:  # once per unit: no log flood
            self._dropped.add(unit)
            log.warning("remote module reported usage it may not bill; dropped",
                        extra={"module_id": self.module_id, "unit": unit, "declared": sorted(self.units)})

    def deliver(self, frame: dict[str, Any]) -> None:
        """A frame from the module for one of its calls (unknown ids are late answers: dropped)."""
        inbox = self._pending.get(str(frame.get("id")))
        if inbox is not None:
            inbox.put_nowait(frame)

    def disconnected(self) -> None:
        """The socket closed: every pending call and every later one ends with ModuleGone."""
        self._gone = True
        for inbox in self._pending.values():
            inbox.put_nowait(_DONE)
