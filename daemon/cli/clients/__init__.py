"""Clients of a running hub's other doors, for ``democratic-ai call --via``; imported only when asked for.

- h3.py — ``H3ClientProtocol``: HTTP/3 over aioquic's own connection and H3 layer; ``call_h3()``.
- grpc.py — ``call_grpc()`` and the conversions of gRPC answers and errors to the HTTP door's JSON.
"""
