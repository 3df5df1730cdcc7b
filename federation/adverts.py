"""Adverts: what a hub tells its fleet peers it serves, and the bounds on reading one.

An advert is the body of a sealed ``advert`` frame (``federation/wire.py``): the sender's node id,
site, a sequence number, its version, how busy it is and the capabilities it serves *itself*.
``capabilities_of`` builds that list from the hub's capability entries and leaves out every entry a
peer serves (origin ``"peer:<node id>"``), so a hub never re-advertises what it learned from the
fleet: routes do not loop and a dead peer's capabilities die with its own adverts.

Everything in an advert came from the network, so ``Advert.from_body`` checks every field's type
and bounds and raises ``AdvertError`` naming the field; it never trusts a count, a size or a depth.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from daemon.core.envelope import CapabilityEntry
from daemon.core.errors import ValidationError
from daemon.core.router import check_action

MAX_CAPABILITIES = 512
MAX_SCHEMA_BYTES = 64 << 10  # each schema, as canonical JSON
MAX_SCHEMA_DEPTH = 64  # nesting of objects and arrays in a schema
MAX_DESCRIPTION = 4096
MAX_ADDRS = 16
#: fleet peers one advert may name, and addresses per peer
MAX_PEER_HINTS = 32
MAX_PEER_ADDRS = 4
MAX_ADDR = 256
MAX_SITE = 64
MAX_VERSION = 32
MAX_NODE_ID = 128
MAX_LOAD = 1e6
MAX_FREE_SLOTS = 1_000_000
MAX_SEQ = (1 << 63) - 1  # msgpack's signed 64-bit range

_NODE_ID = re.compile(r"[1-9A-HJ-NP-Za-km-z]+")  # base58btc, as libp2p peer ids are written
_HASH = re.compile(r"[0-9a-f]{16}")


class AdvertError(ValueError):
    """An advert body that breaks a type or a bound; ``field`` names the part at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"advert field {field!r} {problem}")
        self.field = field


@dataclass(frozen=True, slots=True)
class AdvertisedCapability:
    """One action a hub serves itself, as its adverts carry it."""

    action: str
    streaming: bool
    schema_hash: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None

    def to_body(self) -> dict[str, Any]:
        """The msgpack-ready map of this capability."""
        return {
            "action": self.action,
            "streaming": self.streaming,
            "schema_hash": self.schema_hash,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
        }

    @classmethod
    def from_body(cls, body: object, where: str = "capabilities[0]") -> AdvertisedCapability:
        """A capability from a peer's advert; AdvertError names ``where`` and the field at fault."""
        if not isinstance(body, dict):
            raise AdvertError(where, "must be a map")
        try:
            action = check_action(body.get("action"), f"{where}.action")
        except ValidationError as exc:
            raise AdvertError(f"{where}.action", f"is not a valid action name ({exc.message})") from None
        streaming = body.get("streaming")
        if not isinstance(streaming, bool):
            raise AdvertError(f"{where}.streaming", "must be a boolean")
        description = _text(body.get("description"), f"{where}.description", MAX_DESCRIPTION)
        input_schema = body.get("input_schema")
        if not isinstance(input_schema, dict):
            raise AdvertError(f"{where}.input_schema", "must be a map")
        _check_schema(input_schema, f"{where}.input_schema")
        output_schema = body.get("output_schema")
        if output_schema is not None:
            if not isinstance(output_schema, dict):
                raise AdvertError(f"{where}.output_schema", "must be a map or null")
            _check_schema(output_schema, f"{where}.output_schema")
        digest = body.get("schema_hash")
        if not isinstance(digest, str) or not _HASH.fullmatch(digest):
            raise AdvertError(f"{where}.schema_hash", "must be 16 lowercase hex digits")
        # the hash is how hubs compare schemas across the fleet: one that lies about its schemas is refused
        if digest != schema_hash(input_schema, output_schema):
            raise AdvertError(f"{where}.schema_hash", "does not match the schemas")
        return cls(action, streaming, digest, description, input_schema, output_schema)


