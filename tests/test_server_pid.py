"""avits.server._alive: pid <= 0 is never a live server (os.kill(0, 0) signals this process group)."""

from __future__ import annotations

import os
import subprocess
import sys

from avits import server


def test_pid_zero_and_negative_are_not_alive():
    os.kill(0, 0)  # what made pid 0 look alive: signal 0 to our own process group succeeds
    assert server._alive(0) is False
    assert server._alive(-1) is False
    assert server._alive(-os.getpgrp()) is False


def test_live_and_reaped_processes():
    assert server._alive(os.getpid()) is True
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert server._alive(p.pid) is False


def test_a_state_file_without_pid_is_not_a_running_server(monkeypatch):
    monkeypatch.setattr(server, "_read_state", lambda: {"api_url": "http://127.0.0.1:9/api"})
    monkeypatch.setattr(server, "healthy", lambda *a, **k: True)
    assert server.shared_server_url() is None
    st = server.server_status()
    assert st["alive"] is False and st["healthy"] is False
