"""Generate proto/mcp_v2_pb2*.py from proto/mcp_v2.proto with grpcio-tools.

``python -m proto.generate`` writes beside the .proto; ``generate(out_dir)`` writes
elsewhere, which the staleness test uses to compare against the committed files.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO_FILE = PROTO_DIR / "mcp_v2.proto"
GENERATED = ("mcp_v2_pb2.py", "mcp_v2_pb2.pyi", "mcp_v2_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_FILE),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    grpc_file = out_dir / "mcp_v2_pb2_grpc.py"
    # protoc writes a top-level import; the generated modules live in the `proto` package
    text = re.sub(r"^import mcp_v2_pb2 as", "from proto import mcp_v2_pb2 as", grpc_file.read_text(), flags=re.M)
    grpc_file.write_text(text)
    return [out_dir / name for name in GENERATED]


if __name__ == "__main__":
    for path in generate(PROTO_DIR if len(sys.argv) < 2 else Path(sys.argv[1])):
        print(path)
