"""Fault injection (issue 10, reliability suite): SIGKILL at every stage then rerun, a verifier that fails
on 10 % of clips, a full disk.

The faults come from ``tests/plugins/avits_faults`` (put on PYTHONPATH, never installed): the
``fault_flaky`` verifier plugin and a kill hook driven by ``AVITS_FAULT_KILL`` (see its docstring).
All ``avits`` subprocesses of this module share one private Prefect server (started once), so each
command costs no server start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import tiny_config, write_config

from avits_core.store.duck import query

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "plugins" / "avits_faults"
AVITS = str(Path(sys.executable).parent / "avits")
pytestmark = pytest.mark.slow

PROMPTS = ["a small red ball bounces twice with a high beep over rain",
           "a large blue cube bounces three times with a low click",
           "a small green ball bounces once with a high click"]


@pytest.fixture(scope="module")
def api_url(tmp_path_factory):
    """One private Prefect server for every command of this module (dies with the test process)."""
    from avits.server import start_child_server

    home = tmp_path_factory.mktemp("prefect-home")
    srv = start_child_server(env={"PREFECT_HOME": str(home)})
    try:
        yield srv.api_url
    finally:
        srv.stop()


def _env(api_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVITS_FAULT")}
    env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp_path / "ph"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONPATH=os.pathsep.join([str(PLUGIN), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               AVITS_SCORE_FLUSH_ROWS="3")
    env.update(extra)
    return env


def _config(tmp_path: Path, output_root: Path, n: int = 3, prompts: list[str] = PROMPTS) -> Path:
    cfg = tiny_config(tmp_path, output_root=str(output_root), prompts={"source": list(prompts)},
                      search={"method": "best_of_n", "n": n, "prompts_per_task": 1},
                      verifiers=[{"name": "av_sync"}, {"name": "fault_flaky"}])
    return write_config(cfg, tmp_path / f"cfg-{uuid.uuid4().hex[:6]}.yaml")


def _avits(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    p = subprocess.Popen([AVITS, *args], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"avits {' '.join(args)} timed out:\n{out[-3000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, "")


def _parts(run: Path) -> dict[str, int]:
    """Every part file of the run's tables -> its mtime (ns)."""
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.glob("*/part-*.parquet")}


def _tables(run: Path) -> dict[str, list]:
    """The content of every table that must not depend on how often the run was killed (sorted)."""
    return {
        "candidates": query(run, "SELECT prompt_id, candidate_id, seed, nfe, media_path FROM candidates "
                                 "ORDER BY ALL").to_pylist(),
        "rewards": query(run, "SELECT candidate_id, verifier, status, round(value, 9) v FROM rewards_all "
                              "ORDER BY ALL").to_pylist(),
        "selections": query(run, "SELECT prompt_id, candidate_id, round(score, 9) s FROM selections "
                                 "ORDER BY ALL").to_pylist(),
        "metrics": query(run, "SELECT coalesce(selection_id, '') sel, prompt_id, candidate_id, metric, "
                              "round(value, 9) v FROM metrics ORDER BY ALL").to_pylist(),
    }


# A verifier kill point holds every other verifier's rewards parts until the kill (the plugin's hook), so
# each kill lands while the other verifier still has pairs left, whichever verifier is faster (this used
# to depend on av_sync being slower than fault_flaky).
KILL_POINTS = ["candidates:1",           # generation: after the first prompt's candidates are stored
               "rewards:fault_flaky:1",   # scoring by one verifier, after its first part
               "rewards:av_sync:1",       # scoring by the other verifier, after its first part
               "arw_trace:1",             # selection: trace stored, selections not yet
               "metrics:1",               # evaluation: metrics stored, run not marked completed
               "report"]                  # report: on entry


