"""Start a real ``democratic-ai serve`` subprocess on loopback ports for a test."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class HubProcess:
    state_dir: Path
    config_path: Path
    process: subprocess.Popen[bytes] | None = None
    endpoints: dict[str, Any] = field(default_factory=dict)
    admin_key: str = ""
    log_path: Path | None = None
    #: a command the hub runs under (``[..., "--"]``): a sandbox, as its service manager would set one
    wrapper: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.endpoints["http"])

    def client_ssl(self) -> ssl.SSLContext:
        """A client context that trusts the hub's own self-signed certificate (endpoints.json's ``ca_file``)."""
        from daemon.runtime.tls import client_context

        ca_file = self.endpoints.get("ca_file")
        assert ca_file, f"the hub names no certificate of its own: {self.endpoints}"
        return client_context(Path(ca_file))

    def start(self, timeout: float = 30.0) -> HubProcess:
        endpoints_file = self.state_dir / "endpoints.json"
        endpoints_file.unlink(missing_ok=True)
        self.log_path = self.state_dir / "hub.log"
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "daemon.cli", "serve", "--config", str(self.config_path),
             "--state-dir", str(self.state_dir)],
            cwd=ROOT, stdout=log, stderr=log, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hub exited with {self.process.returncode}:\n{self.log()}")
            if endpoints_file.exists():
                try:
                    self.endpoints = json.loads(endpoints_file.read_text())
                    break
                except ValueError:
                    pass
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"hub did not become ready in {timeout}s:\n{self.log()}")
        key_file = self.state_dir / "bootstrap-admin.key"
        if key_file.exists():
            self.admin_key = key_file.read_text().strip()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def write_config(path: Path, extra: str = "", *, modules: tuple[str, ...] = ("echo", "text.summarize")) -> Path:
    """A config on port 0 everywhere (the hub reports its real ports in endpoints.json)."""
    enabled = ", ".join(json.dumps(m) for m in modules)
    path.write_text(
        "[http]\nlisten = \"127.0.0.1:0\"\n"
        "[http3]\nlisten = \"127.0.0.1:0\"\n"
        "[grpc]\nlisten = \"127.0.0.1:0\"\n"
        "[mdns]\nenabled = false\n"
        "[shutdown]\ngrace_s = 5\n"
        f"[modules]\nenabled = [{enabled}]\n" + extra
    )
    return path
