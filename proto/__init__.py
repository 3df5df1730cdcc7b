"""mcp_v2.proto and the code grpcio-tools generates from it (``python -m proto.generate``)."""