@dataclass(frozen=True, slots=True)
class Advert:
    """A hub's signed statement of what it serves and how busy it is.

    ``seq`` grows with every advert a sender makes (``next_seq``: it starts at the wall clock in
    microseconds, so a restarted hub still outnumbers its old adverts); a receiver ignores any advert
    whose seq is not above the one it holds.  ``load`` is calls in flight over slots (0 idle, 1 full).
    """

    node_id: str
    site: str
    seq: int
    version: str
    load: float
    free_slots: int
    capabilities: tuple[AdvertisedCapability, ...]
    addrs: tuple[str, ...] = ()
    #: the fleet peers the sender is linked to, as (node id, addresses): how a hub that bootstrapped
    #: from one peer finds the rest of the fleet (a hint to dial; each still proves itself on its link)
    peers: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_body(self) -> dict[str, Any]:
        """The msgpack-ready map sealed into an ``advert`` frame."""
        return {
            "node_id": self.node_id,
            "site": self.site,
            "seq": self.seq,
            "version": self.version,
            "load": self.load,
            "free_slots": self.free_slots,
            "capabilities": [c.to_body() for c in self.capabilities],
            "addrs": list(self.addrs),
            "peers": [[node_id, list(addrs)] for node_id, addrs in self.peers],
        }

    @classmethod
    def from_body(cls, body: object) -> Advert:
        """An advert from a peer, every field checked; AdvertError names the first field at fault.

        Keys this version does not know are ignored, so a newer hub may add fields.
        """
        if not isinstance(body, dict):
            raise AdvertError("advert", "must be a map")
        node_id = _text(body.get("node_id"), "node_id", MAX_NODE_ID)
        if not _NODE_ID.fullmatch(node_id):
            raise AdvertError("node_id", "must be a base58 peer id")
        site = _text(body.get("site"), "site", MAX_SITE)
        seq = body.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            raise AdvertError("seq", "must be an integer in 0..2**63-1")
        version = _text(body.get("version"), "version", MAX_VERSION)
        load = body.get("load")
        if not isinstance(load, int | float) or isinstance(load, bool) or not math.isfinite(load) \
                or not 0 <= load <= MAX_LOAD:
            raise AdvertError("load", f"must be a finite number in 0..{MAX_LOAD:g}")
        free_slots = body.get("free_slots")
        if not isinstance(free_slots, int) or isinstance(free_slots, bool) or not 0 <= free_slots <= MAX_FREE_SLOTS:
            raise AdvertError("free_slots", f"must be an integer in 0..{MAX_FREE_SLOTS}")
        addrs = body.get("addrs", [])
        if not isinstance(addrs, list | tuple) or len(addrs) > MAX_ADDRS:
            raise AdvertError("addrs", f"must be a list of at most {MAX_ADDRS} addresses")
        for i, addr in enumerate(addrs):
            if not isinstance(addr, str) or not 0 < len(addr) <= MAX_ADDR or not addr.startswith("/"):
                raise AdvertError(f"addrs[{i}]", f"must be a multiaddr of 1-{MAX_ADDR} characters")
        peers = _peers(body.get("peers", []))
        raw = body.get("capabilities")
        if not isinstance(raw, list | tuple) or len(raw) > MAX_CAPABILITIES:
            raise AdvertError("capabilities", f"must be a list of at most {MAX_CAPABILITIES} capabilities")
        capabilities = []
        actions: set[str] = set()
        for i, item in enumerate(raw):
            capability = AdvertisedCapability.from_body(item, f"capabilities[{i}]")
            if capability.action in actions:
                raise AdvertError(f"capabilities[{i}].action", "is advertised twice")
            actions.add(capability.action)
            capabilities.append(capability)
        return cls(node_id, site, seq, version, float(load), free_slots, tuple(capabilities), tuple(addrs), peers)

    def actions(self) -> frozenset[str]:
        """The action names this advert carries."""
        return frozenset(c.action for c in self.capabilities)


