"""Every reach of the doors into a library's private attributes, in one place.

aiohttp, aioquic and grpcio-health-checking have no public API for a few things the doors
need (the port a site really bound, a cap on the peer's concurrent streams, whether a QUIC
connection is closing, when a QUIC ACK goes out, the asyncio health servicer). Each reach is a
small function here, named for what it gets; ``tests/unit/doors/test_compat.py`` fails when a
pinned library moves one, so an upgrade breaks a test instead of a door.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pylsqpack
from aiohttp import web
from aiohttp.web_request import BaseRequest
from aioquic import tls
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3Connection, Setting
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

# grpcio-health-checking exports its asyncio servicer only from a private module
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer

__all__ = [
    "AsyncHealthServicer",
    "answer_parse_errors",
    "bound_sockets",
    "cap_peer_request_streams",
    "quic_ack_due",
    "quic_closing",
    "quic_hold_ack",
    "quic_server_configuration",
    "quic_server_knows",
    "quic_server_transport",
    "static_table_h3",
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


class _StaticTableEncoder:
    """pylsqpack's encoder (not subclassable), held to a dynamic table of 0 whatever the peer allows."""

    __slots__ = ("_encoder",)

    def __init__(self) -> None:
        self._encoder = pylsqpack.Encoder()

    def apply_settings(self, max_table_capacity: int, blocked_streams: int) -> bytes:
        return self._encoder.apply_settings(max_table_capacity=0, blocked_streams=0)

    def encode(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        return self._encoder.encode(stream_id, headers)

    def feed_decoder(self, data: bytes) -> None:
        self._encoder.feed_decoder(data)


class _StaticTableH3(H3Connection):
    """aioquic's H3 connection with QPACK's dynamic table off both ways (capacity 0 advertised and used)."""

    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)  # sends SETTINGS, through the override below
        self._max_table_capacity = self._blocked_streams = 0
        self._decoder = pylsqpack.Decoder(0, 0)
        self._encoder = _StaticTableEncoder()  # type: ignore[assignment]

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings[Setting.QPACK_MAX_TABLE_CAPACITY] = settings[Setting.QPACK_BLOCKED_STREAMS] = 0
        return settings


def static_table_h3(quic: QuicConnection) -> H3Connection:
    """An HTTP/3 connection whose QPACK uses the static table and literals only, in both directions.

    With a dynamic table, each header block the hub decodes owes the client a Section
    Acknowledgment on the decoder stream, and each block the hub encodes draws one back.  A
    responder that answers inside the event that brought the request (the bare aioquic server)
    carries those in its answer's datagram; the hub answers later, after the pipeline, so each
    went out (and came back) in a datagram of its own: about 3.9 datagrams sent and 3.9 read per
    call against 2.0 and 1.9 without the table (strace, 32 callers), and each one is a pass
    through aioquic's pure-Python packet code.  The price is a few bytes of literal headers per
    request; a capacity of 0 is QPACK's own default (RFC 9204 section 3.2.3).  aioquic has no
    knob for it: the settings come from a private method and the codecs are private attributes.
    """
    return _StaticTableH3(quic)


def quic_hold_ack(quic: QuicConnection, until: float) -> bool:
    """Let the ACK owed for 1-RTT packets wait until ``until``; False when none is owed.

    aioquic sends an ACK ``ack_delay`` (1 ms) after an ack-eliciting packet and writes one
    into an outgoing packet only once it is due, so an answer sent after that millisecond
    leaves behind an ACK-only datagram of its own (a timer, a packet built, sealed and sent),
    and one sent before it leaves the ACK to that timer all the same.  Held, and made due with
    ``quic_ack_due`` just before the answer goes out, the ACK rides in the answer's packet.
    aioquic has no knob: the time is ``ack_at`` of the private application packet space.
    """
    space = quic._spaces.get(tls.Epoch.ONE_RTT)
    if space is None or space.ack_at is None:
        return False
    if space.ack_at < until:
        space.ack_at = until
    return True


def quic_ack_due(quic: QuicConnection, now: float) -> None:
    """Make the ACK owed for 1-RTT packets (if any) due at ``now``: the next packet sent carries it."""
    space = quic._spaces.get(tls.Epoch.ONE_RTT)
    if space is not None and space.ack_at is not None and space.ack_at > now:
        space.ack_at = now


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
