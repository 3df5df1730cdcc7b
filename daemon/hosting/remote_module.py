"""A module living in another process, attached over a WebSocket (/v1/modules/attach).

The wire is JSON frames.  The module registers, then serves calls:

    module -> hub  {"type": "register", "module_id", "concurrency"?, "capabilities": [
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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from daemon.core.errors import CapabilityNotFound, ModuleError, ValidationError, error_from_body
from daemon.core.ports import ModuleGone
from modules.sdk import ANY_OBJECT, Call, CapabilitySpec, Progress, SchemaValidator

Send = Callable[[dict[str, Any]], Awaitable[None]]


_DONE = object()


def parse_registration(frame: Any, max_concurrency: int) -> tuple[str, int, dict[str, CapabilitySpec]]:
    """Validate a register frame; ValidationError names the bad field."""
    if not isinstance(frame, dict) or frame.get("type") != "register":
        raise ValidationError("the first frame must be {'type': 'register', ...}", {"pointer": "/type"})
    module_id = frame.get("module_id")
    if not isinstance(module_id, str) or not module_id or len(module_id) > 128:
        raise ValidationError("`module_id` must be a non-empty string", {"pointer": "/module_id"})
    concurrency = frame.get("concurrency", 4)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= max_concurrency:
        raise ValidationError(f"`concurrency` must be 1-{max_concurrency}", {"pointer": "/concurrency"})
    raw = frame.get("capabilities")
    if not isinstance(raw, list) or not raw:
        raise ValidationError("`capabilities` must be a non-empty list", {"pointer": "/capabilities"})
    capabilities: dict[str, CapabilitySpec] = {}
    for i, cap in enumerate(raw):
        if not isinstance(cap, dict) or not isinstance(cap.get("action"), str) or not cap["action"]:
            raise ValidationError("each capability needs an `action`", {"pointer": f"/capabilities/{i}/action"})
        for key in ("input_schema", "output_schema"):
            schema = cap.get(key, ANY_OBJECT)
            try:
                SchemaValidator(schema)
            except Exception as exc:
                raise ValidationError(f"invalid {key}: {exc}", {"pointer": f"/capabilities/{i}/{key}"}) from None
        capabilities[cap["action"]] = CapabilitySpec(
            action=cap["action"],
            description=str(cap.get("description", "")),
            input_schema=cap.get("input_schema", ANY_OBJECT),
            output_schema=cap.get("output_schema", ANY_OBJECT),
            streaming=bool(cap.get("streaming", False)),
            blocking=False,  # it runs in its own process: nothing of ours waits on it
        )
    return module_id, concurrency, capabilities


class RemoteModule:
    """The ModuleHandle of one attached socket: calls go out as frames, answers come back through ``deliver``."""

    kind = "remote"

    def __init__(self, module_id: str, concurrency: int, capabilities: dict[str, CapabilitySpec],
                 send: Send, *, owner: str = "") -> None:
        self.module_id = module_id
        self.concurrency = concurrency
        self.owner = owner
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
        """``{"owner": ...}`` (who attached it) when known, else nothing."""
        return {"owner": self.owner} if self.owner else {}

    def check_input(self, action: str, payload: Any) -> None:
        """VALIDATION_ERROR naming the JSON pointer against the registered schema; CAPABILITY_NOT_FOUND if none."""
        validator = self._inputs.get(action)
        if validator is None:
            raise CapabilityNotFound(f"module {self.module_id} has no capability {action!r}")
        failure = validator.first_error(payload)
        if failure:
            pointer, reason = failure
            raise ValidationError(f"payload{pointer} is invalid: {reason}", {"pointer": pointer, "reason": reason})

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
            raise ModuleGone(f"module {self.module_id} is gone")
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[call.id] = inbox
        finished = False
        try:
            await self._send({"type": "call", "id": call.id, "action": action, "payload": payload,
                              "stream": stream, "trace_id": call.trace_id, "tenant_id": call.tenant_id})
            while True:
                frame = await inbox.get()
                if frame is _DONE:
                    raise ModuleGone(f"module {self.module_id} disconnected during the call")
                kind = frame.get("type")
                if kind == "progress":
                    yield Progress(float(frame.get("progress", 0)), str(frame.get("message", "")), frame.get("data"))
                elif kind == "result":
                    finished = True
                    usage = frame.get("usage") or {}
                    if isinstance(usage, dict):
                        for unit, qty in usage.items():
                            if isinstance(qty, int | float) and not isinstance(qty, bool):
                                call.usage[str(unit)] = call.usage.get(str(unit), 0.0) + float(qty)
                    result = frame.get("result")
                    failure = self._outputs[action].first_error(result)
                    if failure:
                        raise ModuleError(f"module {self.module_id} returned an invalid result at {failure[0]}: "
                                          f"{failure[1]}")
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
