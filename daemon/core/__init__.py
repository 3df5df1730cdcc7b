"""The pipeline and what it stands on; imports nothing else of the daemon.

- ``envelope.py``  — ``Envelope``, ``CallRequest``/``CallResult``, ``Credentials``, ``Principal``,
  ``Receipt``, ``CapabilityEntry``: the internal vocabulary every door decodes into
- ``errors.py``    — ``HubError`` and its leaves: the one table of codes, HTTP and gRPC statuses
- ``decoding.py``  — the one JSON decoder of every door: depth, lone surrogates, NaN refused as
  VALIDATION_ERROR with a pointer; large bodies off the loop
- ``ports.py``     — the Protocols the pipeline needs (``Authenticator``, ``UsageGate``,
  ``ModuleSet``/``ModuleHandle``, ``Forwarder``, ``CallObserver``), provided by the packages above
- ``pipeline.py``  — ``Pipeline``: authenticate, authorize, admit, route, schedule, execute, record
- ``router.py``    — ``Router``: action -> module (sans-IO: least loaded, round robin on ties)
- ``scheduler.py`` — ``ModuleScheduler``: per-module slots and a priority queue with deadlines
"""
