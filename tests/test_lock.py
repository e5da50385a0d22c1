"""The run lock (avits_core.lock): one owner per run folder, dead owners taken over, stale locks
broken only on request; tested in process and with two real processes."""

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

from avits_core import lock as L

REPO = Path(__file__).resolve().parents[1]


def test_second_holder_is_refused_with_the_owner_named(tmp_path):
    with L.hold(tmp_path, "avits run a.yaml") as first:
        info = json.loads((tmp_path / L.LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["command"] == "avits run a.yaml" and info["host"]
        with pytest.raises(L.RunLockedError) as exc:
            L.RunLock(tmp_path, "avits rerank").acquire()
        msg = str(exc.value)
        assert "in use by `avits run a.yaml`" in msg and f"pid {os.getpid()}" in msg and "\n" not in msg
        # a live owner on this machine is never broken, not even on request
        with pytest.raises(L.RunLockedError):
            L.RunLock(tmp_path, "x").acquire(break_lock=True)
        assert first.beat() and not first.lost
    assert not (tmp_path / L.LOCK_NAME).exists()  # released
    with L.hold(tmp_path, "again"):
        pass


def _write_lock(folder: Path, **over) -> L.LockInfo:
    info = L.LockInfo.mine("avits run old.yaml")
    for k, v in over.items():
        setattr(info, k, v)
    (folder / L.LOCK_NAME).write_bytes(info.to_bytes())
    return info


def test_dead_owner_on_this_machine_is_taken_over_and_reported(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path, pid=dead.pid, pid_start="1")
    assert L.lock_state(L.read_lock(tmp_path)) == "dead"
    lk = L.RunLock(tmp_path, "avits run new.yaml").acquire()
    try:
        assert len(lk.notes) == 1 and "its owner died" in lk.notes[0] and f"pid {dead.pid}" in lk.notes[0]
        assert L.read_lock(tmp_path).pid == os.getpid()
    finally:
        lk.release()


def test_reused_pid_is_not_the_owner(tmp_path):
    # our own pid, but another start time: the original owner is gone
    _write_lock(tmp_path, pid_start="12345")
    assert L.lock_state(L.read_lock(tmp_path)) == "dead"


def test_stale_lock_of_another_host_needs_break_lock(tmp_path):
    old = time.time() - L.STALE_AFTER_S - 60
    _write_lock(tmp_path, host="gpu-box-7", boot_id="other", pid=4242, heartbeat_at=old, started_at=old)
    with pytest.raises(L.RunLockedError) as exc:
        L.RunLock(tmp_path, "avits run").acquire()
    assert "stale lock" in str(exc.value) and "gpu-box-7" in str(exc.value) and "--break-lock" in str(exc.value)
    assert L.read_lock(tmp_path).host == "gpu-box-7"  # untouched
    lk = L.RunLock(tmp_path, "avits run").acquire(break_lock=True)
    assert "broken on request" in lk.notes[0]
    lk.release()
    # a fresh heartbeat from another host counts as held (we cannot check it), but --break-lock may break it
    _write_lock(tmp_path, host="gpu-box-7", boot_id="other", pid=4242)
    assert L.lock_state(L.read_lock(tmp_path)) == "held"
    with pytest.raises(L.RunLockedError, match="in use by"):
        L.RunLock(tmp_path, "avits run").acquire()


def test_unreadable_lock_file_is_stale(tmp_path):
    (tmp_path / L.LOCK_NAME).write_text("{half")
    with pytest.raises(L.RunLockedError, match="stale lock"):
        L.RunLock(tmp_path, "x").acquire()
    L.RunLock(tmp_path, "x").acquire(break_lock=True).release()


def test_heartbeat_refreshes_and_notices_a_broken_lock(tmp_path):
    lk = L.RunLock(tmp_path, "x", heartbeat_s=0.05).acquire()
    t0 = L.read_lock(tmp_path).heartbeat_at
    time.sleep(0.4)
    assert L.read_lock(tmp_path).heartbeat_at > t0
    (tmp_path / L.LOCK_NAME).write_bytes(L.LockInfo.mine("thief").to_bytes())  # someone broke it
    time.sleep(0.3)
    assert lk.lost
    lk.release()
    assert L.read_lock(tmp_path).command == "thief"  # release never deletes another owner's lock


HOLDER = textwrap.dedent("""
    import sys, time
    from avits_core.lock import hold
    with hold(sys.argv[1], "holder"):
        print("locked", flush=True)
        time.sleep(60)
""")

TAKER = textwrap.dedent("""
    import sys
    from avits_core.lock import RunLock, RunLockedError
    try:
        lk = RunLock(sys.argv[1], "taker").acquire()
    except RunLockedError as exc:
        print("refused:", exc, flush=True)
        sys.exit(2)
    print("took", *lk.notes, flush=True)
    lk.release()
""")


def _py(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_two_real_processes(tmp_path):
    holder = _py(HOLDER, str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "locked"
        taker = _py(TAKER, str(tmp_path))
        out, _ = taker.communicate(timeout=60)
        assert taker.returncode == 2 and "refused:" in out and f"pid {holder.pid}" in out and "`holder`" in out
        os.kill(holder.pid, signal.SIGKILL)  # the owner dies without releasing
        holder.wait(timeout=30)
        assert (tmp_path / L.LOCK_NAME).exists()
        taker = _py(TAKER, str(tmp_path))
        out, _ = taker.communicate(timeout=60)
        assert taker.returncode == 0 and "took" in out and "its owner died" in out
    finally:
        holder.kill()
