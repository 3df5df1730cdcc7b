"""``democratic-ai call`` and ``capabilities``: a small client of a running hub."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import aiohttp

from daemon.runtime.config import state_dir_of

VIAS = ("http", "ws", "h3", "grpc")


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    call = sub.add_parser("call", parents=parents, help="call a capability and print its result")
    call.add_argument("action")
    call.add_argument("--payload", default="{}", help="JSON payload (default {})")
    call.add_argument("--url", help="the hub's base URL (default: from the state dir, else http://127.0.0.1:8080)")
    call.add_argument("--key", help="API key (default: $DEMOCRATIC_AI_KEY, else the bootstrap key file)")
    call.add_argument("--via", choices=VIAS, default="http", help="which door to use")
    call.add_argument("--stream", action="store_true", help="print progress parts as they come")
    call.add_argument("--priority", type=int, default=5)
    call.add_argument("--ttl", type=float)
    call.add_argument("--target", default="")
    call.set_defaults(func=cmd_call)
    caps = sub.add_parser("capabilities", parents=parents, help="list the capabilities of a running hub")
    caps.add_argument("--url")
    caps.add_argument("--key")
    caps.set_defaults(func=cmd_capabilities)


def endpoints(args: argparse.Namespace) -> dict[str, Any]:
    path = state_dir_of(args) / "endpoints.json"
    try:
        found: dict[str, Any] = json.loads(path.read_text())
        return found
    except (OSError, ValueError):
        return {"http": "http://127.0.0.1:8080"}


def api_key(args: argparse.Namespace) -> str:
    if args.key:
        return str(args.key)
    if os.environ.get("DEMOCRATIC_AI_KEY"):
        return os.environ["DEMOCRATIC_AI_KEY"]
    path = state_dir_of(args) / "bootstrap-admin.key"
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def cmd_call(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        print(f"democratic-ai: --payload is not valid JSON: {exc}", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"action": args.action, "payload": payload, "priority": args.priority}
    if args.ttl:
        body["ttl"] = args.ttl
    if args.target:
        body["target"] = args.target
    if args.via in ("http", "ws"):
        return asyncio.run(_call_http(args, body))
    try:
        from daemon.cli.clients import extra as client_extra
    except ImportError:
        print(f"democratic-ai: --via {args.via} is not available in this build", file=sys.stderr)
        return 2
    return int(client_extra.call(args, body, endpoints(args), api_key(args)))


async def _call_http(args: argparse.Namespace, body: dict[str, Any]) -> int:
    base = (args.url or endpoints(args)["http"]).rstrip("/")
    headers = {"X-API-Key": api_key(args)}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            if args.via == "ws":
                return await _call_ws(session, base, body, args.stream)
            accept = "application/x-ndjson" if args.stream else "application/json"
            async with session.post(f"{base}/v1/call", json=body, headers={"Accept": accept}) as resp:
                if args.stream and resp.status == 200:
                    async for line in resp.content:
                        if line.strip():
                            _print(json.loads(line))
                    return 0
                _print(await resp.json(content_type=None))
                return 0 if resp.status == 200 else 1
    except aiohttp.ClientError as exc:
        print(f"democratic-ai: cannot reach the hub at {base}: {exc}", file=sys.stderr)
        return 1


async def _call_ws(session: aiohttp.ClientSession, base: str, body: dict[str, Any], stream: bool) -> int:
    async with session.ws_connect(base.replace("http", "ws", 1) + "/v1/ws") as ws:
        await ws.send_json({**body, "id": "1", "stream": stream})
        async for message in ws:
            frame = json.loads(message.data)
            _print(frame)
            if frame.get("type") in ("result", "error"):
                return 0 if frame["type"] == "result" else 1
    return 1


def cmd_capabilities(args: argparse.Namespace) -> int:
    async def fetch() -> int:
        base = (args.url or endpoints(args)["http"]).rstrip("/")
        try:
            async with aiohttp.ClientSession(headers={"X-API-Key": api_key(args)}) as session:
                async with session.get(f"{base}/v1/capabilities") as resp:
                    _print(await resp.json(content_type=None))
                    return 0 if resp.status == 200 else 1
        except aiohttp.ClientError as exc:
            print(f"democratic-ai: cannot reach the hub at {base}: {exc}", file=sys.stderr)
            return 1

    return asyncio.run(fetch())
