"""Type=notify: the hub tells systemd READY=1 once it serves and STOPPING=1 when it drains."""

from __future__ import annotations

import socket

from tests.support.hubproc import HubProcess, write_config


def test_the_hub_notifies_ready_then_stopping(tmp_path, monkeypatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml", modules=("echo",))).start()
        try:
            assert listener.recv(4096) == b"READY=1"
        finally:
            assert hub.stop() == 0
        assert listener.recv(4096) == b"STOPPING=1"


def test_without_notify_socket_nothing_is_sent(monkeypatch) -> None:
    from daemon.runtime import systemd

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
