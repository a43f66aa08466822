"""systemd's notify protocol against sockets the test opens: a path socket and an abstract '@' socket.

The daemon-level sequence (READY, WATCHDOG only while processing, STOPPING) is in test_inspector_e2e.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from inspector.notify import Notifier


def listen_dgram(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(2)
    return s


def test_path_socket_gets_ready_watchdog_status_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    server = listen_dgram(path)
    n = Notifier(path, watchdog_usec="4000000")
    assert n.enabled and n.watchdog_interval_s == 2.0  # ping at half of WATCHDOG_USEC
    assert n.ready("inspecting /dev/video0")
    assert server.recv(4096) == b"READY=1\nSTATUS=inspecting /dev/video0"
    assert n.watchdog() and server.recv(4096) == b"WATCHDOG=1"
    assert n.status("camera reconnecting") and server.recv(4096) == b"STATUS=camera reconnecting"
    assert n.stopping() and server.recv(4096) == b"STOPPING=1"
    n.close()
    server.close()


def test_abstract_socket_named_with_at_sign() -> None:
    name = f"inspector-test-{os.getpid()}"
    server = listen_dgram("\0" + name)
    n = Notifier("@" + name, watchdog_usec="")
    assert n.watchdog_interval_s is None
    assert n.ready()
    assert server.recv(4096) == b"READY=1"
    n.close()
    server.close()


def test_without_notify_socket_everything_is_a_no_op(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    n = Notifier()
    assert not n.enabled and n.watchdog_interval_s is None
    assert n.ready() is False and n.stopping() is False


def test_a_vanished_socket_is_logged_not_fatal(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "gone.sock"))
    assert n.watchdog() is False