def test_sigkill_at_every_stage_then_rerun(tmp_path, api_url):
    cfg = _config(tmp_path, tmp_path / "runs")
    ref = _avits(["run", str(cfg), "-q", "--run-id", "ref"], _env(api_url, tmp_path))
    assert ref.returncode == 0, ref.stdout[-3000:]
    want = _tables(tmp_path / "runs" / "ref")
    assert len(want["candidates"]) == 9 and len(want["rewards"]) == 18 and len(want["selections"]) == 3

    run = tmp_path / "runs" / "killed"
    history: list[tuple[str, dict[str, int]]] = []
    for point in KILL_POINTS:
        r = _avits(["run", str(cfg), "-q", "--run-id", "killed"], _env(api_url, tmp_path, AVITS_FAULT_KILL=point))
        assert r.returncode == -signal.SIGKILL, f"{point}: not killed (rc {r.returncode}):\n{r.stdout[-3000:]}"
        assert json.loads((run / "run.json").read_text())["status"] == "running", point
        now = _parts(run)
        for earlier, parts in history:  # nothing stored before an earlier kill was rewritten or removed
            for name, mtime in parts.items():
                assert now.get(name) == mtime, f"{name} (stored before the kill at {earlier}) changed at {point}"
        history.append((point, now))
    # the kill points were reached in order: each run got further than the one before
    assert len(history[0][1]) < len(history[-1][1])

    final = _avits(["run", str(cfg), "-q", "--run-id", "killed"], _env(api_url, tmp_path))
    assert final.returncode == 0, final.stdout[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    for name, mtime in history[-1][1].items():
        assert _parts(run).get(name) == mtime, name
    got = _tables(run)
    for table in want:  # no lost, duplicated or regenerated rows: the same rows as the uninterrupted run
        assert got[table] == want[table], table
    assert (run / "report" / "report.md").exists() or list(run.glob("report/**/report.md"))


def test_verifier_failing_on_ten_percent_of_clips_then_rerank_retries(tmp_path, api_url):
    prompts = PROMPTS + ["a large yellow cube bounces twice with a low beep over wind"]
    cfg = _config(tmp_path, tmp_path / "runs", n=5, prompts=prompts)  # 20 clips
    r = _avits(["run", str(cfg), "-q", "--run-id", "flaky"], _env(api_url, tmp_path, AVITS_FAULT_FLAKY="1"))
    assert r.returncode == 0, r.stdout[-3000:]
    run = tmp_path / "runs" / "flaky"
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    rows = query(run, "SELECT candidate_id, status, value, error FROM rewards_all WHERE verifier = 'fault_flaky'").to_pylist()
    assert len(rows) == 20
    errs = [x for x in rows if x["status"] != "ok"]
    assert len(errs) == 2  # every 10th clip
    assert all(x["value"] is None or x["value"] != x["value"] for x in errs)  # null/NaN, never a silent 0.0
    assert all("injected fault on clip" in (x["error"] or "") for x in errs)
    assert query(run, "SELECT count(*) n FROM selections").to_pylist()[0]["n"] == 4  # every prompt selected

    again = _avits(["rerank", str(run)], _env(api_url, tmp_path))
    assert again.returncode == 0, again.stdout[-3000:]
    ok = query(run, "SELECT count(DISTINCT candidate_id) n FROM rewards_all WHERE verifier = 'fault_flaky' "
                    "AND status = 'ok'").to_pylist()[0]["n"]
    assert ok == 20  # the two failed pairs were retried and are now scored
    retried = {x["candidate_id"] for x in errs}
    vals = query(run, "SELECT candidate_id, value FROM rewards_all WHERE verifier = 'fault_flaky' AND status = 'ok'").to_pylist()
    assert all(0.0 < x["value"] < 1.0 for x in vals if x["candidate_id"] in retried)
    # the pairs that were ok are not scored again
    assert query(run, "SELECT count(*) n FROM rewards_all WHERE verifier = 'fault_flaky'").to_pylist()[0]["n"] == 22


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(r.stderr or r.stdout).strip() or r.returncode})")


def test_full_disk_then_free_space_and_rerun(tmp_path, api_url):
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    root = tmp_path / "small"
    _mount_tmpfs(root, "2m")
    try:
        cfg = _config(tmp_path, root)
        env = _env(api_url, tmp_path)
        # fill the disk after the run folder exists: a ballast file taking all but ~150 kB
        ballast = root / "ballast"
        st = os.statvfs(root)
        ballast.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 150_000))
        r = _avits(["run", str(cfg), "-q", "--run-id", "full"], env)
        assert r.returncode not in (0, -signal.SIGKILL), r.stdout[-3000:]
        err = [ln for ln in r.stdout.splitlines() if ln.startswith("error")]
        assert err and ("No space left" in r.stdout or "ENOSPC" in r.stdout or "disk" in r.stdout.lower()), r.stdout[-3000:]
        assert "Traceback" not in r.stdout, r.stdout[-3000:]
        run = root / "full"
        before = _parts(run) if run.exists() else {}
        for name in before:  # what was stored is readable (atomic parts: no half file)
            import pyarrow.parquet as pq

            pq.read_table(run / name)
        ballast.unlink()
        again = _avits(["run", str(cfg), "-q", "--run-id", "full"], env)
        assert again.returncode == 0, again.stdout[-3000:]
        assert json.loads((run / "run.json").read_text())["status"] == "completed"
        now = _parts(run)
        for name, mtime in before.items():
            assert now.get(name) == mtime, name
        c = query(run, "SELECT count(*) n, count(DISTINCT candidate_id) u FROM candidates").to_pylist()[0]
        assert c == {"n": 9, "u": 9}
        r2 = query(run, "SELECT count(*) n, count(DISTINCT (candidate_id, verifier)) u FROM rewards_all").to_pylist()[0]
        assert r2["n"] == r2["u"] == 18
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)
