"""The MCP protocol revisions this hub speaks, and how a request says which one it uses.

Two eras share ``POST /mcp``.  A request whose ``MCP-Protocol-Version`` header names no
handshake revision is **modern** (2026-07-28): sessionless, every request carries its
version and the client's capabilities in ``params._meta``, and the ``Mcp-*`` headers must
repeat what the body says.  Anything else is a **handshake** revision (2025-11-25 and
older): ``initialize`` negotiates the version and opens a session.  Header names are
lower case, as ``ApiRequest.headers`` holds them.
"""

from __future__ import annotations

from typing import Any

from daemon import __version__
from daemon.api.http_api import ApiRequest
from daemon.api.mcp.jsonrpc import HEADER_MISMATCH, INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION, RpcError
from daemon.api.mcp.security import decode_header_value

MODERN_VERSIONS = ("2026-07-28",)
HANDSHAKE_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")  # newest first
DEFAULT_LEGACY_VERSION = "2025-03-26"  # a request without MCP-Protocol-Version (streamable-http rule)
SERVER_INFO = {"name": "democratic-ai", "version": __version__}
INSTRUCTIONS = "Each tool is a capability of this democratic-ai hub; its arguments are the capability's payload."

# params._meta keys of the modern era
PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"

# request headers
VERSION_HEADER = "mcp-protocol-version"
METHOD_HEADER = "mcp-method"
NAME_HEADER = "mcp-name"
SESSION_HEADER = "mcp-session-id"


def is_modern(version_header: str) -> bool:
    """True when the request's ``MCP-Protocol-Version`` puts it on the sessionless 2026 path.

    An unknown version counts as modern too, so that it is answered -32022 naming the versions served.
    """
    return bool(version_header) and version_header not in HANDSHAKE_VERSIONS


def negotiate(asked: Any) -> str:
    """The handshake revision ``initialize`` answers: the one asked for when served, else the newest."""
    return asked if asked in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[0]


def legacy_version(version_header: str) -> str:
    """A session request's revision: its header, or the streamable-http default when it sent none."""
    return version_header or DEFAULT_LEGACY_VERSION


def modern_version(method: str, params: dict[str, Any], request: ApiRequest) -> str:
    """The 2026-07-28 ladder: envelope present, headers match the body, version served.

    Returns the version; raises ``RpcError`` at the first rung that fails, in that order.
    """
    meta = params.get("_meta")
    if not isinstance(meta, dict) or PROTOCOL_VERSION_KEY not in meta or CLIENT_CAPABILITIES_KEY not in meta:
        raise RpcError(INVALID_PARAMS, f"params._meta must carry {PROTOCOL_VERSION_KEY!r} and "
                                       f"{CLIENT_CAPABILITIES_KEY!r}")
    version = meta[PROTOCOL_VERSION_KEY]
    if request.header(VERSION_HEADER) != version:
        raise RpcError(HEADER_MISMATCH, "MCP-Protocol-Version does not match params._meta's protocol version")
    if request.header(METHOD_HEADER) != method:
        raise RpcError(HEADER_MISMATCH, "Mcp-Method does not match the request's method")
    if method == "tools/call" and params.get("name") is not None:
        if decode_header_value(request.headers.get(NAME_HEADER)) != params.get("name"):
            raise RpcError(HEADER_MISMATCH, "Mcp-Name does not match params.name")
    if version not in MODERN_VERSIONS:
        raise RpcError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                       {"supported": [*MODERN_VERSIONS, *HANDSHAKE_VERSIONS], "requested": version})
    return str(version)
