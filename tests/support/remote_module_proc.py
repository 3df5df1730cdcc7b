"""A remote module in its own process: attaches to a hub over /v1/modules/attach.

    python -m tests.support.remote_module_proc URL KEY MODULE_ID [--concurrency N]
        [--actions a,b,...] [--units JSON] [--usage JSON]

Serves ``text.upper`` (upper-cases `text`), ``remote.sleep`` (sleeps `seconds`, then
answers) and ``remote.hold`` (answers when a line arrives on stdin); any other action
named in ``--actions`` answers ``{}``.  Every result carries ``by`` (this module's id),
``tenant_id`` (whose call it was) and ``n`` (the order in which calls reached this module),
and reports ``--usage`` as the call's usage; ``--units`` is what the register frame declares.

What it sees goes to stdout, one line each, so a test can follow it: "attached" (or
"refused <frame>"), "call <action> <id>" as a call arrives, "error <frame>" for an error
frame from the hub, and "closed <code> <reason>" when the hub closes the socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp

SCHEMAS: dict[str, dict[str, Any]] = {
    "text.upper": {
        "description": "Upper-cases text (a remote module).",
        "input_schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
        "output_schema": {"type": "object", "required": ["text"]},
    },
    "remote.sleep": {"description": "Sleeps, then answers.",
                     "input_schema": {"type": "object", "properties": {"seconds": {"type": "number"}}}},
    "remote.hold": {"description": "Answers when the test writes a line to this process's stdin."},
}
DEFAULT_ACTIONS = "text.upper,remote.sleep,remote.hold"


def say(*words: object) -> None:
    print(*words, flush=True)


async def serve(args: argparse.Namespace) -> None:
    capabilities = [{"action": a, **SCHEMAS.get(a, {})} for a in args.actions.split(",")]
    register = {"type": "register", "module_id": args.module_id, "concurrency": args.concurrency,
                "capabilities": capabilities}
    if args.units is not None:
        register["units"] = json.loads(args.units)
    usage = json.loads(args.usage)
    loop = asyncio.get_running_loop()
    arrived = 0
    async with aiohttp.ClientSession() as session, session.ws_connect(
        args.url.replace("http", "ws", 1) + "/v1/modules/attach", headers={"X-API-Key": args.key}
    ) as ws:
        await ws.send_json(register)
        reply = json.loads((await ws.receive()).data)
        if reply.get("type") != "registered":
            say("refused", json.dumps(reply))
            return
        say("attached")
        tasks: set[asyncio.Task[None]] = set()

        async def answer(frame: dict[str, Any], n: int) -> None:
            payload = frame["payload"]
            result: dict[str, Any] = {}
            if frame["action"] == "text.upper":
                result = {"text": payload["text"].upper()}
            elif frame["action"] == "remote.sleep":
                await asyncio.sleep(float(payload.get("seconds", 1)))
                result = {"slept": payload.get("seconds", 1)}
            elif frame["action"] == "remote.hold":
                await loop.run_in_executor(None, sys.stdin.readline)
            result.update({"by": args.module_id, "tenant_id": frame.get("tenant_id"), "n": n})
            await ws.send_json({"type": "result", "id": frame["id"], "result": result, "usage": usage})

        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                say("closed", ws.close_code, message.extra or "")
                return
            frame = json.loads(message.data)
            if frame.get("type") == "call":
                arrived += 1
                say("call", frame["action"], frame["id"])
                task = asyncio.create_task(answer(frame, arrived))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif frame.get("type") == "error":
                say("error", json.dumps(frame))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("module_id")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--actions", default=DEFAULT_ACTIONS)
    parser.add_argument("--units", default='{"chars": 1000}')
    parser.add_argument("--usage", default='{"chars": 1}')
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
