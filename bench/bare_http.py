"""The bare stack for bench/http_call.sh: an aiohttp handler answering what the hub answers for echo."""

from __future__ import annotations

import json
import sys

from aiohttp import web


async def call(request: web.Request) -> web.Response:
    body = await request.json()
    if request.headers.get("X-API-Key") is None:
        return web.json_response({"error": "no key"}, status=401)
    answer = {
        "id": "00000000-0000-4000-8000-000000000000",
        "correlation_id": "00000000-0000-4000-8000-000000000000",
        "module": "echo",
        "result": body.get("payload"),
        "receipt": {"seq": 1, "hash": "0" * 64},
    }
    return web.Response(body=json.dumps(answer, separators=(",", ":")), content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/call", call)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
