"""The one internal envelope every door decodes into (mirrors proto/mcp_v2.proto)."""

from __future__ import annotations

import contextvars
import enum
import hashlib
import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from daemon.core.fastinit import fast_init

# Ids reach callers (trace ids, envelope and event ids), so they must not be predictable:
# not the stdlib's MT19937, whose state an observer recovers from 624 outputs.  Nor
# os.urandom per id: getrandom() releases the GIL, and with inference and ledger threads
# busy the loop thread then waits a switch interval (5 ms) to get it back, per id (measured
# with three busy threads: ~400 ids/s from secrets.token_hex, ~300,000/s from this).  So a
# per-process CSPRNG: keyed BLAKE2b over a counter (a PRF in counter mode), keyed from
# os.urandom once and again in a forked child, so parent and child never share a stream.
# BLAKE2b of 8 bytes keeps the GIL, and ``next`` on itertools.count is atomic under it.


class _IdStream:
    """128-bit values no caller can predict: BLAKE2b(key, block) of 512 bits gives four, the key from os.urandom.

    Value ``n`` is the ``n % 4``-th quarter of block ``n // 4``: one hash per four ids.  Each
    quarter of a PRF's output is as unpredictable as the whole, so knowing some ids of a block
    (a trace id a caller saw) tells nothing of the others.  The last block's digest is kept as
    one (block, hex) tuple, swapped whole: two threads that race for a block each hash it (the
    same text), and ``n`` comes from ``itertools.count``, so no two calls get the same quarter.
    """

    __slots__ = ("_block", "_counter", "_keyed")

    def __init__(self) -> None:
        self.rekey()

    def rekey(self) -> None:
        """A fresh key and counter (at import, and in a child after fork)."""
        self._keyed = hashlib.blake2b(key=os.urandom(32), digest_size=64)
        self._counter = itertools.count()
        self._block: tuple[int, str] = (-1, "")

    def next_hex(self) -> str:
        """The next value of the stream as 32 hex digits."""
        block, quarter = divmod(next(self._counter), 4)
        cached = self._block
        if cached[0] != block:
            h = self._keyed.copy()
            h.update(block.to_bytes(8, "little"))
            cached = self._block = (block, h.hexdigest())
        start = quarter * 32
        return cached[1][start:start + 32]


_ids = _IdStream()
os.register_at_fork(after_in_child=_ids.rekey)

#: the trace id of the call being served in this task (a ContextVar: per task, not global state)
trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")


#: the UUID variant's hex digit (10xx) for each hex digit of the stream: its two low bits kept
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_uuid() -> str:
    """A random (version 4) UUID as text, from the per-process CSPRNG stream.

    The version and variant digits are set on the hex text (one slice each), not on a 128-bit
    int: the same 122 random bits in the same places, ~0.5 µs less per id.
    """
    h = _ids.next_hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def new_trace_id() -> str:
    """32 hex digits, as W3C trace context has them, from the per-process CSPRNG stream."""
    return _ids.next_hex()


class MessageType(enum.Enum):
    """The envelope ``type`` of proto/mcp_v2.proto; the value is the wire spelling."""

    REQUEST = "request"
    RESPONSE = "response"
    EVENT = "event"
    ERROR = "error"
    STREAM_PART = "stream_part"
    STREAM_END = "stream_end"


@fast_init
@dataclass(frozen=True, slots=True)
class Credentials:
    """What a caller presented; exactly what the door read off the wire."""

    api_key: str | None = None
    bearer: str | None = None

    @classmethod
    def from_headers(cls, api_key: str | None, authorization: str | None) -> Credentials:
        """From ``X-API-Key`` and ``Authorization: Bearer <token>`` (HTTP headers, gRPC metadata)."""
        auth = authorization or ""
        bearer = auth[7:].strip() or None if auth[:7].lower() == "bearer " else None
        return cls(api_key=api_key or None, bearer=bearer)

    @property
    def present(self) -> bool:
        """True when the caller sent an API key or a bearer token (either may still be invalid)."""
        return bool(self.api_key or self.bearer)


