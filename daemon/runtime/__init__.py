"""The hub as a process: its settings, plumbing, assembly and lifecycle.

Leaves, readable from every package above ``core`` (they import nothing of the daemon but core):

- ``config.py``  — ``HubConfig`` and its sections, from TOML; unknown keys are refused by name
- ``files.py``   — ``atomic_write``: the one way secrets, keys and certificates reach the disk
- ``listen.py``  — listen addresses: loopback or beyond, and ``serves_tls`` (a TCP door beyond loopback speaks TLS)
- ``metrics.py`` — ``HubMetrics``: the hub's own Prometheus registry
- ``tls.py``     — ``ensure_pair``: the operator's certificate, or a self-signed leaf (a year, renewed at start)

The top, which imports everything:

- ``assembly.py`` — opens the stateful parts in order (tenancy, authenticator, ledger, usage gate)
- ``hub.py``      — ``Hub``: start order, READY, SIGHUP reload, SIGTERM drain, ordered shutdown
- ``systemd.py``  — sd_notify (systemd-python, or the NOTIFY_SOCKET datagram): READY, STATUS, RELOADING,
  STOPPING, and the ``Watchdog`` that pings from the event loop
- ``logs.py``     — JSON log lines carrying the trace id; journald's native fields under systemd
"""
