"""A run folder has one owner at a time: the run lock.

Every command that writes to a run (``run``, ``rerank``, ``evaluate``, ``ablate``, ``budget``,
``diagnose``, ``report``) holds ``<run>/owner.lock`` while it works. The lock is a small JSON
document: who (user), where (host and boot id), which process (pid and its start time, so a reused
pid is not mistaken for the owner), which command, when it started, and a heartbeat refreshed every
:data:`HEARTBEAT_S` seconds by a daemon thread.

A second command on a held run fails at once with one line naming the owner (the CLI exits 2).

A lock nobody holds any more is one of two kinds:
  - ``dead``: the owner ran on *this* machine (same host name and boot id) and its process is gone
    (``kill -9``, a crash, a reboot). That is certain, so the lock is taken over, and the takeover is
    reported (a warning line naming the dead owner): rerunning a killed ``avits run`` resumes it.
  - ``stale``: the owner ran elsewhere (another host, or before a reboot of a shared filesystem
    client) and its heartbeat is older than :data:`STALE_AFTER_S`. Whether it is alive cannot be known
    from here, so the lock is reported and broken only on request (``--break-lock``).
A live lock on this machine is never broken, not even with ``--break-lock``.

Storage. The lock talks to a :class:`~avits_core.store.cas.LockBackend` with create-if-absent,
read, compare-and-replace and compare-and-delete on one key (:mod:`avits_core.store.cas`): a local or
NFS folder (``O_CREAT|O_EXCL``, ``flock``), or an object store with conditional requests
(``If-None-Match: *``, ``If-Match: <etag>``), so the lock logic above does not depend on where the run lives.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from avits_core.errors import AvitsError
from avits_core.store import fs as sfs
from avits_core.store.cas import LockBackend, backend_for

log = logging.getLogger(__name__)

LOCK_NAME = "owner.lock"
#: Seconds between heartbeats of a held lock.
HEARTBEAT_S = float(os.environ.get("AVITS_LOCK_HEARTBEAT_S", "10"))
#: A lock whose heartbeat is older than this (and whose owner cannot be checked from here) is stale.
STALE_AFTER_S = float(os.environ.get("AVITS_LOCK_STALE_AFTER_S", "120"))


class RunLockedError(AvitsError):
    """The run is held by another command (or by a stale lock that needs ``--break-lock``)."""

    def __init__(self, message: str, holder: "LockInfo | None" = None):
        super().__init__(message)
        self.holder = holder


# --------------------------------------------------------------------------- who holds it


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); '' if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return str(os.getuid())


@dataclass
class LockInfo:
    user: str
    host: str
    boot_id: str
    pid: int
    pid_start: str
    command: str
    started_at: float
    heartbeat_at: float
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def mine(cls, command: str) -> "LockInfo":
        now = time.time()
        return cls(user=_user(), host=socket.gethostname(), boot_id=_boot_id(), pid=os.getpid(),
                   pid_start=_pid_start(os.getpid()), command=command, started_at=now, heartbeat_at=now)

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "LockInfo":
        try:
            d = json.loads(data.decode())
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            # a half-written or foreign lock file: unknown owner, treated as stale (needs --break-lock)
            return cls(user="?", host="?", boot_id="?", pid=0, pid_start="", command="(unreadable lock file)",
                       started_at=0.0, heartbeat_at=0.0, token="")


def _same_machine(info: LockInfo) -> bool:
    return info.host == socket.gethostname() and bool(info.boot_id) and info.boot_id == _boot_id()


def _alive(info: LockInfo) -> bool:
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    start = _pid_start(info.pid)
    return not (start and info.pid_start and start != info.pid_start)  # a reused pid is not the owner


def lock_state(info: LockInfo, now: float | None = None) -> str:
    """``held`` (its owner is alive, or its heartbeat is fresh), ``dead`` (owner on this machine, process
    gone: certain) or ``stale`` (heartbeat older than STALE_AFTER_S, owner elsewhere: uncertain)."""
    if _same_machine(info):
        return "held" if _alive(info) else "dead"
    age = (now or time.time()) - info.heartbeat_at
    return "stale" if age > STALE_AFTER_S else "held"


def describe(info: LockInfo, now: float | None = None) -> str:
    """One line: command, pid, host, user, start time, heartbeat age."""
    now = now or time.time()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.started_at))
    return (f"`{info.command}` (pid {info.pid} on host {info.host}, user {info.user}, since {started}, "
            f"heartbeat {max(0.0, now - info.heartbeat_at):.0f} s ago)")


def read_lock(run_path: str | Path, backend: LockBackend | None = None) -> LockInfo | None:
    """The lock of a run folder, or None when nobody holds it."""
    backend = backend or backend_for(run_path)
    data = backend.read(LOCK_NAME)
    return None if data is None else LockInfo.from_bytes(data)


# --------------------------------------------------------------------------- holding it


class RunLock:
    """The held lock of one run folder; release with :meth:`release` or use as a context manager."""

    def __init__(self, run_path: str | Path, command: str, *, backend: LockBackend | None = None,
                 heartbeat_s: float | None = None):
        self.run_path = sfs.as_path(run_path)
        self.command = command
        self.backend = backend or backend_for(self.run_path)
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.info: LockInfo | None = None
        self._data: bytes | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()
        self.lost = False
        self.notes: list[str] = []  # takeovers / broken locks, for the caller to print

    # -- acquire ------------------------------------------------------------------------------

    def acquire(self, *, break_lock: bool = False) -> "RunLock":
        """Take the lock or raise :class:`RunLockedError` naming the holder."""
        for _ in range(5):  # another process may take or drop the lock between our calls
            info = LockInfo.mine(self.command)
            data = info.to_bytes()
            if self.backend.create(LOCK_NAME, data):
                self.info, self._data = info, data
                self._start_heartbeat()
                log.debug("lock %s taken by pid %d", self.run_path, info.pid)
                return self
            old = self.backend.read(LOCK_NAME)
            if old is None:
                continue  # released meanwhile: try again
            holder = LockInfo.from_bytes(old)
            state = lock_state(holder)
            if state == "held" and not (break_lock and not _same_machine(holder)):
                raise RunLockedError(f"run {self.run_path} is in use by {describe(holder)}; wait for it to "
                                     f"finish or stop it", holder)
            if state == "stale" and not break_lock:
                raise RunLockedError(f"run {self.run_path} has a stale lock: {describe(holder)}; its owner is on "
                                     f"another machine and cannot be checked from here. If no command is "
                                     f"running on that run, rerun with --break-lock", holder)
            if self.backend.delete_if(LOCK_NAME, old):
                what = {"dead": "its owner died", "stale": "broken on request (--break-lock)",
                        "held": "broken on request (--break-lock)"}[state]
                note = f"took over the lock of run {self.run_path.name} from {describe(holder)}: {what}"
                self.notes.append(note)
                log.warning("%s", note)
        raise RunLockedError(f"run {self.run_path}: could not take the lock (it changed hands repeatedly)")

    # -- heartbeat ----------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        if self.heartbeat_s <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="avits-lock-heartbeat", daemon=True)
        self._thread.start()

    def beat(self) -> bool:
        """Refresh the heartbeat now; False (and ``lost``) if the lock is no longer ours."""
        with self._mutex:
            if self.info is None or self._data is None:
                return False
            self.info.heartbeat_at = time.time()
            new = self.info.to_bytes()
            if self.backend.replace_if(LOCK_NAME, self._data, new):
                self._data = new
                return True
            self.lost = True
            log.error("lock of run %s was broken by someone else; this command no longer owns the run", self.run_path)
            return False

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.beat():
                    return
            except OSError as exc:  # a full disk must not kill the run: retried at the next beat
                log.warning("lock heartbeat of %s failed: %s", self.run_path, exc)

    # -- release ------------------------------------------------------------------------------

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._mutex:
            if self._data is not None:
                try:
                    self.backend.delete_if(LOCK_NAME, self._data)
                except OSError as exc:  # pragma: no cover
                    log.warning("could not release the lock of %s: %s", self.run_path, exc)
            self.info, self._data = None, None

    def __enter__(self) -> "RunLock":
        if self.info is None:
            self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def command_line() -> str:
    """This process's command line, shortened, for the lock's ``command`` field."""
    args = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else ["python"]
    text = " ".join(args)
    return text if len(text) <= 200 else text[:197] + "..."


@contextmanager
def hold(run_path: str | Path, command: str | None = None, *, break_lock: bool = False) -> Iterator[RunLock]:
    """Hold the run lock for the duration of a ``with`` block (``RunLockedError`` when held)."""
    lk = RunLock(run_path, command or command_line()).acquire(break_lock=break_lock)
    try:
        yield lk
    finally:
        lk.release()
