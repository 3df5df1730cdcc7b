"""HTTP semantics without a transport: every door that speaks HTTP serves these.

- ``http_api.py``     — ``HttpApi``: ``ApiRequest`` -> ``ApiResponse`` for /v1/call, /v1/capabilities,
  /v1/usage, /health, /ready, /metrics; the route table the other route sets mount on
- ``admin.py``        — ``AdminApi``: tenants, users, API keys, tokens (RBAC-checked and audited)
- ``admin_routes.py`` — mounts ``AdminApi`` on ``HttpApi`` under /v1/tenants, /v1/auth, ...
- ``mcp/``            — the Model Context Protocol endpoint (/mcp), split by job
"""
