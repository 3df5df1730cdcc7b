"""Usage sync: a site pushes its ledger to the fleet's central billing node, exactly once, through outages.

batch.py — a batch of ledger rows sealed with the site's node key (``seal_batch``) and the checks
    that open one at the centre (``open_batch``): the seal, the fleet certificate carried inside,
    and every row's shape; pure.
outbox.py — ``SyncOutbox``, the site's side: reads rows after the last acknowledged seq, seals,
    sends, and records the centre's acknowledgement (``<state dir>/sync/outbox.json``) only once
    the centre has made it; it never writes to the ledger.
receiver.py — ``SyncReceiver``, the centre's side: opens a batch, checks who sent it, hands the
    rows to the centre's ledger (``ingest``) and answers the seq acknowledged.
http.py — ``post_batch``: the HTTPS fallback, a sealed batch POSTed to ``{central_url}/v1/sync/batch``.

Nothing here touches SQLite or hashes rows: the ledger readers and the centre's ``ingest`` come in
as plain callables (``runtime/hub.py`` wires ``daemon.metering`` in), so federation keeps to
``daemon.core`` and runtime's leaves.
"""
