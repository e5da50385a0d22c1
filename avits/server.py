"""Which Prefect API a command talks to, and the local servers avits starts.

A command that needs orchestration (generation or scoring work: ``avits run`` of an unfinished run,
``avits rerank`` with pairs left to score, ``avits benchmark``) calls :func:`prefect_api`, which picks,
in this order:

1. ``PREFECT_API_URL`` when the user set it (a ``prefect server`` of their own, Prefect Cloud, or the
   server of ``avits server start``): used as is, nothing is started.
2. The long-lived local server of ``avits server start`` when its state file says it runs and it
   answers ``/api/health``: many commands share one server (no start-up cost per command).
3. Otherwise a private server for this command only: the same uvicorn app Prefect's own "ephemeral
   mode" starts, on 127.0.0.1 and a free port, but started by us so that it cannot outlive us: on Linux
   the child gets ``PR_SET_PDEATHSIG`` = SIGKILL (the kernel kills it when the avits process dies,
   ``kill -9`` included), and it is stopped with SIGTERM when the command ends. It runs without the
   deployment/work-pool housekeeping services (:data:`PRIVATE_SERVER_SERVICES_OFF`).

Start-up timeout: a busy machine can take a minute or more to import the server and migrate its
SQLite database, so avits waits up to :data:`DEFAULT_STARTUP_TIMEOUT_S` seconds unless the user set
``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (which then also bounds our own wait), and
exports that default so that Prefect's own ephemeral server (tests, ``prefect`` commands started by
avits) waits as long.

``avits server start|stop|status``: a detached server on ``127.0.0.1:PORT`` (default 4280) whose
state (pid, port, url, log file) is kept in ``$PREFECT_HOME/avits-server.json``; ``stop`` sends
SIGTERM (then SIGKILL after 10 s) and removes the state file. Every avits command then reuses it;
``export PREFECT_API_URL=http://127.0.0.1:4280/api`` makes plain ``prefect`` commands use it too.
Servers listen on 127.0.0.1 only.

Commands that need no orchestration start no server at all (see ``avits/cli.py``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger("avits.server")

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
#: Seconds to wait for a server to answer when the user did not set STARTUP_TIMEOUT_ENV.
DEFAULT_STARTUP_TIMEOUT_S = 600
DEFAULT_PORT = 4280
HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def configure_env() -> None:
    """Defaults every avits process sets before Prefect is imported (user settings win)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault(STARTUP_TIMEOUT_ENV, str(DEFAULT_STARTUP_TIMEOUT_S))


