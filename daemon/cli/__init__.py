"""The ``democratic-ai`` command line (console script ``daemon.cli.main:main``; ``python -m daemon.cli``).

- main.py — ``build_parser()``, ``main()``; the ``serve`` and ``peers`` commands.
- tenants.py, users.py, keys.py — ``tenant``, ``user``, ``key``: tenancy admin on the state dir.
- tenancy.py — what those three share: the state dir's TenancyStore for one command, the audit.
- billing.py — ``usage``, ``invoice``, ``credits``: from the ledger file, beside a running hub.
- ledger.py — ``ledger verify``: the usage ledger's hash chain, end to end.
- doctor.py — ``doctor``: gathers what each check needs from the machine and prints the findings.
- checks.py — doctor's checks as plain functions: paths and values in, ``Finding`` records out.
- backup.py — ``backup`` (online, SQLite's backup API, sha256 manifest) and ``restore`` (empty dir only).
- call.py — ``call``, ``capabilities``: a client of a running hub (clients/ for HTTP/3 and gRPC).
- parsing.py — what each group's ``register()`` uses: ``--state-dir``, ``add_command()``.
- errors.py — ``guarded()``: every failure is ``democratic-ai: <message>`` on stderr, exit 2 for
  bad input, 1 for work that could not be done.
- output.py — JSON and tables on stdout, notes for the person on stderr.
- __main__.py — ``python -m daemon.cli``.
"""
