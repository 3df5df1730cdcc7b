"""The HTTP/3 door (aioquic, UDP): the same routes as HTTP/1.1, served by the same ``HttpApi``.

A request becomes an ``ApiRequest`` (door ``http3``) and the ``ApiResponse`` goes back as
HEADERS + DATA, streamed bodies chunk by chunk, so bodies and codes are those of the
HTTP/1.1 door by construction.  TLS 1.3 with the configured pair or a self-signed one
made in the state dir.  Limits so one client cannot exhaust the hub: a new client first
proves its address with a Retry round trip (``retry``), at most ``max_connections`` QUIC
connections (a new one beyond is closed at once with CONNECTION_REFUSED),
``max_streams_per_connection`` concurrent request streams each, bodies over
``max_body_bytes`` answered 413 without being buffered further, and at most
``max_buffered_bytes`` of request bodies held per connection (a stream that would pass it
is answered 503 UNAVAILABLE): bodies are held until their call ends.  A request
stream the client resets, or a connection that ends, cancels its call in the pipeline.
QPACK keeps to its static table both ways (``_compat.static_table_h3``): the hub answers
after the pipeline, not in the event that brought the request, so table acknowledgments
would each cost a datagram of their own.  For the same reason the ACK of a request waits
for its answer (at most ``ACK_HOLD_S``) and goes out in the answer's packet: one datagram
per call instead of the answer and an ACK-only one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import TRANSPORT_CLOSE_FRAME_CAPACITY, NetworkAddress
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StopSendingReceived, StreamReset
from aioquic.quic.packet import QuicErrorCode, QuicFrameType, QuicPacketType, pull_quic_header
from aioquic.quic.packet_builder import QuicPacketBuilder

from daemon.api.http_api import ApiRequest, ApiResponse, HttpApi, error_response
from daemon.core.errors import PayloadTooLarge, Unavailable, ValidationError
from daemon.core.i18n import pick_language, t
from daemon.doors._compat import (
    cap_peer_request_streams,
    quic_ack_due,
    quic_closing,
    quic_hold_ack,
    quic_server_configuration,
    quic_server_knows,
    quic_server_transport,
    static_table_h3,
)
from daemon.runtime.config import Http3Config, parse_listen
from daemon.runtime.tls import TlsPair, ensure_pair

log = logging.getLogger("democratic_ai.http3")

#: how long the ACK of a request may wait to ride in its answer: under the max_ack_delay of
#: 25 ms aioquic advertises (tests/unit/doors/test_compat.py pins it), so the client's loss
#: timers allow for it; an answer later than this gets the ACK-only datagram as before
ACK_HOLD_S = 0.020


@dataclass(slots=True)
class _Incoming:
    """A request stream being received."""

    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    answered: bool = False  # refused early (413 / bad headers): later data is dropped


class H3ServerProtocol(QuicConnectionProtocol):
    """One QUIC connection: HTTP/3 requests to ``HttpApi``; every call task is held and cancelled with it."""

    def __init__(self, *args: Any, door: Http3Door, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._door = door
        self._http = static_table_h3(self._quic)  # half the datagrams per call: see its docstring
        self._incoming: dict[int, _Incoming] = {}
        self.calls: dict[int, asyncio.Task[None]] = {}
        #: request body bytes this connection has the hub hold: received, or in a call still running
        self.buffered = 0
        cap_peer_request_streams(self._quic, door.config.max_streams_per_connection)
        self._remote = ""
        self._ack_held = False  # a request's ACK waits for its answer (quic_hold_ack)

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        """Remember the peer's IP from its first datagram (the ``remote`` of every request), then let aioquic parse."""
        if not self._remote:
            self._remote = str(addr[0])
        super().datagram_received(data, addr)

    def quic_event_received(self, event: QuicEvent) -> None:
        """Connection end cancels every call; a stream reset or STOP_SENDING cancels that stream's call."""
        if isinstance(event, ConnectionTerminated):
            self._door.connections.discard(self)
            for task in self.calls.values():
                task.cancel()
            self._incoming.clear()
            return
        if isinstance(event, StreamReset | StopSendingReceived):
            # the client gave up on this request: its call ends in the pipeline too
            dropped = self._incoming.pop(event.stream_id, None)
            if dropped is not None:
                self.buffered -= len(dropped.body)
            call = self.calls.get(event.stream_id)
            if call is not None:
                call.cancel()
        # aioquic's H3 layer closes the connection itself on an HTTP/3 protocol error
        for h3_event in self._http.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            if event.stream_id in self._incoming or event.stream_id in self.calls:
                return  # trailers: not used by any route
            incoming = _Incoming(event.headers)
            self._incoming[event.stream_id] = incoming
            if event.stream_ended:
                self._dispatch(event.stream_id)
        elif isinstance(event, DataReceived):
            found = self._incoming.get(event.stream_id)
            if found is None or found.answered:
                return
            found.body += event.data
            self.buffered += len(event.data)
            if self._ack_held and not event.stream_ended:
                self._ack_now()  # a body on its way: its sender's window wants ACKs, not held ones
            refusal = self._over_limit(found)
            if refusal is not None:
                found.answered = True
                self.buffered -= len(found.body)
                found.body.clear()
                lang = pick_language(next((v.decode("latin-1") for k, v in found.headers
                                           if k.lower() == b"accept-language"), None))
                self._start_call(event.stream_id, self._answer(event.stream_id, error_response(refusal, "", lang)))
            elif event.stream_ended:
                self._dispatch(event.stream_id)

    def _over_limit(self, incoming: _Incoming) -> PayloadTooLarge | Unavailable | None:
        """413 for a body over max_body_bytes; 503 when this connection's bodies together pass max_buffered_bytes."""
        if len(incoming.body) > self._door.max_body_bytes:
            return PayloadTooLarge(t("errors.doors_http.body_over_bytes", max_body_bytes=self._door.max_body_bytes),
                                   {"limit": self._door.max_body_bytes})
        cap = self._door.config.max_buffered_bytes
        if self.buffered > cap:
            return Unavailable(t("errors.http3.connection_request_bodies_over", cap=cap), {"limit": cap},
                               retry_after=1.0)
        return None

    def _dispatch(self, stream_id: int) -> None:
        incoming = self._incoming.pop(stream_id)
        self._start_call(stream_id, self._serve(stream_id, incoming), held=len(incoming.body))

    def _start_call(self, stream_id: int, coro: Any, *, held: int = 0) -> None:
        task = self._loop.create_task(coro)
        self.calls[stream_id] = task
        if self._ack_held:  # a second request while one's ACK is held: acknowledge both now (RFC 9000 13.2.2)
            self._ack_now()
        else:
            self._ack_held = quic_hold_ack(self._quic, self._loop.time() + ACK_HOLD_S)

        def done(_: asyncio.Task[None]) -> None:
            self.calls.pop(stream_id, None)
            self.buffered -= held  # the call no longer holds its body

        task.add_done_callback(done)

    async def _serve(self, stream_id: int, incoming: _Incoming) -> None:
        pseudo: dict[bytes, bytes] = {}
        headers: dict[str, str] = {}
        for name, value in incoming.headers:
            if name.startswith(b":"):
                pseudo[name] = value
            else:
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
        method = pseudo.get(b":method", b"").decode("latin-1")
        target = pseudo.get(b":path", b"").decode("latin-1")
        if not method or not target.startswith("/"):
            exc = ValidationError(t("errors.http3.request_lacks_method_absolute"))
            await self._answer(stream_id, error_response(exc, ""))
            return
        path, _, query = target.partition("?")
        request = ApiRequest(method=method, path=path, headers=headers, body=bytes(incoming.body),
                             query=dict(parse_qsl(query)) if query else {}, remote=self._remote, door="http3",
                             secure=True)
        await self._answer(stream_id, await self._door.api.handle(request))

    async def _answer(self, stream_id: int, response: ApiResponse) -> None:
        head = [(b":status", str(response.status).encode())]
        head.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items())
        try:
            if response.stream is None:
                self._send(stream_id, head, response.body)
                return
            self._http.send_headers(stream_id, head)
            self._ack_now()
            self.transmit()
            async for chunk in response.stream:
                if quic_closing(self._quic):
                    return
                self._http.send_data(stream_id, chunk, end_stream=False)
                self.transmit()
            self._http.send_data(stream_id, b"", end_stream=True)
            self.transmit()
        except RuntimeError as exc:  # aioquic: the stream was reset or stopped under us
            log.debug("http3 stream %d ended early: %s", stream_id, exc)
        finally:
            if response.stream is not None:
                await response.stream.aclose()

    def _send(self, stream_id: int, head: list[tuple[bytes, bytes]], body: bytes) -> None:
        if quic_closing(self._quic):
            return
        self._http.send_headers(stream_id, head, end_stream=not body)
        if body:
            self._http.send_data(stream_id, body, end_stream=True)
        self._ack_now()
        self.transmit()

    def _ack_now(self) -> None:
        """The ACK owed (held or not) goes in the next packet: the answer's, or one of its own."""
        self._ack_held = False
        quic_ack_due(self._quic, self._loop.time())


