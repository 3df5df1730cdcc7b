"""What a hub announces over mDNS, and what a neighbour makes of it, junk included."""

from __future__ import annotations

import pytest
from zeroconf import ServiceInfo

from federation.discovery.hints import (
    CHUNK_BYTES,
    MAX_ADDRS,
    MAX_TXT_BYTES,
    SERVICE_TYPE,
    PeerHint,
    hint_from_service,
    interface_ips,
    txt_for,
)

NODE = "12D3KooWJbJFaZ3k5sNd8DjQgg3aERoKtBAnirEvPV8yp76kEXHB"
FLEET = "fleet-mfrggzdfmztwq2lk"
NAME = f"{NODE}.{SERVICE_TYPE}"
ADDRS = [f"/ip4/10.77.0.1/tcp/4701/p2p/{NODE}", f"/ip6/fd00::1/tcp/4701/p2p/{NODE}"]


def over_the_air(txt: dict[str, str]) -> dict[bytes, bytes | None]:
    """The TXT record as a neighbour decodes it: zeroconf's own wire encoding and parsing."""
    sent = ServiceInfo(SERVICE_TYPE, NAME, port=4701, properties=txt)
    assert len(sent.text) <= MAX_TXT_BYTES
    return ServiceInfo(SERVICE_TYPE, NAME, port=4701, properties=sent.text).properties


def good() -> dict[bytes, bytes | None]:
    return over_the_air(txt_for(NODE, FLEET, ADDRS, "0.4.0"))


def test_a_hub_announcement_reads_back_as_the_same_hint() -> None:
    hint = hint_from_service(NAME, good())
    assert hint == PeerHint(node_id=NODE, fleet_id=FLEET, addrs=tuple(ADDRS), version="0.4.0")


def test_many_long_multiaddrs_are_cut_across_keys_and_joined_again() -> None:
    addrs = [f"/dns4/host-{i}.{'x' * 150}.example/tcp/{4700 + i}/p2p/{NODE}" for i in range(MAX_ADDRS)]
    txt = txt_for(NODE, FLEET, addrs, "0.4.0")
    assert int(txt["an"]) > 1
    assert all(len(f"{key}={value}".encode()) <= 255 for key, value in txt.items())
    assert max(len(value) for key, value in txt.items() if key.startswith("a") and key != "an") == CHUNK_BYTES
    hint = hint_from_service(NAME, over_the_air(txt))
    assert hint is not None
    assert hint.addrs == tuple(addrs)


def test_a_hub_refuses_to_announce_what_its_neighbours_would_drop() -> None:
    with pytest.raises(ValueError, match="node id"):
        txt_for("not a peer id!", FLEET, ADDRS, "0.4.0")
    with pytest.raises(ValueError, match="fleet id"):
        txt_for(NODE, "fleet/../x", ADDRS, "0.4.0")
    with pytest.raises(ValueError, match="version"):
        txt_for(NODE, FLEET, ADDRS, "0.4 beta")
    with pytest.raises(ValueError, match="multiaddr"):
        txt_for(NODE, FLEET, ["ip4/10.0.0.1/tcp/1"], "0.4.0")
    with pytest.raises(ValueError, match="multiaddr"):
        txt_for(NODE, FLEET, ["/ip4/10.0.0.1/tcp/1," + "/ip4/10.0.0.2/tcp/1"], "0.4.0")
    with pytest.raises(ValueError, match="at most"):
        txt_for(NODE, FLEET, ["/ip4/10.0.0.1/tcp/1"] * (MAX_ADDRS + 1), "0.4.0")


