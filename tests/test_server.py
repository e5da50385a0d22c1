"""avits/server.py: private servers die with their parent (kill -9 included), the long-lived
`avits server` is found and reused, PREFECT_API_URL wins, the start-up timeout default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from avits import server

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.server]


def _alive(pid: int) -> bool:
    return server._alive(pid)


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


PARENT = textwrap.dedent("""
    import time
    from avits.server import start_child_server
    s = start_child_server()
    print(s.proc.pid, s.api_url, flush=True)
    time.sleep(600)
""")


def test_private_server_dies_with_a_killed_parent(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        line = parent.stdout.readline().split()
        assert line, "the parent did not start its server"
        pid, url = int(line[0]), line[1]
        assert _alive(pid) and server.healthy(url) and url.startswith("http://127.0.0.1:")
        t0 = time.monotonic()
        os.kill(parent.pid, signal.SIGKILL)  # only the parent: the child must follow by itself
        parent.wait(timeout=30)
        assert _wait_gone(pid), f"server pid {pid} survived its parent"
        print(f"server gone {time.monotonic() - t0:.2f} s after kill -9 of its parent")
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)


def test_server_start_status_stop_and_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    port = server.free_port()
    st = server.server_start(port=port)
    try:
        assert st["api_url"] == f"http://127.0.0.1:{port}/api" and server.healthy(st["api_url"])
        assert json.loads(server.state_file().read_text())["pid"] == st["pid"]
        assert server.server_status()["healthy"]
        with pytest.raises(server.ServerError, match="already runs"):
            server.server_start(port=port)
        said = []
        with server.prefect_api(said.append) as url:  # reused, nothing started
            assert url == st["api_url"] and os.environ["PREFECT_API_URL"] == url
        assert "avits server" in said[0] and "PREFECT_API_URL" not in os.environ
    finally:
        stopped = server.server_stop()
    assert stopped["pid"] == st["pid"] and _wait_gone(st["pid"]) and not server.state_file().exists()
    assert server.server_status() is None


def test_user_api_url_wins_and_timeout_default(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example.org:4200/api")  # remote: used as is
    said = []
    with server.prefect_api(said.append) as url:
        assert url == "http://prefect.example.org:4200/api"
    assert "PREFECT_API_URL" in said[0]
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{server.free_port()}/api")  # local and dead
    with pytest.raises(server.ServerError, match="does not answer"):
        with server.prefect_api():
            pass
    monkeypatch.delenv(server.STARTUP_TIMEOUT_ENV, raising=False)
    server.configure_env()
    assert server.startup_timeout() == server.DEFAULT_STARTUP_TIMEOUT_S
    monkeypatch.setenv(server.STARTUP_TIMEOUT_ENV, "45")
    server.configure_env()
    assert server.startup_timeout() == 45.0  # the user's value is kept


def test_private_server_runs_without_the_housekeeping_services(tmp_path, monkeypatch):
    """A private server (no workers, dies with the command) does not run the deployment / work-pool
    housekeeping services (they belong to the user's own server, and would act on the deployments of a
    database it shares); it keeps the event persister, the task run recorder and triggers. A user's own
    setting wins. Read from the server's own settings endpoint."""
    import urllib.request

    monkeypatch.setenv("PREFECT_SERVER_SERVICES_FOREMAN_ENABLED", "true")  # the user's choice
    srv = server.start_child_server(env={"PREFECT_HOME": str(tmp_path / "prefect")})
    try:
        with urllib.request.urlopen(f"{srv.api_url}/admin/settings", timeout=30) as resp:
            services = json.load(resp)["server"]["services"]
    finally:
        srv.stop()
    enabled = {name: bool(v["enabled"]) for name, v in services.items() if isinstance(v, dict) and "enabled" in v
               and isinstance(v["enabled"], bool)}
    off = {n.lower() for n in server.PRIVATE_SERVER_SERVICES_OFF} - {"foreman"}
    assert off and all(enabled[n] is False for n in off), enabled
    assert enabled["foreman"] is True
    assert enabled["event_persister"] and enabled["task_run_recorder"] and enabled["triggers"]
