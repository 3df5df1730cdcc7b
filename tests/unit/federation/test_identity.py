"""Node keys, peer ids, fleet keys, node certificates and the one trust decision, with no network."""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest

from federation.fleet import (
    CERT_FILE,
    CERT_SKEW_S,
    MAX_CERT_BYTES,
    FleetKey,
    FleetTrust,
    NodeCertificate,
    PeerRefused,
    install_certificate,
    load_trust,
)
from federation.identity import (
    NODE_KEY_FILE,
    IdentityError,
    NodeIdentity,
    peer_id_from_public_key,
    public_key_from_peer_id,
    public_key_from_text,
    verify,
)

NOW = 1_800_000_000.0
DAY = 86400.0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fleet() -> FleetKey:
    return FleetKey.generate("acme")


@pytest.fixture
def paris() -> NodeIdentity:
    return NodeIdentity.generate()


@pytest.fixture
def lyon() -> NodeIdentity:
    return NodeIdentity.generate()


# -- the node key and its peer id -------------------------------------------------------------------


def test_a_hub_makes_its_node_key_once_and_keeps_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = NodeIdentity.load_or_create(state)
    assert (state / NODE_KEY_FILE).read_bytes() == first.seed
    assert mode(state / NODE_KEY_FILE) == 0o600
    again = NodeIdentity.load_or_create(state)
    assert again.peer_id == first.peer_id and again.public_key == first.public_key
    assert first.peer_id.startswith("12D3KooW")
    assert base64.b64decode(first.public_key_b64) == first.public_key


def test_the_seed_never_shows_in_a_repr(paris: NodeIdentity) -> None:
    shown = repr(paris) + str(paris)
    assert paris.peer_id in shown
    assert paris.seed.hex() not in shown and repr(paris.seed) not in shown


def test_a_node_key_file_of_the_wrong_size_is_refused_not_replaced(tmp_path: Path) -> None:
    (tmp_path / NODE_KEY_FILE).write_bytes(b"short")
    with pytest.raises(IdentityError, match="not a 32-byte"):
        NodeIdentity.load_or_create(tmp_path)
    (tmp_path / NODE_KEY_FILE).write_bytes(os.urandom(33))
    with pytest.raises(IdentityError, match="over 32 bytes"):
        NodeIdentity.load_or_create(tmp_path)
    assert len((tmp_path / NODE_KEY_FILE).read_bytes()) == 33  # the operator's file is left as it was


def test_signatures_verify_with_the_public_key_only(paris: NodeIdentity, lyon: NodeIdentity) -> None:
    signature = paris.sign(b"hello")
    assert len(signature) == 64
    assert verify(paris.public_key, b"hello", signature)
    assert not verify(paris.public_key, b"hellO", signature)
    assert not verify(lyon.public_key, b"hello", signature)
    assert not verify(paris.public_key[:31], b"hello", signature)  # bad input: False, never an exception
    assert not verify(paris.public_key, b"hello", signature[:63])


def test_the_peer_id_is_the_one_libp2p_derives_for_the_same_seed() -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    for _ in range(20):
        identity = NodeIdentity.generate()
        libp2p_id = ID.from_pubkey(create_new_key_pair(identity.seed).public_key)
        assert identity.peer_id == libp2p_id.to_base58()
        assert public_key_from_peer_id(libp2p_id.to_base58()) == identity.public_key


