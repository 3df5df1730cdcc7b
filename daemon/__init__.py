"""democratic-ai: the edge AI hub daemon. Read docs/architecture.md first.

Packages, lowest first (each imports only the ones before it; ``make lint`` checks):

- ``core/``      the envelope, the error table, the pipeline, its ports, the router and scheduler
- ``hosting/``   local (in-process) and remote (attached) modules behind one handle
- ``tenancy/``   tenants, users, API keys, JWTs, RBAC: who is calling and what they may do
- ``metering/``  rate limits, credits, the usage ledger and invoices
- ``api/``       HTTP semantics without a transport: call, admin and MCP routes
- ``doors/``     sockets only: aiohttp (HTTP/1.1, WebSocket), aioquic (HTTP/3), grpc.aio
- ``runtime/``   settings, metrics, logs, TLS, and the hub's assembly and lifecycle
- ``cli/``       the ``democratic-ai`` command
"""

__version__ = "0.1.0"
