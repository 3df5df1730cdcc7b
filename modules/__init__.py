"""Module SDK, the ONNX runtime helper and the built-in modules."""