def _refusal(version: int, source_cid: bytes, destination_cid: bytes) -> bytes:
    """A server Initial closing a new connection with CONNECTION_REFUSED (the hub is at max_connections)."""
    crypto = CryptoPair()
    crypto.setup_initial(cid=source_cid, is_client=False, version=version)
    builder = QuicPacketBuilder(host_cid=source_cid, is_client=False, max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
                                peer_cid=destination_cid, version=version)
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE, capacity=TRANSPORT_CLOSE_FRAME_CAPACITY)
    buf.push_uint_var(QuicErrorCode.CONNECTION_REFUSED)
    buf.push_uint_var(QuicFrameType.PADDING)
    buf.push_uint_var(0)
    datagrams, _ = builder.flush()
    return datagrams[0]


class LimitedQuicServer(QuicServer):
    """aioquic's server, refusing a new connection once ``max_connections`` are open."""

    def __init__(self, *, door: Http3Door, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._door = door

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        """At max_connections a new Initial is refused CONNECTION_REFUSED, garbage dropped; the rest go to aioquic."""
        if isinstance(data, bytes) and len(self._door.connections) >= self._door.config.max_connections:
            try:
                configuration = quic_server_configuration(self)
                header = pull_quic_header(Buffer(data=data), host_cid_length=configuration.connection_id_length)
            except ValueError:
                return
            if (not quic_server_knows(self, header.destination_cid) and header.packet_type == QuicPacketType.INITIAL
                    and header.version in configuration.supported_versions
                    and len(data) >= SMALLEST_MAX_DATAGRAM_SIZE):
                transport = quic_server_transport(self)
                assert transport is not None and header.version is not None
                transport.sendto(_refusal(header.version, header.destination_cid, header.source_cid), addr)
                return
        super().datagram_received(data, addr)


class Http3Door:
    """The UDP endpoint and its connections; ``port`` once started, ``advertise(port)`` then feeds Alt-Svc."""

    def __init__(self, config: Http3Config, api: HttpApi, state_dir: Path, *, max_body_bytes: int,
                 advertise: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.api = api
        self.state_dir = state_dir
        self.max_body_bytes = max_body_bytes
        self.advertise = advertise
        self.port = 0
        self.tls: TlsPair | None = None
        self.connections: set[H3ServerProtocol] = set()
        self._server: LimitedQuicServer | None = None

    def _protocol(self, *args: Any, **kwargs: Any) -> H3ServerProtocol:
        protocol = H3ServerProtocol(*args, door=self, **kwargs)
        self.connections.add(protocol)
        return protocol

    async def start(self) -> None:
        """Load or make the TLS pair, bind ``config.listen`` over UDP, then advertise the bound port."""
        host, port = parse_listen(self.config.listen)
        self.tls = ensure_pair(self.state_dir, self.config.certificate, self.config.private_key, host=host)
        configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, idle_timeout=60.0,
                                          max_datagram_frame_size=None)
        configuration.load_cert_chain(self.tls.certificate, self.tls.private_key)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: LimitedQuicServer(door=self, configuration=configuration, create_protocol=self._protocol,
                                      retry=self.config.retry),
            local_addr=(host, port),
        )
        self._server = protocol
        self.port = int(transport.get_extra_info("sockname")[1])
        if self.advertise is not None:
            self.advertise(self.port)
        quic_log = logging.getLogger("quic")  # aioquic logs every connection at INFO
        quic_log.setLevel(max(logging.WARNING, quic_log.level))
        log.info("http3 door listening", extra={"listen": f"{host}:{self.port}", "self_signed": self.tls.self_signed})

    async def stop_accepting(self) -> None:
        """New connections are refused; requests on open ones keep being served until close."""
        self.config = replace(self.config, max_connections=0)

    async def close(self) -> None:
        """Cancel and await every call, then close each connection and the socket; safe to call twice."""
        if self._server is None:
            return
        tasks = [t for c in self.connections for t in c.calls.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._server.close()  # closes every connection (CONNECTION_CLOSE) and the socket
        self._server = None
        self.connections.clear()
