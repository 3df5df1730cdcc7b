"""Adverts: a hub advertises only what it serves itself, and every field a peer sends is checked."""

from __future__ import annotations

import copy
import math
from typing import Any

import msgpack
import pytest

from daemon.core.envelope import CapabilityEntry, ServingModule
from federation.adverts import (
    MAX_SCHEMA_BYTES,
    Advert,
    AdvertError,
    capabilities_of,
    next_seq,
    schema_hash,
)

NODE = "12D3KooWRfYU5FaY9SmJcRD5Ar7cXqrTiY3DBwv2h4Cq5zKLUkkJ"
SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def entry(action: str, origin: str = "local", **kw: Any) -> CapabilityEntry:
    return CapabilityEntry(action=action, description=kw.get("description", f"does {action}"),
                           input_schema=kw.get("input_schema", SCHEMA), output_schema=kw.get("output_schema", {}),
                           streaming=kw.get("streaming", False), modules=(ServingModule("m", "local"),), origin=origin)


def good_body() -> dict[str, Any]:
    caps = capabilities_of([entry("text.summarize"), entry("audio.vad", streaming=True)])
    advert = Advert(node_id=NODE, site="lyon", seq=1_700_000_000_000_000, version="0.9.0", load=0.25, free_slots=3,
                    capabilities=caps, addrs=("/ip4/10.0.0.2/tcp/4701",),
                    peers=((NODE, ("/ip4/10.0.0.3/tcp/4701",)),))
    return advert.to_body()


def test_an_advert_survives_msgpack_both_ways() -> None:
    body = good_body()
    advert = Advert.from_body(msgpack.unpackb(msgpack.packb(body, use_bin_type=True), raw=False))
    assert advert.to_body() == body
    assert advert.actions() == {"text.summarize", "audio.vad"}
    assert [c.streaming for c in advert.capabilities] == [True, False]  # sorted by action: audio.vad first


def test_capabilities_of_advertises_local_and_remote_but_never_what_peers_serve() -> None:
    caps = capabilities_of([
        entry("text.summarize", "local"),
        entry("image.caption", "remote"),
        entry("audio.transcribe", f"peer:{NODE}"),
    ])
    assert [c.action for c in caps] == ["image.caption", "text.summarize"]


def test_capabilities_of_leaves_out_what_no_peer_would_accept() -> None:
    huge = {"type": "object", "description": "x" * (MAX_SCHEMA_BYTES + 1)}
    caps = capabilities_of([entry("Bad Name"), entry("big.schema", input_schema=huge),
                            entry("ok.one", description="d" * 10_000)])
    assert [c.action for c in caps] == ["ok.one"]
    assert len(caps[0].description) == 4096
    Advert.from_body(Advert(NODE, "s", 1, "v", 0.0, 1, caps).to_body())  # what we send, peers accept


def test_an_empty_output_schema_is_advertised_as_none_and_hashed_the_same_on_both_sides() -> None:
    (cap,) = capabilities_of([entry("echo")])
    assert cap.output_schema is None
    assert cap.schema_hash == schema_hash(SCHEMA, None)
    assert len(cap.schema_hash) == 16


def test_the_schema_hash_ignores_key_order_but_not_content() -> None:
    reordered = {"required": ["text"], "properties": {"text": {"type": "string"}}, "type": "object"}
    assert schema_hash(SCHEMA, None) == schema_hash(reordered, None)
    assert schema_hash(SCHEMA, None) != schema_hash(SCHEMA, {"type": "string"})


def test_seq_starts_at_the_wall_clock_and_always_grows() -> None:
    assert next_seq(0, 1_700_000_000.5) == 1_700_000_000_500_000
    assert next_seq(1_700_000_000_500_000, 1_700_000_000.5) == 1_700_000_000_500_001  # same clock: still grows
    assert next_seq(1_800_000_000_000_000, 1_700_000_000.0) == 1_800_000_000_000_001  # clock stepped back


