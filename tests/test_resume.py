"""Kill `avits run` with SIGKILL in the middle of scoring, run the same command again: the run
finishes with no duplicated and no missing rows, and nothing stored before the kill is generated or
scored again."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avits_core.store.duck import query
from helpers import tiny_config, write_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _avits(args, env, **kw):
    exe = Path(sys.executable).parent / "avits"
    return subprocess.Popen([str(exe), *args], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **kw)


def test_sigkill_mid_run_then_resume(tmp_path):
    cfg = tiny_config(tmp_path, run_id="killme")
    cfg["prompts"] = {"source": str(REPO / "data/prompts/synth-24.csv"), "limit": 12}
    cfg["search"] = {"method": "best_of_n", "n": 4, "prompts_per_task": 1}
    cfg["verifiers"] = [{"name": "av_sync"}, {"name": "synth_text"}, {"name": "av_align"}]
    path = write_config(cfg, tmp_path / "cfg.yaml")
    # flush every scoring event (4 candidates) so that the kill lands between reward parts
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "ph"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               AVITS_SCORE_FLUSH_ROWS="4")
    run = tmp_path / "runs" / "killme"

    proc = _avits(["run", str(path), "-q"], env)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed:\n" + proc.stdout.read()[-3000:])
        n_rewards = len(list((run / "rewards").glob("part-*.parquet"))) if run.exists() else 0
        if n_rewards >= 3:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            killed_at = n_rewards
            break
        time.sleep(0.02)
    assert killed_at is not None, "scoring never started"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "running"  # killed: nobody marked it finished
    cand_parts_before = {p.name: p.stat().st_mtime_ns for p in (run / "candidates").glob("part-*.parquet")}
    reward_parts_before = {p.name: p.stat().st_mtime_ns for p in (run / "rewards").glob("part-*.parquet")}
    rows_before = query(run, "SELECT candidate_id, verifier FROM rewards_all").to_pylist()
    assert 0 < len(rows_before) < 12 * 4 * 3

    again = _avits(["run", str(path), "-q"], env)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out[-4000:]

    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    # nothing stored before the kill was rewritten
    for name, mtime in {**cand_parts_before}.items():
        assert (run / "candidates" / name).stat().st_mtime_ns == mtime
    for name, mtime in reward_parts_before.items():
        assert (run / "rewards" / name).stat().st_mtime_ns == mtime
    c = query(run, "SELECT count(*) n, count(DISTINCT candidate_id) u, count(DISTINCT prompt_id) p FROM candidates").to_pylist()[0]
    assert c == {"n": 48, "u": 48, "p": 12}
    r = query(run, "SELECT count(*) n, count(DISTINCT (candidate_id, verifier)) u FROM rewards_all").to_pylist()[0]
    assert r == {"n": 48 * 3, "u": 48 * 3}  # no pair scored twice, none missing
    assert query(run, "SELECT count(*) n FROM rewards WHERE status = 'ok'").to_pylist()[0]["n"] == 48 * 3
    s = query(run, "SELECT count(*) n, count(DISTINCT prompt_id) p FROM selections").to_pylist()[0]
    assert s == {"n": 12, "p": 12}
    m = query(run, "SELECT count(*) n, count(DISTINCT (coalesce(selection_id, ''), prompt_id, metric)) u FROM metrics").to_pylist()[0]
    assert m["n"] == m["u"]