def test_a_peer_id_gives_back_its_key_and_nothing_else_passes_for_one(paris: NodeIdentity) -> None:
    assert public_key_from_peer_id(paris.peer_id) == paris.public_key
    assert peer_id_from_public_key(paris.public_key) == paris.peer_id
    # a sha256 peer id (RSA keys), base58 junk, a truncated id, a huge text: all a clear IdentityError
    for bad in ("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "0OIl", paris.peer_id[:-1], "1" * 10_000, ""):
        with pytest.raises(IdentityError):
            public_key_from_peer_id(bad)
    with pytest.raises(IdentityError):
        peer_id_from_public_key(b"\x00" * 31)


def test_an_operator_names_a_node_by_its_base64_key_or_its_node_id(paris: NodeIdentity) -> None:
    assert public_key_from_text(paris.public_key_b64) == paris.public_key
    assert public_key_from_text(f"  {paris.peer_id}\n") == paris.public_key
    for bad in ("", "not base64!", base64.b64encode(b"x" * 31).decode(), "12D3KooWnotreally"):
        with pytest.raises(IdentityError):
            public_key_from_text(bad)


# -- the fleet key ------------------------------------------------------------------------------------


def test_a_fleet_key_is_saved_private_loads_back_and_is_never_overwritten(tmp_path: Path, fleet: FleetKey) -> None:
    key_path, pub_path = fleet.save(tmp_path / "fleet")
    assert mode(key_path) == 0o600
    loaded = FleetKey.load(key_path)
    assert (loaded.public_key, loaded.fleet_id, loaded.name) == (fleet.public_key, fleet.fleet_id, "acme")
    assert fleet.fleet_id in pub_path.read_text()
    assert fleet.seed.hex() not in repr(fleet)
    with pytest.raises(IdentityError, match="never overwritten"):
        FleetKey.generate("other").save(tmp_path / "fleet")
    assert FleetKey.load(key_path).fleet_id == fleet.fleet_id


def test_the_fleet_id_is_derived_from_the_fleet_key(fleet: FleetKey) -> None:
    assert fleet.fleet_id.startswith("fleet-") and len(fleet.fleet_id) == len("fleet-") + 16
    assert fleet.fleet_id == fleet.fleet_id.lower() and "=" not in fleet.fleet_id
    assert FleetKey.from_seed(fleet.seed, "renamed").fleet_id == fleet.fleet_id
    assert FleetKey.generate("acme").fleet_id != fleet.fleet_id  # same name, another key: another fleet


def test_a_file_that_is_not_a_fleet_key_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="no fleet key at"):
        FleetKey.load(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_text("hello\n")
    with pytest.raises(IdentityError, match="not a fleet key"):
        FleetKey.load(tmp_path / "junk.key")
    (tmp_path / "huge.key").write_bytes(b"x" * 100_000)
    with pytest.raises(IdentityError, match="over"):
        FleetKey.load(tmp_path / "huge.key")


def test_signing_refuses_bad_sites_roles_and_periods(fleet: FleetKey, paris: NodeIdentity) -> None:
    for site, role, days in (("", "site", 1), ("x" * 65, "site", 1), ("a\nb", "site", 1),
                             ("paris", "king", 1), ("paris", "site", 0), ("paris", "site", 100_000)):
        with pytest.raises(IdentityError):
            fleet.sign_node(paris.public_key, site, role, days, now=NOW)
    with pytest.raises(IdentityError):
        fleet.sign_node(b"short", "paris", now=NOW)


# -- certificates --------------------------------------------------------------------------------------


def test_a_certificate_round_trips_as_bytes_and_as_text(fleet: FleetKey, paris: NodeIdentity) -> None:
    cert = fleet.sign_node(paris.public_key, "paris", "central", 30, now=NOW)
    cert.check_signature()
    assert NodeCertificate.from_bytes(cert.to_bytes()) == cert
    text = cert.to_text()
    assert text.startswith("-----BEGIN DEMOCRATIC-AI NODE CERTIFICATE-----\n")
    assert NodeCertificate.from_text(text) == cert
    assert NodeCertificate.from_text(text.encode()) == cert
    assert (cert.node_id, cert.site, cert.role, cert.fleet_id) == (paris.peer_id, "paris", "central", fleet.fleet_id)
    assert cert.expires_at - cert.issued_at == 30 * DAY


def test_any_change_to_a_signed_certificate_breaks_its_signature(fleet: FleetKey, paris: NodeIdentity,
                                                                    lyon: NodeIdentity) -> None:
    cert = fleet.sign_node(paris.public_key, "paris", now=NOW)
    for forged in (replace(cert, site="lyon"), replace(cert, role="central"), replace(cert, expires_at=NOW + 1e9),
                   replace(cert, node_public_key=lyon.public_key), replace(cert, fleet_name="other")):
        with pytest.raises(IdentityError, match="signature"):
            forged.check_signature()
    # a key of one's own, claiming the acme fleet's id: the id is the real key's hash
    mallory = FleetKey.generate("acme")
    claimed = replace(mallory.sign_node(paris.public_key, "paris", now=NOW), fleet_id=fleet.fleet_id)
    with pytest.raises(IdentityError, match="fleet id"):
        claimed.check_signature()


def test_certificate_bytes_from_a_peer_are_bounded_and_typed(fleet: FleetKey, paris: NodeIdentity) -> None:
    good = msgpack.unpackb(fleet.sign_node(paris.public_key, "paris", now=NOW).to_bytes())
    bad_inputs: list[object] = [
        b"", b"\xc1", b"\x92\x01\x02", os.urandom(200), b"\x00" * (MAX_CERT_BYTES + 1), "a text",
        msgpack.packb({**good, "v": 2}), msgpack.packb({**good, "extra": 1}),
        msgpack.packb({k: v for k, v in good.items() if k != "sig"}),
        msgpack.packb({**good, "site": 7}), msgpack.packb({**good, "issued_at": True}),
        msgpack.packb({**good, "expires_at": float("nan")}), msgpack.packb({**good, "node_key": b"short"}),
        msgpack.packb({**good, "sig": b"\x00" * 10}), msgpack.packb({**good, "role": "king"}),
        msgpack.packb({**good, "site": "x" * 3000}),
        msgpack.packb(good) + b"\x00",  # trailing bytes
    ]
    for bad in bad_inputs:
        with pytest.raises(IdentityError):
            NodeCertificate.from_bytes(bad)  # type: ignore[arg-type]
    for text in ("", "garbage", "-----BEGIN DEMOCRATIC-AI NODE CERTIFICATE-----\n!!!\n"
                 "-----END DEMOCRATIC-AI NODE CERTIFICATE-----\n", "é" * 10, "x" * 100_000):
        with pytest.raises(IdentityError):
            NodeCertificate.from_text(text)


# -- the trust decision -----------------------------------------------------------------------------------


def trust_of(fleet: FleetKey, node: NodeIdentity, *, trusted: frozenset[bytes] = frozenset()) -> FleetTrust:
    return FleetTrust(own=fleet.sign_node(node.public_key, "home", now=NOW), trusted_keys=trusted)


def refusal(trust: FleetTrust, peer_id: str, cert: NodeCertificate | None, now: float = NOW) -> str:
    with pytest.raises(PeerRefused) as refused:
        trust.admit(peer_id, cert, now)
    return refused.value.reason


def test_a_peer_with_a_valid_certificate_of_the_fleet_is_admitted(fleet: FleetKey, paris: NodeIdentity,
                                                                    lyon: NodeIdentity) -> None:
    trust = trust_of(fleet, paris)
    cert = fleet.sign_node(lyon.public_key, "lyon", "central", now=NOW)
    peer = trust.admit(lyon.peer_id, cert, NOW + 10)
    assert (peer.peer_id, peer.public_key, peer.site, peer.role, peer.fleet_id) == (
        lyon.peer_id, lyon.public_key, "lyon", "central", fleet.fleet_id)
    assert trust.federates


def test_a_certificate_is_valid_from_issue_less_the_skew_until_expiry(fleet: FleetKey, paris: NodeIdentity,
                                                                        lyon: NodeIdentity) -> None:
    trust = trust_of(fleet, paris)
    cert = fleet.sign_node(lyon.public_key, "lyon", days=1, now=NOW)
    assert trust.admit(lyon.peer_id, cert, NOW - CERT_SKEW_S).site == "lyon"  # the peer's clock a little behind
    assert refusal(trust, lyon.peer_id, cert, NOW - CERT_SKEW_S - 1) == "not_yet_valid"
    assert trust.admit(lyon.peer_id, cert, NOW + DAY - 1).site == "lyon"
    assert refusal(trust, lyon.peer_id, cert, NOW + DAY) == "expired"


def test_peers_without_a_valid_certificate_of_this_fleet_are_refused_with_a_reason(
        fleet: FleetKey, paris: NodeIdentity, lyon: NodeIdentity) -> None:
    trust = trust_of(fleet, paris)
    good = fleet.sign_node(lyon.public_key, "lyon", now=NOW)
    other_fleet = FleetKey.generate("acme").sign_node(lyon.public_key, "lyon", now=NOW)
    assert refusal(trust, lyon.peer_id, None) == "no_certificate"
    assert refusal(trust, lyon.peer_id, other_fleet) == "other_fleet"
    assert refusal(trust, lyon.peer_id, replace(good, role="central")) == "bad_signature"
    # paris's certificate, presented on a link Noise authenticated as lyon: copied, worthless
    assert refusal(trust, lyon.peer_id, trust.own) == "key_mismatch"
    assert refusal(trust, "not-a-peer-id", good) == "malformed"
    assert refusal(trust, "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", good) == "malformed"


def test_a_hub_without_a_certificate_admits_only_its_trusted_keys(fleet: FleetKey, paris: NodeIdentity,
                                                                    lyon: NodeIdentity) -> None:
    alone = FleetTrust(own=None, trusted_keys=frozenset())
    assert not alone.federates
    assert refusal(alone, lyon.peer_id, fleet.sign_node(lyon.public_key, "lyon", now=NOW)) == "other_fleet"

    lab = FleetTrust(own=None, trusted_keys=frozenset({lyon.public_key}))
    assert lab.federates
    peer = lab.admit(lyon.peer_id, None, NOW)
    assert (peer.peer_id, peer.public_key, peer.site, peer.fleet_id) == (lyon.peer_id, lyon.public_key, "", "")
    assert refusal(lab, paris.peer_id, None) == "no_certificate"


def test_a_trusted_key_is_admitted_beside_the_fleet_and_a_cert_still_names_its_site(
        fleet: FleetKey, paris: NodeIdentity, lyon: NodeIdentity) -> None:
    trust = trust_of(fleet, paris, trusted=frozenset({lyon.public_key}))
    assert trust.admit(lyon.peer_id, None, NOW).site == ""
    # an expired certificate does not matter for a trusted key
    expired = fleet.sign_node(lyon.public_key, "lyon", days=1, now=NOW - 10 * DAY)
    assert trust.admit(lyon.peer_id, expired, NOW).peer_id == lyon.peer_id
    assert trust.admit(lyon.peer_id, fleet.sign_node(lyon.public_key, "lyon", now=NOW), NOW).site == "lyon"


# -- the certificate on disk ---------------------------------------------------------------------------------


def test_joining_installs_this_nodes_certificate_private_and_the_hub_loads_it(
        tmp_path: Path, fleet: FleetKey) -> None:
    identity = NodeIdentity.load_or_create(tmp_path)
    cert = fleet.sign_node(identity.public_key, "paris", now=NOW)
    path = install_certificate(tmp_path, cert.to_text(), identity, now=NOW)
    assert path == tmp_path / CERT_FILE
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    trust = load_trust(tmp_path, "", [], identity=identity)
    assert trust.own == cert and trust.federates
    assert load_trust(tmp_path, str(path), []).own == cert


def test_joining_refuses_a_certificate_for_another_node_a_forged_or_an_expired_one(
        tmp_path: Path, fleet: FleetKey, lyon: NodeIdentity) -> None:
    identity = NodeIdentity.load_or_create(tmp_path)
    with pytest.raises(IdentityError, match="for node"):
        install_certificate(tmp_path, fleet.sign_node(lyon.public_key, "lyon", now=NOW).to_text(), identity)
    forged = replace(fleet.sign_node(identity.public_key, "paris", now=NOW), role="central")
    with pytest.raises(IdentityError, match="signature"):
        install_certificate(tmp_path, forged.to_text(), identity)
    expired = fleet.sign_node(identity.public_key, "paris", days=1, now=NOW - 2 * DAY)
    with pytest.raises(IdentityError, match="expired"):
        install_certificate(tmp_path, expired.to_text(), identity, now=NOW)
    with pytest.raises(IdentityError):
        install_certificate(tmp_path, "garbage", identity)
    assert not (tmp_path / CERT_FILE).exists()


def test_trust_from_config_no_certificate_trusted_keys_and_bad_entries(
        tmp_path: Path, fleet: FleetKey, paris: NodeIdentity, lyon: NodeIdentity) -> None:
    alone = load_trust(tmp_path, "", [])
    assert alone.own is None and not alone.federates
    lab = load_trust(tmp_path, "", [paris.public_key_b64, lyon.peer_id])
    assert lab.trusted_keys == {paris.public_key, lyon.public_key}
    with pytest.raises(IdentityError, match=r"trusted_keys\[1\]"):
        load_trust(tmp_path, "", [paris.public_key_b64, "nope"])

    (tmp_path / "fleet").mkdir()
    (tmp_path / CERT_FILE).write_text("not a certificate")
    with pytest.raises(IdentityError, match=r"node\.cert"):
        load_trust(tmp_path, "", [])
    (tmp_path / CERT_FILE).write_text(fleet.sign_node(lyon.public_key, "lyon", now=NOW).to_text())
    with pytest.raises(IdentityError, match="not of this node"):
        load_trust(tmp_path, "", [], identity=paris)
