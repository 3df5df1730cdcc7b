"""``echo``: returns its payload.  The benchmarks' reference capability."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from modules.sdk import Call, Module, Progress, capability


class EchoModule(Module):
    """No model, no state: the cheapest module, for conformance tests and pipeline benchmarks."""

    name = "echo"
    concurrency = 64

    @capability("echo", description="Returns its payload unchanged.")
    async def echo(self, payload: dict[str, Any], call: Call) -> dict[str, Any]:
        """The payload itself, unchanged and unvalidated beyond being an object."""
        return payload

    @capability(
        "echo.stream",
        input_schema={
            "type": "object",
            "properties": {
                "steps": {"type": "integer", "minimum": 1, "maximum": 100},
                "delay_ms": {"type": "number", "minimum": 0, "maximum": 10000},
            },
        },
        description="Streams `steps` progress parts (each after `delay_ms`), then returns its payload.",
    )
    async def echo_stream(self, payload: dict[str, Any], call: Call) -> AsyncIterator[Any]:
        """``steps`` (default 3) parts at progress k/(steps+1), then the payload as the result."""
        steps = int(payload.get("steps", 3))
        delay = float(payload.get("delay_ms", 0)) / 1000
        for step in range(1, steps + 1):
            if delay:
                await asyncio.sleep(delay)
            yield Progress(step / (steps + 1), f"step {step} of {steps}")
        yield payload

    @capability("echo.fail", description="Always fails with MODULE_ERROR: lets a client test its error handling.")
    async def echo_fail(self, payload: dict[str, Any], call: Call) -> dict[str, Any]:
        """Raises, as a broken module would; the hub answers MODULE_ERROR (502 / gRPC INTERNAL)."""
        raise RuntimeError("echo.fail was asked to fail")
