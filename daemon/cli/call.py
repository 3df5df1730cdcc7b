"""``democratic-ai call`` and ``capabilities``: a small client of a running hub.

The hub's addresses come from ``--url`` or the state dir's endpoints.json (which the hub
writes with its real ports and schemes); the key from ``--key``, $DEMOCRATIC_AI_KEY or the
bootstrap key file.  A door that serves TLS is trusted through the system's CAs and the
hub's own self-signed certificate (endpoints.json's ``ca_file``, else the state dir's).
Answers are printed as the hub's JSON, an error body included: a call the hub refused
exits 1 with that body on stdout.  The HTTP/3 and gRPC clients are imported only when
``--via`` asks for them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from daemon.cli.errors import CliError, CommandFailed
from daemon.cli.output import print_json
from daemon.cli.parsing import SubParsers, add_command
from daemon.core.i18n import language_from_env, t
from daemon.runtime.config import state_dir_of
from daemon.runtime.tls import client_context, default_paths

VIAS = ("http", "ws", "h3", "grpc")


def endpoints(args: argparse.Namespace) -> dict[str, Any]:
    """The running hub's door URLs from the state dir; just the default HTTP one when the file is absent."""
    path = state_dir_of(args) / "endpoints.json"
    try:
        found: dict[str, Any] = json.loads(path.read_text())
        return found
    except (OSError, ValueError):
        return {"http": "http://127.0.0.1:8080"}


def hub_cafile(args: argparse.Namespace) -> Path | None:
    """The hub's own self-signed certificate, to trust: endpoints.json's ``ca_file``, else the state dir's."""
    named = endpoints(args).get("ca_file")
    path = Path(named) if isinstance(named, str) and named else default_paths(state_dir_of(args))[0]
    return path if path.is_file() else None


def _session(args: argparse.Namespace) -> aiohttp.ClientSession:
    # the context only matters for https:// and wss:// URLs
    connector = aiohttp.TCPConnector(ssl=client_context(hub_cafile(args)))
    # the hub answers errors in the language of the user's locale
    headers = {"X-API-Key": api_key(args), "Accept-Language": language_from_env(os.environ)}
    return aiohttp.ClientSession(headers=headers, connector=connector)


def api_key(args: argparse.Namespace) -> str:
    """``--key``, else $DEMOCRATIC_AI_KEY, else the state dir's bootstrap admin key; "" when none."""
    if args.key:
        return str(args.key)
    if os.environ.get("DEMOCRATIC_AI_KEY"):
        return os.environ["DEMOCRATIC_AI_KEY"]
    path = state_dir_of(args) / "bootstrap-admin.key"
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def cmd_call(args: argparse.Namespace) -> int:
    """Call ``action`` through the door ``--via`` names; 0 when the hub answered with a result."""
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        raise CliError(t("cli.call.payload_not_valid_json", exc=exc)) from None
    body: dict[str, Any] = {"action": args.action, "payload": payload, "priority": args.priority}
    if args.ttl:
        body["ttl"] = args.ttl
    if args.target:
        body["target"] = args.target
    if args.via in ("http", "ws"):
        return asyncio.run(_call_http(args, body))
    return _call_other(args, body)


def _call_other(args: argparse.Namespace, body: dict[str, Any]) -> int:
    """``--via h3|grpc``: those doors' URLs are in endpoints.json only when the hub enabled them."""
    via = args.via
    url = args.url or endpoints(args).get("http3" if via == "h3" else "grpc")
    if not url:
        raise CommandFailed(f"the hub has no {via} door (is it enabled?)")
    try:
        if via == "h3":
            from daemon.cli.clients.h3 import call_h3

            cafile = hub_cafile(args) or default_paths(state_dir_of(args))[0]
            return asyncio.run(call_h3(url, body, api_key(args), cafile, args.stream))
        if via == "grpc":
            from daemon.cli.clients.grpc import call_grpc

            return asyncio.run(call_grpc(url, body, api_key(args), args.stream, cafile=hub_cafile(args)))
    except ImportError:
        raise CliError(t("cli.call.via_not_available_build", via=via)) from None
    except (OSError, ConnectionError) as exc:
        raise CommandFailed(f"cannot reach the hub at {url}: {exc}") from exc
    raise CliError(t("cli.call.via_not_handled_here", via=via))


async def _call_http(args: argparse.Namespace, body: dict[str, Any]) -> int:
    base = (args.url or endpoints(args)["http"]).rstrip("/")
    try:
        async with _session(args) as session:
            if args.via == "ws":
                return await _call_ws(session, base, body, args.stream)
            accept = "application/x-ndjson" if args.stream else "application/json"
            async with session.post(f"{base}/v1/call", json=body, headers={"Accept": accept}) as resp:
                if args.stream and resp.status == 200:
                    async for line in resp.content:
                        if line.strip():
                            print_json(json.loads(line))
                    return 0
                print_json(await resp.json(content_type=None))
                return 0 if resp.status == 200 else 1
    except aiohttp.ClientError as exc:
        raise CommandFailed(f"cannot reach the hub at {base}: {exc}") from exc


async def _call_ws(session: aiohttp.ClientSession, base: str, body: dict[str, Any], stream: bool) -> int:
    try:
        connecting = await session.ws_connect(base.replace("http", "ws", 1) + "/v1/ws")
    except aiohttp.WSServerHandshakeError as refused:  # the credentials were refused at the upgrade
        print_json({"error": {"code": "UNAUTHENTICATED" if refused.status == 401 else f"HTTP {refused.status}",
                              "message": f"the hub refused the WebSocket upgrade ({refused.status})",
                              "details": {}, "trace_id": ""}})
        return 1
    async with connecting as ws:
        await ws.send_json({**body, "id": "1", "stream": stream})
        async for message in ws:
            frame = json.loads(message.data)
            print_json(frame)
            if frame.get("type") in ("result", "error"):
                return 0 if frame["type"] == "result" else 1
    return 1


def cmd_capabilities(args: argparse.Namespace) -> int:
    """Print the running hub's capabilities (local and federated); 0 on a 200."""

    async def fetch() -> int:
        base = (args.url or endpoints(args)["http"]).rstrip("/")
        try:
            async with _session(args) as session:
                async with session.get(f"{base}/v1/capabilities") as resp:
                    print_json(await resp.json(content_type=None))
                    return 0 if resp.status == 200 else 1
        except aiohttp.ClientError as exc:
            raise CommandFailed(f"cannot reach the hub at {base}: {exc}") from exc

    return asyncio.run(fetch())


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``call`` and ``capabilities``."""
    call = add_command(subparsers, "call", parents, "call a capability and print its result", cmd_call)
    call.add_argument("action")
    call.add_argument("--payload", default="{}", help="JSON payload (default {})")
    call.add_argument("--url", help="the hub's base URL (default: from the state dir, else http://127.0.0.1:8080)")
    call.add_argument("--key", help="API key (default: $DEMOCRATIC_AI_KEY, else the bootstrap key file)")
    call.add_argument("--via", choices=VIAS, default="http", help="which door to use")
    call.add_argument("--stream", action="store_true", help="print progress parts as they come")
    call.add_argument("--priority", type=int, default=5)
    call.add_argument("--ttl", type=float)
    call.add_argument("--target", default="")
    caps = add_command(subparsers, "capabilities", parents, "list the capabilities of a running hub",
                       cmd_capabilities)
    caps.add_argument("--url")
    caps.add_argument("--key")
