"""Metering: what a call may cost before it runs, and the durable record of what it cost.

ratelimit.py — the four limiters (SlidingWindow, TokenBucket, LeakyBucket, FixedWindow),
    sans-IO: every call takes ``now``.
gate.py — UsageGate: admission (the key's and the plan's rate limits, prepaid credits
    reserved) before a call; ``record`` writes its usage and debit to the ledger after it.
billing.py — plans as data: Invoice/InvoiceLine from a period's UsageTotals, UsageReporter
    (``GET /v1/usage``), ``export_usage`` for ``tenant export``.
served.py — ServedForPeers: the gate of calls fleet peers forward here (bounded per origin node,
    recorded as kind ``served``, no credits: the origin bills its caller).
central.py — CentralLedger: the central billing node's ``central.db`` (every site's rows by
    (site node id, seq), chain-checked, idempotent ingest), totals, settlement.
site_rows.py — a site's rows as the centre receives them: exact types, bounds, consecutive seqs.
cloudevents.py — the ledger as CloudEvents 1.0 (JSON batch), for ``usage export``.
plans.py — ``plans.json`` in the state dir: the plans the hub serves with, for admin commands.
ledger/ — the append-only, hash-chained usage ledger (see ledger/__init__.py).
"""
