"""An MCP client on the official SDK's 1.x API, run by the 1.x venv (see tests/integration/test_mcp.py).

    python tests/support/mcp1_client.py URL API_KEY

Prints one JSON object: the SDK version, the negotiated protocol version, the tool names and
the structured result of calling ``echo``. Imports nothing of this project: the 1.x venv has
only the ``mcp`` SDK.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


async def main(url: str, key: str) -> None:
    async with streamablehttp_client(url, headers={"X-API-Key": key}) as (read, write, _):
        async with ClientSession(read, write) as session:
            initialized = await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool("echo", {"via": "1.x"})
    print(json.dumps({
        "sdk": importlib.metadata.version("mcp"),
        "protocol": initialized.protocolVersion,
        "tools": sorted(tool.name for tool in tools.tools),
        "result": result.structuredContent,
        "is_error": result.isError,
    }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