@fast_init
@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: who, for which tenant, allowed to do what."""

    tenant_id: str
    tenant_name: str
    plan: str
    role: str
    permissions: frozenset[str]
    subject: str  # "user:<id>" or "key:<prefix>", the audit and usage identity
    user_id: str | None = None
    key_id: str | None = None
    rate_limit: str | None = None  # the key's own limit, e.g. "100/min"
    auth: str = "api_key"  # "api_key" | "jwt"


@fast_init
@dataclass(frozen=True, slots=True)
class CallRequest:
    """A call as a door decoded it, before authentication."""

    action: str
    payload: Any = None
    target: str = ""
    type: MessageType = MessageType.REQUEST
    priority: int = 5
    ttl: float | None = None  # seconds, from the body or the caller's deadline
    correlation_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    door: str = "http"
    trace_id: str = ""
    bytes_in: int = 0
    # federation: set only on a call a fleet peer forwarded here
    origin_node: str = ""
    hop_count: int = 0
    visited: tuple[str, ...] = ()
    #: the origin node's signed on-behalf-of assertion, passed on unchanged when the call hops again
    assertion: bytes = b""


@fast_init
@dataclass(frozen=True, slots=True)
class Envelope:
    """An authenticated, validated call travelling through the pipeline."""

    id: str
    type: MessageType
    action: str
    payload: Any
    principal: Principal
    target: str
    priority: int
    ttl: float | None
    deadline: float | None  # loop time after which the call must not start or finish
    timestamp: float  # wall clock, seconds since the epoch
    correlation_id: str
    headers: dict[str, str]
    door: str
    trace_id: str
    bytes_in: int
    source: str = ""
    origin_node: str = ""
    hop_count: int = 0
    visited: tuple[str, ...] = ()
    assertion: bytes = b""

    @staticmethod
    def new_id() -> str:
        """A fresh envelope id: a random version-4 UUID, no syscall on the loop thread."""
        return new_uuid()


@fast_init
@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof that the call's usage is durable in the ledger."""

    seq: int
    hash: str
    #: a forwarded call: the serving peer's node id and its own receipt, inside the origin's
    peer: PeerReceipt | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``receipt`` object of a reply: ``{"seq", "hash"}`` (+ ``"peer"`` for a forwarded call)."""
        if self.peer is None:
            return {"seq": self.seq, "hash": self.hash}
        return {"seq": self.seq, "hash": self.hash, "peer": self.peer.to_dict()}


@dataclass(frozen=True, slots=True)
class PeerReceipt:
    """The receipt a serving peer gave for a call this hub forwarded: its node id and its ledger entry."""

    node: str
    seq: int
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """``{"node", "seq", "hash"}``."""
        return {"node": self.node, "seq": self.seq, "hash": self.hash}


@fast_init
@dataclass(frozen=True, slots=True)
class CallResult:
    """The final answer of a call, as every door reports it."""

    id: str
    correlation_id: str
    module: str
    result: Any
    receipt: Receipt | None
    usage: dict[str, float] = field(default_factory=dict)
    #: the result already serialized as JSON (doors splice it in instead of encoding twice)
    result_json: bytes = b"null"
    #: headers a door should add to the reply (RateLimit-* and the like)
    headers: dict[str, str] = field(default_factory=dict)
    #: the node id of the peer that served a forwarded call; "" when this hub served it
    served_by: str = ""
    #: how long the module ran (a forwarded call: as the serving hub measured it), billed as compute time
    compute_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The reply body: ids, module, result and receipt (+ ``served_by``; ``usage`` and ``headers`` stay out)."""
        body = {
            "id": self.id,
            "correlation_id": self.correlation_id,
            "module": self.module,
            "result": self.result,
            "receipt": self.receipt.to_dict() if self.receipt else None,
        }
        if self.served_by:
            body["served_by"] = self.served_by
        return body


@dataclass(frozen=True, slots=True)
class Forwarded:
    """What a peer answered for a forwarded call, before the origin records it in its own ledger."""

    served_by: str  # the serving peer's node id
    module: str  # the module that ran it there
    result: Any
    result_json: bytes
    usage: dict[str, float]
    compute_ms: float
    receipt: PeerReceipt


@fast_init
@dataclass(frozen=True, slots=True)
class ProgressPart:
    """A streamed progress part; the stream ends with a CallResult."""

    id: str
    progress: float
    message: str = ""
    data: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The stream part sent on the wire: ``type`` "progress", ``is_complete`` always False; ``data`` only if set."""
        part: dict[str, Any] = {
            "type": "progress",
            "id": self.id,
            "progress": self.progress,
            "is_complete": False,
            "message": self.message,
        }
        if self.data is not None:
            part["data"] = self.data
        return part


@dataclass(frozen=True, slots=True)
class ServingModule:
    """One module that serves a capability, as /v1/capabilities shows it."""

    id: str
    kind: str  # "local" | "remote"
    facts: dict[str, Any] = field(default_factory=dict)  # the module's describe(): provider, owner, ...

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"id", "kind", **facts}``."""
        return {"id": self.id, "kind": self.kind, **self.facts}


@dataclass(frozen=True, slots=True)
class CapabilityEntry:
    """One action this hub serves, with every module that serves it (federation adverts carry these).

    ``origin`` is "local" when only in-process modules serve it, "remote" when an attached module does,
    and "peer:<node id>" for a capability only a federated peer serves (``modules`` then names the peers).
    """

    action: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    streaming: bool
    modules: tuple[ServingModule, ...]
    origin: str = "local"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of /v1/capabilities."""
        return {
            "action": self.action,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "streaming": self.streaming,
            "modules": [m.to_dict() for m in self.modules],
            "origin": self.origin,
        }