def _peers(raw: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The ``peers`` field: at most MAX_PEER_HINTS entries of [node id, [at most 4 multiaddrs]]."""
    if not isinstance(raw, list | tuple) or len(raw) > MAX_PEER_HINTS:
        raise AdvertError("peers", f"must be a list of at most {MAX_PEER_HINTS} peers")
    peers = []
    for i, item in enumerate(raw):
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise AdvertError(f"peers[{i}]", "must be [node id, addresses]")
        node_id, addrs = item
        if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id) or len(node_id) > MAX_NODE_ID:
            raise AdvertError(f"peers[{i}][0]", "must be a base58 peer id")
        if not isinstance(addrs, list | tuple) or len(addrs) > MAX_PEER_ADDRS or not all(
                isinstance(a, str) and 0 < len(a) <= MAX_ADDR and a.startswith("/") for a in addrs):
            raise AdvertError(f"peers[{i}][1]", f"must be at most {MAX_PEER_ADDRS} multiaddrs")
        peers.append((node_id, tuple(addrs)))
    return tuple(peers)


def next_seq(previous: int, wall_now: float) -> int:
    """The seq of this hub's next advert: the wall clock in microseconds, and always above ``previous``."""
    return max(previous + 1, int(wall_now * 1_000_000))


def canonical_json(value: object) -> bytes:
    """``value`` as canonical JSON (sorted keys, no spaces, UTF-8); ValueError/TypeError if it is not JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def schema_hash(input_schema: dict[str, Any], output_schema: dict[str, Any] | None) -> str:
    """16 hex digits of the SHA-256 of the two schemas' canonical JSON: equal schemas, equal hash."""
    data = canonical_json({"input": input_schema, "output": output_schema})
    return hashlib.sha256(data).hexdigest()[:16]


def capabilities_of(entries: Iterable[CapabilityEntry]) -> tuple[AdvertisedCapability, ...]:
    """What this hub serves itself, as an advert carries it, sorted by action.

    Only entries whose origin is "local" or "remote": one a peer serves ("peer:<node id>") is never
    advertised again (no advert loops).  An entry no peer would accept (a name that breaks the action
    rules, a schema over the bounds) is left out rather than spoiling the whole advert; a description
    over the bound is cut.  At most ``MAX_CAPABILITIES``, the first by action name.
    """
    chosen: dict[str, AdvertisedCapability] = {}
    for entry in entries:
        if entry.origin not in ("local", "remote") or entry.action in chosen:
            continue
        output_schema = entry.output_schema or None
        try:
            check_action(entry.action)
            _check_schema(entry.input_schema, "input_schema")
            if output_schema is not None:
                _check_schema(output_schema, "output_schema")
        except (ValidationError, AdvertError):
            continue
        chosen[entry.action] = AdvertisedCapability(
            action=entry.action,
            streaming=entry.streaming,
            schema_hash=schema_hash(entry.input_schema, output_schema),
            description=entry.description[:MAX_DESCRIPTION],
            input_schema=entry.input_schema,
            output_schema=output_schema,
        )
    return tuple(chosen[action] for action in sorted(chosen)[:MAX_CAPABILITIES])


def _text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise AdvertError(field, "must be text")
    if len(value) > limit:
        raise AdvertError(field, f"is longer than {limit} characters")
    return value


def _check_schema(schema: dict[str, Any], field: str) -> None:
    """A schema must be plain JSON (text keys), at most MAX_SCHEMA_DEPTH deep and MAX_SCHEMA_BYTES encoded.

    The walk is iterative and checks depth before anything recursive (json.dumps) sees the value; it
    stops after MAX_SCHEMA_BYTES values, as each value takes at least a byte of JSON.
    """
    stack: list[tuple[object, int]] = [(schema, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_SCHEMA_BYTES:
            raise AdvertError(field, f"is over {MAX_SCHEMA_BYTES} bytes as JSON")
        if isinstance(value, dict):
            if depth > MAX_SCHEMA_DEPTH:
                raise AdvertError(field, f"is nested deeper than {MAX_SCHEMA_DEPTH} levels")
            for key, item in value.items():
                if not isinstance(key, str):
                    raise AdvertError(field, "has a key that is not text")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_SCHEMA_DEPTH:
                raise AdvertError(field, f"is nested deeper than {MAX_SCHEMA_DEPTH} levels")
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise AdvertError(field, "holds a number that is not finite")
        elif not isinstance(value, str | int | bool) and value is not None:
            raise AdvertError(field, f"holds a {type(value).__name__}, which is not JSON")
    try:
        size = len(canonical_json(schema))
    except (ValueError, TypeError):  # a lone surrogate in a string cannot be UTF-8
        raise AdvertError(field, "is not valid JSON text") from None
    if size > MAX_SCHEMA_BYTES:
        raise AdvertError(field, f"is over {MAX_SCHEMA_BYTES} bytes as JSON")
