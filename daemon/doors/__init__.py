"""Doors: sockets only, each a thin adapter from a wire protocol into ``api`` and ``core``.

- ``http.py``    — ``HttpDoor`` (aiohttp): HTTP/1.1, client WebSockets (/v1/ws), module attachment
- ``http1.py``   — ``Http1Server``: the HTTP/1.1 fast path (httptools); unusual requests handed to aiohttp
- ``http1_wire.py`` — the fast path's wire rules: which requests it reads (``RequestReader``), answers' heads
- ``ws_clients.py`` — ``ClientSockets``: /v1/ws authentication (upgrade or first frame), in-flight cap, calls
- ``http3.py``   — ``Http3Door`` (aioquic): HTTP/3 over UDP, the same ``HttpApi``
- ``grpc.py``    — ``GrpcDoor`` (grpc.aio): the ``Hub`` service, health and reflection
- ``reflection.py`` — gRPC server reflection v1 beside v1alpha (grpcio-reflection ships only v1alpha)
- ``_compat.py`` — every reach into a library's private attributes, each guarded by a unit test
"""
