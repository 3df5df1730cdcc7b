"""The usage ledger: one SQLite file, append-only, hash-chained, durable before a receipt.

rows.py — LedgerRow (one ``events`` row, by column name) and LedgerHead (the ``head`` row).
events.py — UsageEvent, what a caller states, and its validation against the MAX_* caps.
chain.py — the schema, ``entry_hash``, ``chain_rows`` (events -> linked rows, sans-IO; ``Prepared``
    and ``chain_prepared``, the same for events already in stored form) and ``verify``, the
    end-to-end check of a file.
totals.py — UsageTotals/``read_totals`` and ``read_balance``: read-only queries any process may run.
reader.py — ``rows_after`` and ``ledger_head``: what a site's sync outbox and export read, read-only.
commit.py — Committer, the one write connection and its group commit, for the thread that owns it.
writer.py — UsageLedger, the group-commit writer thread in this process, and Ledger, the protocol
    the gate needs.
process.py — LedgerProcess: the same writer in a child process, spoken to over msgpack frames;
    it starts a new writer when one dies and replays what the dead one did not answer.
child.py — the child's side: the frames on the pipe, a reader thread and a Committer's thread.
"""