def startup_timeout() -> float:
    try:
        return float(os.environ.get(STARTUP_TIMEOUT_ENV, DEFAULT_STARTUP_TIMEOUT_S))
    except ValueError:
        return float(DEFAULT_STARTUP_TIMEOUT_S)


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def state_file() -> Path:
    return prefect_home() / "avits-server.json"


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether ``api_url`` (``http://host:port/api``) answers its health check."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _server_cmd(port: int) -> list[str]:
    # the app Prefect's own ephemeral mode serves (prefect.server.api.server.SubprocessASGIServer)
    return [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
            "--host", HOST, "--port", str(port), "--log-level", "error", "--lifespan", "on"]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - not Linux: the atexit/finally stop is all we have
        pass


def _alive(pid: int) -> bool:
    """True when process ``pid`` exists and is not a zombie. A pid <= 0 is never a live server: for
    ``os.kill`` 0 means this process group and a negative number another group (a state file without a
    pid reads as 0)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not reaped yet) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _wait_healthy(api_url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with code {proc.returncode} before answering")
        if healthy(api_url, timeout=2.0):
            return
        time.sleep(0.1)
    raise ServerError(f"{what} did not answer {api_url}/health within {timeout:.0f} s "
                      f"(set {STARTUP_TIMEOUT_ENV} to wait longer, or start one with `avits server start`)")


class ServerError(RuntimeError):
    pass


@dataclass
class ChildServer:
    """A private Prefect server that dies with this process."""

    proc: subprocess.Popen
    port: int
    started_s: float

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


#: Prefect server services a private server runs without: housekeeping for deployments, work pools,
#: schedules and concurrency leases, which belongs to the user's own long-lived server (a private one
#: has no workers and dies with the command; its scheduler or late-runs service would even act on
#: the deployments of a database it shares with that server). Kept: the event persister and the task
#: run recorder (the run's history in the database) and triggers (the user's automations). Measured
#: (bench: 3 starts each): its CPU in the 20 s after start 31-35 vs 42-55 ms/s. A user's own
#: PREFECT_SERVER_SERVICES_<NAME>_ENABLED wins.
PRIVATE_SERVER_SERVICES_OFF = ("SCHEDULER", "LATE_RUNS", "FOREMAN", "CANCELLATION_CLEANUP", "PAUSE_EXPIRATIONS",
                               "REPOSSESSOR", "CLEANUP_RECONCILER")


def start_child_server(timeout: float | None = None, env: dict[str, str] | None = None) -> ChildServer:
    """Start a private server (127.0.0.1, free port, PR_SET_PDEATHSIG, without the housekeeping services of
    :data:`PRIVATE_SERVER_SERVICES_OFF`) and wait until it answers."""
    port = free_port()
    child_env = {**os.environ, **(env or {}), "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                 "PREFECT__SERVER_FINAL": "1"}
    for name in PRIVATE_SERVER_SERVICES_OFF:
        child_env.setdefault(f"PREFECT_SERVER_SERVICES_{name}_ENABLED", "false")
    child_env.pop("PREFECT_API_URL", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(_server_cmd(port), env=child_env, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    srv = ChildServer(proc=proc, port=port, started_s=0.0)
    try:
        _wait_healthy(srv.api_url, proc, startup_timeout() if timeout is None else timeout,
                      f"the local Prefect server (pid {proc.pid})")
    except BaseException:
        srv.stop()
        raise
    srv.started_s = time.perf_counter() - t0
    log.info("local Prefect server on %s up in %.1f s", srv.api_url, srv.started_s)
    return srv


def _read_state() -> dict | None:
    """The state file of ``avits server start`` (pid, port, api_url, ...), or None when absent or unreadable."""
    try:
        return json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None


def _state_pid(st: dict) -> int:
    return int(st.get("pid", 0) or 0)


def shared_server_url() -> str | None:
    """The API URL of a running ``avits server start`` server, or None."""
    st = _read_state()
    url = st and st.get("api_url")
    if url and _alive(_state_pid(st)) and healthy(url, timeout=1.0):
        return url
    return None


@contextmanager
def _pointed_at(url: str) -> Iterator[None]:
    """PREFECT_API_URL = ``url`` for the block: in the environment (read when Prefect is first imported)
    and, when Prefect is already imported in this process (tests), in its settings context."""
    os.environ["PREFECT_API_URL"] = url
    try:
        if "prefect" in sys.modules:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: url}):
                yield
        else:
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


@contextmanager
def prefect_api(say: Callable[[str], None] | None = None) -> Iterator[str]:
    """Point Prefect at a server for the ``with`` block (see the module docstring); yields its API URL."""
    say = say or (lambda s: None)
    configure_env()
    url = os.environ.get("PREFECT_API_URL")
    if url:
        from urllib.parse import urlparse

        if urlparse(url).hostname in ("127.0.0.1", "localhost", "::1") and not healthy(url, timeout=5.0):
            raise ServerError(f"PREFECT_API_URL={url} does not answer; start that server, `avits server start`, "
                              f"or unset PREFECT_API_URL for a private server")
        say(f"Prefect server: {url} (PREFECT_API_URL)")
        yield url
        return
    url = shared_server_url()
    if url:
        say(f"Prefect server: {url} (avits server)")
        with _pointed_at(url):
            yield url
        return
    say("starting a local Prefect server for this command (`avits server start` keeps one for many commands)")
    srv = start_child_server()
    try:
        with _pointed_at(srv.api_url):
            try:
                yield srv.api_url
            finally:
                _drain_prefect_logs()
    finally:
        srv.stop()


def _drain_prefect_logs(timeout: float = 10.0) -> None:
    """Send Prefect's queued run logs before our private server goes away (else Prefect prints
    "--- Error logging to API ---" at exit)."""
    handlers = sys.modules.get("prefect.logging.handlers")
    if handlers is None:
        return
    try:
        handlers.APILogWorker.drain_all(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - best effort
        log.debug("could not drain Prefect's log queue: %s", exc)


# --------------------------------------------------------------------------- avits server start|stop|status


def server_start(port: int = DEFAULT_PORT, timeout: float | None = None) -> dict:
    """Start a detached long-lived server; returns its state (raises ServerError if one runs or it fails)."""
    configure_env()
    url = shared_server_url()
    if url:
        raise ServerError(f"an avits server already runs at {url} (state in {state_file()}); `avits server stop` first")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, port))
    except OSError as exc:
        raise ServerError(f"port {port} on {HOST} is taken ({exc.strerror}); choose another with --port") from None
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    logfile = home / "avits-server.log"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(_server_cmd(port), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    api_url = f"http://{HOST}:{port}/api"
    try:
        _wait_healthy(api_url, proc, startup_timeout() if timeout is None else timeout, f"the avits server (pid {proc.pid})")
    except BaseException:
        proc.kill()
        raise
    st = {"pid": proc.pid, "port": port, "api_url": api_url, "log": str(logfile), "started_at": time.time()}
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(st, indent=1))
    os.replace(tmp, state_file())
    return st


def server_status() -> dict | None:
    """The state of the avits server with ``healthy`` added, or None when none was started."""
    st = _read_state()
    if st is None:
        return None
    st["alive"] = _alive(_state_pid(st))
    st["healthy"] = st["alive"] and healthy(st.get("api_url", ""), timeout=2.0)
    return st


def server_stop(timeout: float = 10.0) -> dict | None:
    """Stop the avits server (SIGTERM, then SIGKILL) and remove its state file; its state, or None."""
    st = server_status()
    if st is None:
        return None
    pid = _state_pid(st)
    if pid and st["alive"]:
        os.kill(pid, signal.SIGTERM)
        t0 = time.monotonic()
        while _alive(pid) and time.monotonic() - t0 < timeout:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    state_file().unlink(missing_ok=True)
    return st