@pytest.mark.parametrize("missing", [b"txtvers", b"node", b"fleet", b"ver", b"an", b"a0"])
def test_a_record_missing_a_key_is_no_hint(missing: bytes) -> None:
    properties = good()
    del properties[missing]
    assert hint_from_service(NAME, properties) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"txtvers", b"2"),  # a format this hub does not know
        (b"node", None),  # a key without "="
        (b"node", b""),
        (b"node", b"12D3Koo W"),
        (b"node", b"x" * 129),
        (b"node", "12D3KooWé".encode()),
        (b"fleet", b"\xff\xfe"),
        (b"ver", b"v" * 65),
        (b"an", b"-1"),
        (b"an", b"999"),
        (b"an", b"two"),
        (b"an", b"5"),  # more chunks claimed than present
    ],
)
def test_junk_values_are_no_hint(key: bytes, value: bytes | None) -> None:
    properties = good()
    properties[key] = value
    assert hint_from_service(NAME, properties) is None


def test_a_service_of_another_type_or_an_oversized_name_is_no_hint() -> None:
    assert hint_from_service(f"{NODE}._http._tcp.local.", good()) is None
    assert hint_from_service("x" * 300 + "." + SERVICE_TYPE, good()) is None
    assert hint_from_service(NAME, {b"k%d" % i: b"v" for i in range(1000)}) is None
    assert hint_from_service(NAME, {}) is None


def test_bad_multiaddrs_are_dropped_one_by_one() -> None:
    junk = ["ip4/no/slash", "/" + "x" * 300, "/ip4/10.0.0.9/tcp/1 /x", ADDRS[0]]
    properties = good()
    properties[b"an"] = b"1"
    properties[b"a0"] = ",".join(junk).encode()
    hint = hint_from_service(NAME, properties)
    assert hint is not None
    assert hint.addrs == (ADDRS[0],)


def test_a_record_whose_multiaddrs_are_all_junk_is_no_hint() -> None:
    properties = good()
    properties[b"an"] = b"1"
    properties[b"a0"] = b"nonsense,,also-nonsense"
    assert hint_from_service(NAME, properties) is None


def test_a_hub_listening_on_every_interface_is_dialled_where_mdns_found_it() -> None:
    properties = over_the_air(txt_for(NODE, FLEET, [f"/ip4/0.0.0.0/tcp/4701/p2p/{NODE}"], "0.4.0"))
    hint = hint_from_service(NAME, properties, addresses=["10.77.0.2", "fe80::1", "not an ip"], port=4701)
    assert hint is not None
    assert hint.addrs == (f"/ip4/0.0.0.0/tcp/4701/p2p/{NODE}", f"/ip4/10.77.0.2/tcp/4701/p2p/{NODE}")


def test_an_address_already_announced_is_not_added_twice() -> None:
    hint = hint_from_service(NAME, good(), addresses=["10.77.0.1", "fd00::1"], port=4701)
    assert hint is not None
    assert hint.addrs == tuple(ADDRS)


def test_a_record_with_no_multiaddrs_still_gives_the_resolved_address() -> None:
    properties = over_the_air(txt_for(NODE, FLEET, [], "0.4.0"))
    assert hint_from_service(NAME, properties) is None
    hint = hint_from_service(NAME, properties, addresses=["10.77.0.3"], port=4701)
    assert hint is not None
    assert hint.addrs == (f"/ip4/10.77.0.3/tcp/4701/p2p/{NODE}",)


def test_mdns_announces_on_the_listen_hosts_but_never_on_loopback_or_every_interface() -> None:
    listen = [
        "/ip4/127.0.0.1/tcp/4701",
        "/ip4/0.0.0.0/tcp/4701",
        "/ip4/10.77.0.1/tcp/4701",
        "/ip4/10.77.0.1/udp/4701/quic-v1",
        "/ip6/::/tcp/4701",
        "/dns4/example.org/tcp/4701",
        "/ip4/not-an-ip/tcp/1",
        "/ip6/fd00::1/tcp/4701",
    ]
    assert interface_ips(listen) == ["10.77.0.1", "fd00::1"]
    assert interface_ips(["/ip4/127.0.0.1/tcp/4701"]) == []
