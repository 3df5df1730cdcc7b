"""A batch of ledger rows as it travels from a site to the central node, and the checks that open one.

A batch is a sealed message (``federation/sealing.py``) of kind ``usage`` whose body is::

    {"v": 1, "site": the site's node id, "cert": its node certificate (bytes) or None,
     "first": first seq, "last": last seq, "rows": [[18 columns in ledger order], ...]}

The node key seals it, so the centre knows which site sent it and that nothing was changed on the
way.  Each row carries its ``prev_hash`` and ``hash``, so the centre can also prove that the site's
chain continues from the last row it holds (that check is the centre ledger's, not this module's).
The certificate travels inside the batch, so a batch can be checked wherever it arrives: over a
fleet link or through the HTTPS fallback, which has no hello.

``open_batch`` refuses with the contract's errors: ``PermissionDenied`` when the seal or the
sender's trust does not hold (a forgery, another fleet, a replayed message), ``ValidationError``
when the body or a row is not of the expected shape.  Pure: no I/O, ``now`` is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemon.core.errors import PermissionDenied, ValidationError
from daemon.core.i18n import t
from federation.fleet import FleetTrust, NodeCertificate, PeerRefused
from federation.identity import IdentityError, NodeIdentity, peer_id_from_public_key
from federation.sealing import MAX_SEALED_BYTES, ReplayGuard, SealError, open_sealed, seal

#: the sealed kind of a batch: a signature over a batch can never pass for an advert or a call
BATCH_KIND = "usage"
BATCH_VERSION = 1
#: the most rows one batch may carry ([billing] batch_max is at most this)
MAX_BATCH_ROWS = 5000
#: a batch the outbox seals is at most this many bytes (it halves the rows until it fits), well under
#: what a link frame or the centre's ``open_sealed`` reads
MAX_BATCH_BYTES = 4 << 20
#: the longest text column a row may have (units, subject, trace id ...); the seal bounds the whole batch
MAX_TEXT = 64 << 10
_INT64 = 1 << 63

# The columns of ``events``, in table order, and the Python type of each as the ledger stores it.
# This MUST agree with ``LedgerRow`` in daemon/metering/ledger/rows.py (federation may not import
# daemon.metering; tests/unit/federation/test_sync_batch.py checks the two agree).
ROW_COLUMNS: tuple[tuple[str, type], ...] = (
    ("seq", int),
    ("event_id", str),
    ("kind", str),
    ("tenant_id", str),
    ("subject", str),
    ("plan", str),
    ("action", str),
    ("module", str),
    ("api_calls", int),
    ("compute_ms", float),
    ("bytes_in", int),
    ("bytes_out", int),
    ("units", str),
    ("credits", str),
    ("ts_us", int),
    ("trace_id", str),
    ("prev_hash", str),
    ("hash", str),
)
ROW_COLUMN_COUNT = len(ROW_COLUMNS)
#: positions of the columns the sync reads itself
SEQ_INDEX = 0
TS_US_INDEX = 14
_HASH_COLUMNS = frozenset(("prev_hash", "hash"))
_HEX = frozenset("0123456789abcdef")
_BODY_FIELDS = frozenset(("v", "site", "cert", "first", "last", "rows"))


@dataclass(frozen=True, slots=True)
class Batch:
    """An opened batch: the site that sealed it (its node id and certified site name) and its rows.

    ``site_name`` comes from the verified certificate, never from anything the sender merely
    claims; it is ``""`` for a node admitted by ``[fleet] trusted_keys`` alone.
    """

    site: str
    site_name: str
    rows: list[list[Any]]
    first: int = 0
    last: int = 0
    sent_at: float = 0.0


def check_rows(rows: Any) -> list[list[Any]]:
    """``rows`` as a list of rows in ledger column order, every column's type checked; ValidationError if not.

    Between 1 and ``MAX_BATCH_ROWS`` rows of ``ROW_COLUMN_COUNT`` columns each, with seqs that
    follow each other by one.  Whether the hashes chain is the centre ledger's check.
    """
    if not isinstance(rows, list | tuple):
        raise ValidationError(t("errors.batch.batch_rows_list"), {"field": "rows"})
    if not 0 < len(rows) <= MAX_BATCH_ROWS:
        raise ValidationError(t("errors.batch.batch_carries_rows_not", max_batch_rows=MAX_BATCH_ROWS, count=len(rows)),
                              {"field": "rows", "count": len(rows)})
    checked: list[list[Any]] = []
    previous: int | None = None
    for index, row in enumerate(rows):
        values = _check_row(index, row)
        seq = values[SEQ_INDEX]
        if previous is not None and seq != previous + 1:
            raise ValidationError(t("errors.batch.row_seq_after_seq", index=index, seq=seq, previous=previous),
                                  {"field": "rows", "row": index, "seq": seq})
        previous = seq
        checked.append(values)
    return checked


def _check_row(index: int, row: Any) -> list[Any]:
    if not isinstance(row, list | tuple) or len(row) != ROW_COLUMN_COUNT:
        raise ValidationError(t("errors.batch.row_not_list_columns", index=index, row_column_count=ROW_COLUMN_COUNT),
                              {"field": "rows", "row": index})
    for (name, kind), value in zip(ROW_COLUMNS, row, strict=True):
        if not _column_ok(name, kind, value):
            raise ValidationError(t("errors.batch.row_column_not_valid", index=index, name=name,
                                    type_name=kind.__name__),
                                  {"field": "rows", "row": index, "column": name})
    return list(row)


def _column_ok(name: str, kind: type, value: Any) -> bool:
    # exact types: a bool is not an int, and an int is not the float the ledger stored (it would hash otherwise)
    if type(value) is not kind:
        return False
    if isinstance(value, int):
        return (1 if name == "seq" else -_INT64) <= value < _INT64
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        if name in _HASH_COLUMNS:
            return len(value) == 64 and set(value) <= _HEX
        return len(value) <= MAX_TEXT
    return False


def seal_batch(identity: NodeIdentity, rows: Sequence[Sequence[Any]], now: float, *,
               cert: NodeCertificate | None = None) -> bytes:
    """``rows`` (ledger column order, consecutive seqs) sealed by ``identity`` at ``now``, with ``cert`` inside.

    Every call seals afresh (a new nonce), so a re-sent batch is never a replay; ValidationError if
    the rows are not a valid batch (the site never sends what the centre would refuse for shape).
    """
    checked = check_rows([list(row) for row in rows])
    body = {
        "v": BATCH_VERSION,
        "site": identity.peer_id,
        "cert": cert.to_bytes() if cert is not None else None,
        "first": checked[0][SEQ_INDEX],
        "last": checked[-1][SEQ_INDEX],
        "rows": checked,
    }
    return seal(identity, BATCH_KIND, body, now)


def open_batch(data: bytes, *, trust: FleetTrust, guard: ReplayGuard, now: float,
               expect_sender: bytes | None = None, cert: NodeCertificate | None = None,
               max_bytes: int = MAX_SEALED_BYTES) -> Batch:
    """Check and open a sealed batch received at ``now``.

    The seal must hold (signature, freshness; ``expect_sender``: the key the link authenticated),
    the sender must be admitted by ``trust`` with the certificate inside the batch (``cert``: the
    one to use when the batch carries none, such as the link's hello certificate), and the body
    and rows must be well formed.  Only a trusted sender's nonce is remembered by ``guard``, so a
    stranger's signed junk cannot fill it; a byte-identical replay is refused there.
    """
    try:
        # the seal's own checks, with a throwaway guard: the real one is asked once the sender is trusted
        opened = open_sealed(data, now=now, guard=ReplayGuard(), expect_sender=expect_sender, max_bytes=max_bytes)
    except SealError as exc:
        raise PermissionDenied(t("errors.batch.batch_seal_does_not", reason=exc.reason),
                               {"reason": exc.reason}) from None
    if opened.kind != BATCH_KIND:
        raise ValidationError(t("errors.batch.sealed_message_not_usage", kind=opened.kind), {"field": "kind"})
    body = opened.body
    if set(body) != _BODY_FIELDS or body["v"] != BATCH_VERSION:
        raise ValidationError(t("errors.batch.usage_batch_version_fields", batch_version=BATCH_VERSION,
                                fields=sorted(_BODY_FIELDS)),
                              {"field": "body"})
    site = peer_id_from_public_key(opened.sender)
    if body["site"] != site:
        raise PermissionDenied(t("errors.batch.batch_names_another_site"), {"reason": "wrong_site"})
    raw_cert = body["cert"]
    if raw_cert is not None:
        if not isinstance(raw_cert, bytes):
            raise ValidationError(t("errors.batch.batch_certificate_not_bytes"), {"field": "cert"})
        try:
            cert = NodeCertificate.from_bytes(raw_cert)
        except IdentityError as exc:
            raise PermissionDenied(t("errors.batch.batch_certificate_not_one", exc=exc),
                                   {"reason": "malformed"}) from None
    try:
        peer = trust.admit(site, cert, now)
    except PeerRefused as exc:
        raise PermissionDenied(t("errors.batch.site_not_trusted", reason=exc.reason), {"reason": exc.reason}) from None
    try:
        guard.check(opened.sender, opened.nonce, opened.sent_at, now)
    except SealError as exc:
        raise PermissionDenied(t("errors.batch.batch_seal_does_not", reason=exc.reason),
                               {"reason": exc.reason}) from None
    rows = check_rows(body["rows"])
    first, last = body["first"], body["last"]
    if type(first) is not int or type(last) is not int or first != rows[0][SEQ_INDEX] or last != rows[-1][SEQ_INDEX]:
        raise ValidationError(t("errors.batch.batch_first_last_seqs"), {"field": "first"})
    return Batch(site=site, site_name=peer.site, rows=rows, first=first, last=last, sent_at=opened.sent_at)
