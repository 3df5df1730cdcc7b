"""A remote module in its own process: attaches to a hub over /v1/modules/attach.

    python -m tests.support.remote_module_proc URL KEY MODULE_ID [--slow]

Serves ``text.upper`` (upper-cases `text`) and ``remote.sleep`` (sleeps `seconds`, then
answers).  Prints "attached" once registered, so a test knows its routes exist.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp

CAPABILITIES = [
    {
        "action": "text.upper",
        "description": "Upper-cases text (a remote module).",
        "input_schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
        "output_schema": {"type": "object", "required": ["text"]},
    },
    {"action": "remote.sleep", "description": "Sleeps, then answers.",
     "input_schema": {"type": "object", "properties": {"seconds": {"type": "number"}}}},
]


async def serve(url: str, key: str, module_id: str) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(
        url.replace("http", "ws", 1) + "/v1/modules/attach", headers={"X-API-Key": key}
    ) as ws:
        await ws.send_json({"type": "register", "module_id": module_id, "concurrency": 4,
                            "capabilities": CAPABILITIES})
        reply = json.loads((await ws.receive()).data)
        if reply.get("type") != "registered":
            print("refused", json.dumps(reply), flush=True)
            return
        print("attached", flush=True)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(frame: dict[str, Any]) -> None:
            payload = frame["payload"]
            if frame["action"] == "text.upper":
                result = {"text": payload["text"].upper(), "by": module_id}
            else:
                await asyncio.sleep(float(payload.get("seconds", 1)))
                result = {"slept": payload.get("seconds", 1), "by": module_id}
            await ws.send_json({"type": "result", "id": frame["id"], "result": result, "usage": {"chars": 1}})

        async for message in ws:
            frame = json.loads(message.data)
            if frame.get("type") == "call":
                task = asyncio.create_task(answer(frame))
                tasks.add(task)
                task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3]))
