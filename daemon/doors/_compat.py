"""Every reach of the doors into a library's private attributes, in one place.

aiohttp, aioquic and grpcio-health-checking have no public API for a few things the doors
need (the port a site really bound, a cap on the peer's concurrent streams, whether a QUIC
connection is closing, the asyncio health servicer). Each reach is a small function here,
named for what it gets; ``tests/unit/doors/test_compat.py`` fails when a pinned library
moves one, so an upgrade breaks a test instead of a door.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

# grpcio-health-checking exports its asyncio servicer only from a private module
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer

__all__ = [
    "AsyncHealthServicer",
    "answer_parse_errors",
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


def answer_parse_errors(runner: web.AppRunner, answer: Callable[[int, str], web.StreamResponse]) -> None:
    """Make a set-up runner answer what aiohttp refuses before any route runs with ``answer(status, reason)``.

    aiohttp's parser refuses an oversized header (an API key over ``max_field_size``), a bad
    request line or non-HTTP bytes itself, answering with the text/plain body that
    ``RequestHandler.handle_error`` builds, and no public hook replaces it.  The runner's
    ``Server`` makes one ``RequestHandler`` per connection: its class becomes a subclass whose
    handlers are of a ``RequestHandler`` subclass (no new slots) overriding ``handle_error``.
    """
    server = runner.server
    if server is None:
        raise RuntimeError("answer_parse_errors needs a runner that is set up")

    class AnsweringHandler(web.RequestHandler):
        __slots__ = ()

        def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                         message: str | None = None) -> web.StreamResponse:
            """``answer`` instead of aiohttp's plain text; a refused request is logged at DEBUG, a bug in full."""
            if status >= 500:
                self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            else:
                self.logger.debug("refused a malformed request from %s: %s", request.remote, message)
            if request.writer.output_size > 0:  # as aiohttp: half a response is out, the connection is broken
                raise ConnectionError("a response is already on its way: no error answer can follow")
            response = answer(status, message or "")
            response.force_close()
            return response

    class AnsweringServer(type(server)):  # type: ignore[misc]
        def __call__(self) -> web.RequestHandler:
            handler = super().__call__()
            handler.__class__ = AnsweringHandler
            return handler

    server.__class__ = AnsweringServer
