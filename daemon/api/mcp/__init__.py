"""The Model Context Protocol endpoint (``/mcp``, Streamable HTTP), split by job.

- ``endpoint.py`` — ``McpEndpoint``: the routes (POST / GET / DELETE /mcp, the RFC 9728
  resource metadata) mounted on ``HttpApi``, admission, dispatch of the methods
- ``jsonrpc.py``  — JSON-RPC 2.0 framing: ``RpcError`` and its codes, the decoded ``Rpc``,
  request decoding, answers, SSE event encoding
- ``versions.py`` — the protocol revisions (modern 2026-07-28 vs handshake 2025-*), version
  negotiation, the modern header/``_meta`` ladder, header and ``_meta`` key names
- ``sessions.py`` — ``Session`` and ``SessionTable``: the handshake era's sessions, on an
  injected clock (idle expiry and the cap evict least recently used first)
- ``tools.py``    — capabilities as tools: ``tools/list`` entries, ``tools/call`` params ->
  ``CallRequest``, results and HubErrors back as tool results, the progress SSE stream
- ``security.py`` — transport security: the browser ``Origin`` check, the Host-based base URL,
  ``=?base64?…?=`` header values
"""
