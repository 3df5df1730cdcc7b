"""``echo``: returns its payload.  The benchmarks' reference capability."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from modules.sdk import Call, Module, Progress, capability


class EchoModule(Module):
    name = "echo"
    concurrency = 64

    @capability("echo", description="Returns its payload unchanged.")
    async def echo(self, payload: dict[str, Any], call: Call) -> dict[str, Any]:
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
        steps = int(payload.get("steps", 3))
        delay = float(payload.get("delay_ms", 0)) / 1000
        for step in range(1, steps + 1):
            if delay:
                await asyncio.sleep(delay)
            yield Progress(step / (steps + 1), f"step {step} of {steps}")
        yield payload