def _deep(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    for _ in range(depth):
        schema = {"a": schema}
    return schema


def _set(path: str, value: Any) -> dict[str, Any]:
    """A good body with the field at ``path`` (dots; numbers index lists) replaced; ``...`` deletes it."""
    body = copy.deepcopy(good_body())
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return body


BAD_FIELDS = [
    # (what the peer sent, field named)
    ("peers not a list", _set("peers", "all of them"), "peers"),
    ("too many peers", _set("peers", [[NODE, []]] * 33), "peers"),
    ("a peer not a pair", _set("peers.0", [NODE]), "peers[0]"),
    ("a peer's id not base58", _set("peers.0", ["12D3Koo0OIl", []]), "peers[0][0]"),
    ("a peer's address not a multiaddr", _set("peers.0", [NODE, ["10.0.0.3:4701"]]), "peers[0][1]"),
    ("a peer with too many addresses", _set("peers.0", [NODE, ["/ip4/10.0.0.3/tcp/1"] * 5]), "peers[0][1]"),
    ("node_id missing", _set("node_id", ...), "node_id"),
    ("node_id not base58", _set("node_id", "12D3Koo0OIl"), "node_id"),
    ("node_id too long", _set("node_id", "1" * 129), "node_id"),
    ("site not text", _set("site", 7), "site"),
    ("site too long", _set("site", "s" * 65), "site"),
    ("version too long", _set("version", "1" * 33), "version"),
    ("seq not an int", _set("seq", "1"), "seq"),
    ("seq a bool", _set("seq", True), "seq"),
    ("seq negative", _set("seq", -1), "seq"),
    ("load negative", _set("load", -0.1), "load"),
    ("load not finite", _set("load", math.nan), "load"),
    ("load infinite", _set("load", math.inf), "load"),
    ("load too big", _set("load", 1e7), "load"),
    ("free_slots a float", _set("free_slots", 1.5), "free_slots"),
    ("free_slots too many", _set("free_slots", 1_000_001), "free_slots"),
    ("addrs not a list", _set("addrs", "/ip4/1.2.3.4/tcp/1"), "addrs"),
    ("addrs too many", _set("addrs", ["/ip4/1.2.3.4/tcp/1"] * 17), "addrs"),
    ("addr too long", _set("addrs", ["/" + "a" * 256]), "addrs[0]"),
    ("addr not a multiaddr", _set("addrs", ["1.2.3.4:5"]), "addrs[0]"),
    ("capabilities not a list", _set("capabilities", {}), "capabilities"),
    ("capabilities too many", _set("capabilities", [{}] * 513), "capabilities"),
    ("capability not a map", _set("capabilities", ["echo"]), "capabilities[0]"),
    ("action bad name", _set("capabilities.0.action", "Audio VAD"), "capabilities[0].action"),
    ("action too long", _set("capabilities.0.action", "a" * 129), "capabilities[0].action"),
    ("action missing", _set("capabilities.1.action", ...), "capabilities[1].action"),
    ("action twice", _set("capabilities.1.action", "audio.vad"), "capabilities[1].action"),
    ("streaming not bool", _set("capabilities.0.streaming", 1), "capabilities[0].streaming"),
    ("description too long", _set("capabilities.0.description", "d" * 4097), "capabilities[0].description"),
    ("input_schema not a map", _set("capabilities.0.input_schema", []), "capabilities[0].input_schema"),
    ("input_schema too big", _set("capabilities.0.input_schema", {"d": "x" * MAX_SCHEMA_BYTES}),
     "capabilities[0].input_schema"),
    ("input_schema too deep", _set("capabilities.0.input_schema", _deep(65)), "capabilities[0].input_schema"),
    ("input_schema not JSON", _set("capabilities.0.input_schema", {"d": b"\x00"}), "capabilities[0].input_schema"),
    ("input_schema NaN", _set("capabilities.0.input_schema", {"maximum": math.nan}),
     "capabilities[0].input_schema"),
    ("input_schema bytes key", _set("capabilities.0.input_schema", {b"k": 1}), "capabilities[0].input_schema"),
    ("output_schema not a map", _set("capabilities.0.output_schema", "x"), "capabilities[0].output_schema"),
    ("schema_hash malformed", _set("capabilities.0.schema_hash", "XYZ"), "capabilities[0].schema_hash"),
    ("schema_hash lies", _set("capabilities.0.schema_hash", "0" * 16), "capabilities[0].schema_hash"),
]


@pytest.mark.parametrize(("sent", "field"), [(b, f) for _, b, f in BAD_FIELDS], ids=[c for c, _, _ in BAD_FIELDS])
def test_a_bad_field_from_a_peer_is_refused_and_named(sent: dict[str, Any], field: str) -> None:
    with pytest.raises(AdvertError) as caught:
        Advert.from_body(sent)
    assert caught.value.field == field
    assert repr(field) in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("sent", [None, [], "advert", b"\x80"])
def test_a_body_that_is_not_a_map_is_refused(sent: object) -> None:
    with pytest.raises(AdvertError, match="must be a map"):
        Advert.from_body(sent)


def test_the_bounds_themselves_are_accepted() -> None:
    body = _set("site", "s" * 64)
    body.update(version="v" * 32, load=1e6, free_slots=1_000_000, seq=(1 << 63) - 1,
                addrs=["/" + "a" * 255] * 16)
    body["capabilities"][0]["input_schema"] = _deep(63)
    body["capabilities"][0]["schema_hash"] = schema_hash(_deep(63), body["capabilities"][0]["output_schema"])
    advert = Advert.from_body(body)
    assert advert.load == 1e6 and len(advert.addrs) == 16


def test_unknown_keys_from_a_newer_hub_are_ignored() -> None:
    body = good_body()
    body["gpu"] = {"name": "H200"}
    assert Advert.from_body(body).site == "lyon"
