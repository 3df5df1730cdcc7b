"""The pinned libraries still have what daemon/doors/_compat.py reaches into.

Each test builds the real library object and checks the private attribute through the
compat function: an upgrade that moves one fails here, not in a running door.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from pathlib import Path

import pytest
from aiohttp import web
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from daemon.doors import _compat


async def test_an_aiohttp_site_shows_the_port_it_bound() -> None:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        sockets = _compat.bound_sockets(site)
        assert sockets and sockets[0].getsockname()[1] > 0
    finally:
        await runner.cleanup()


def test_a_quic_connection_takes_a_cap_on_the_peers_request_streams() -> None:
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True))
    _compat.cap_peer_request_streams(quic, 7)
    assert quic._local_max_streams_bidi.value == 7
    assert quic._local_max_streams_bidi.sent == 7


def test_a_quic_connection_says_when_it_is_closing() -> None:
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True))
    assert _compat.quic_closing(quic) is False
    quic.close()
    assert _compat.quic_closing(quic) is True


async def test_a_quic_server_shows_its_configuration_connections_and_transport() -> None:
    configuration = QuicConfiguration(is_client=False)
    server = QuicServer(configuration=configuration)
    assert _compat.quic_server_configuration(server) is configuration
    assert _compat.quic_server_knows(server, b"\x01" * 8) is False
    assert _compat.quic_server_transport(server) is None
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    try:
        assert _compat.quic_server_transport(server) is transport
    finally:
        server.close()


def test_grpc_health_still_ships_an_asyncio_servicer() -> None:
    servicer = _compat.AsyncHealthServicer()
    assert inspect.iscoroutinefunction(servicer.Check)
    assert inspect.iscoroutinefunction(servicer.set)


async def test_an_aiohttp_server_answers_its_parsers_refusals_through_the_hub() -> None:
    runner = web.AppRunner(web.Application(handler_args={"max_field_size": 1024}))
    await runner.setup()
    _compat.answer_parse_errors(runner, lambda status, reason: web.json_response({"refused": reason}, status=status))
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = _compat.bound_sockets(site)[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-API-Key: " + b"k" * 4096 + b"\r\n\r\n")
        await writer.drain()
        answer = await reader.read()  # the hub closes the connection after a refusal
        writer.close()
    finally:
        await runner.cleanup()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400" and b"Content-Type: application/json" in head  # not aiohttp's text
    assert b"Got more than 1024 bytes" in body


def test_an_h3_connection_can_keep_qpack_to_the_static_table_both_ways() -> None:
    from aioquic.h3.connection import H3Connection, Setting

    h3 = _compat.static_table_h3(QuicConnection(configuration=QuicConfiguration(is_client=True)))
    assert isinstance(h3, H3Connection)
    assert h3._get_local_settings()[Setting.QPACK_MAX_TABLE_CAPACITY] == 0
    assert h3._get_local_settings()[Setting.QPACK_BLOCKED_STREAMS] == 0
    # a peer that allows a dynamic table does not get one used: no encoder-stream instructions
    assert h3._encoder.apply_settings(max_table_capacity=4096, blocked_streams=16) == b""
    headers = [(b":status", b"200"), (b"x-trace-id", b"0123456789abcdef"), (b"x-api-key", b"k" * 40)]
    for stream_id in (0, 4, 8):
        encoder_stream, block = h3._encoder.encode(stream_id, headers)
        assert encoder_stream == b""  # nothing inserted: nothing for the peer to acknowledge
        # and our own decoder, at capacity 0, reads such a block and owes no Section Acknowledgment
        decoder_stream, decoded = h3._decoder.feed_header(stream_id, block)
        assert decoder_stream == b"" and decoded == headers


def _handshaken(tmp_path: Path) -> tuple[QuicConnection, QuicConnection]:
    """A client and a server QUIC connection, handshake done, datagrams passed by hand."""
    from daemon.runtime.tls import ensure_pair

    pair = ensure_pair(tmp_path, host="127.0.0.1")
    server_configuration = QuicConfiguration(is_client=False, alpn_protocols=["h3"])
    server_configuration.load_cert_chain(pair.certificate, pair.private_key)
    client = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["h3"],
                                                            verify_mode=ssl.CERT_NONE))
    server = QuicConnection(configuration=server_configuration,
                            original_destination_connection_id=client.original_destination_connection_id)
    client_addr, server_addr = ("127.0.0.1", 1234), ("127.0.0.1", 4433)
    now = 1.0
    client.connect(server_addr, now=now)
    for _ in range(10):
        for data, _addr in client.datagrams_to_send(now=now):
            server.receive_datagram(data, client_addr, now=now)
        for data, _addr in server.datagrams_to_send(now=now):
            client.receive_datagram(data, server_addr, now=now)
        now += 0.1
    assert client._handshake_complete and server._handshake_complete
    return client, server


def test_a_quic_connection_can_hold_an_ack_for_the_answer_and_send_it_with_it(tmp_path: Path) -> None:
    client, server = _handshaken(tmp_path)
    now = 10.0
    assert _compat.quic_hold_ack(server, now + 0.02) is False  # nothing owed yet
    client.send_stream_data(0, b"a request", end_stream=True)
    for data, _addr in client.datagrams_to_send(now=now):
        server.receive_datagram(data, ("127.0.0.1", 1234), now=now)
    assert _compat.quic_hold_ack(server, now + 0.02) is True
    later = now + 0.005  # past aioquic's own 1 ms ack delay, inside the hold
    assert server.datagrams_to_send(now=later) == []
    assert server.get_timer() == pytest.approx(now + 0.02)
    _compat.quic_ack_due(server, later)
    assert len(server.datagrams_to_send(now=later)) == 1  # the ACK, now due
    assert server.datagrams_to_send(now=now + 0.03) == []  # and no longer owed
    _compat.quic_ack_due(server, now + 0.03)  # nothing owed: nothing to send
    assert server.datagrams_to_send(now=now + 0.03) == []


def test_aioquic_still_advertises_room_for_the_http3_doors_ack_hold(tmp_path: Path) -> None:
    from daemon.doors.http3 import ACK_HOLD_S

    client, _server = _handshaken(tmp_path)
    # the peer's loss timers allow for max_ack_delay (RFC 9002 6.2.1); the hold stays under it
    assert client._loss.max_ack_delay >= ACK_HOLD_S + 0.004
