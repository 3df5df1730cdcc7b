"""Every reach of the doors into a library's private attributes, in one place.

aiohttp, aioquic and grpcio-health-checking have no public API for a few things the doors
need (the port a site really bound, a cap on the peer's concurrent streams, whether a QUIC
connection is closing, the asyncio health servicer). Each reach is a small function here,
named for what it gets; ``tests/unit/doors/test_compat.py`` fails when a pinned library
moves one, so an upgrade breaks a test instead of a door.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

# grpcio-health-checking exports its asyncio servicer only from a private module
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer

__all__ = [
    "AsyncHealthServicer",
    "bound_sockets",
    "cap_peer_request_streams",
    "quic_closing",
    "quic_server_configuration",
    "quic_server_knows",
    "quic_server_transport",
]


def bound_sockets(site: web.TCPSite) -> list[Any]:
    """The sockets a started aiohttp site listens on (to learn the port when it asked for 0)."""
    server = site._server
    return list(getattr(server, "sockets", None) or [])


def cap_peer_request_streams(quic: QuicConnection, limit: int) -> None:
    """Let the peer open at most ``limit`` bidirectional (request) streams at once.

    aioquic has no configuration knob for it; its stream-limit object carries the value
    advertised to the peer (``sent``) and the current limit (``value``).
    """
    stream_limit = quic._local_max_streams_bidi
    stream_limit.value = stream_limit.sent = limit


def quic_closing(quic: QuicConnection) -> bool:
    """True once the connection has begun to close: sending more would raise or be lost."""
    return quic._close_event is not None


def quic_server_configuration(server: QuicServer) -> QuicConfiguration:
    """The configuration a QuicServer accepts connections with."""
    configuration: QuicConfiguration = server._configuration
    return configuration


def quic_server_knows(server: QuicServer, connection_id: bytes) -> bool:
    """True when ``connection_id`` belongs to a connection the server already holds."""
    return connection_id in server._protocols


def quic_server_transport(server: QuicServer) -> Any:
    """The datagram transport a QuicServer sends on (None before it is connected)."""
    return server._transport
