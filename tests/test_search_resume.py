"""SIGKILL and resume of the multi-event search methods (issue 16: "resumes after SIGKILL like Best-of-N").

For zero_order, search_over_paths, beam and prune (smc has its own test in
``test_search_smc_beam_prune.py``): ``avits run`` of 2 SynthAV prompts is killed with SIGKILL as soon as
its first reward part file exists. The test asserts that the kill really landed mid-run (``run.json``
not completed, fewer candidates stored than the finished run has), reruns the same command, and compares
the result with an uninterrupted run of the same config (library runner, other run id): identical
candidates (ids, lineage, seeds, steps, NFE, kind), one ``ok`` reward per (candidate, verifier) with the
same values, the same selections, and no part file stored before the kill rewritten.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import tiny_config, write_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

#: every method has at least two scoring events per prompt, so the first reward part file is written
#: before the later events' candidates exist
#: method -> (params, candidates per prompt, NFE per prompt at 6 steps)
CASES = {
    "zero_order": ({"n": 4, "neighbours": 2}, 4, 4 * 6),  # 2 events
    "search_over_paths": ({"paths": 2, "branches": 2, "schedule": [2]}, 6, 2 * 6 + 4 * (1 + 6 - 2)),  # 2 events
    # B K S + B K L (look-ahead 2): 4 extensions at step 3 (intermediate) + 4 finals
    "beam": ({"beams": 2, "candidates_per_beam": 2, "beam_steps": [3]}, 8, 2 * 2 * 6 + 2 * 2 * 2),
    # n (p1 + L) + k1 (p2 - p1 + L) + k2 (S - p2), k = 2, 1: 4 + 2 intermediate, 1 final
    "prune": ({"n": 4, "prune_steps": [2, 4], "keep": 0.5}, 7, 4 * 3 + 2 * 3 + 1 * 2),
}

CAND_COLS = "prompt_id, candidate_id, generation, step, parent_ids, seed, nfe, nfe_own, kind"


def _cfg(tmp_path: Path, method: str, run_id: str) -> Path:
    cfg = tiny_config(tmp_path, run_id=run_id)  # 2 prompts, 6 steps, av_sync + synth_text
    cfg["search"] = {"method": method, "prompts_per_task": 1, "params": CASES[method][0]}
    return write_config(cfg, tmp_path / f"{run_id}.yaml")


def _candidates(run: Path) -> list[tuple]:
    from avits_core.store.duck import query

    rows = query(run, f"SELECT {CAND_COLS} FROM candidates ORDER BY candidate_id").to_pylist()
    return [tuple(json.dumps(r[k]) if isinstance(r[k], list) else r[k] for k in CAND_COLS.split(", ")) for r in rows]


def _rewards(run: Path) -> list[tuple]:
    from avits_core.store.duck import query

    rows = query(run, "SELECT candidate_id, verifier, status, value FROM rewards_all "
                      "ORDER BY candidate_id, verifier").to_pylist()
    return [(r["candidate_id"], r["verifier"], r["status"], None if r["value"] is None else round(r["value"], 9))
            for r in rows]


def _selections(run: Path) -> list[tuple]:
    from avits_core.store.duck import query

    rows = query(run, "SELECT prompt_id, candidate_id, score FROM selections ORDER BY prompt_id").to_pylist()
    return [(r["prompt_id"], r["candidate_id"], round(r["score"], 9)) for r in rows]


@pytest.fixture(scope="module")
def api_url(prefect_harness):
    """The session's temporary Prefect server: the ``avits run`` subprocesses use it (PREFECT_API_URL)
    instead of each starting a private one (most of a case's time on a loaded machine)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.mark.parametrize("method", list(CASES))
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path, method, api_url):
    from avits_core.config import load_config
    from avits_core.runner.loop import run as run_library
    from avits_core.store.duck import query

    # the oracle: the same config, uninterrupted, through the library runner (no Prefect), another run id
    straight = tmp_path / "runs" / "straight"
    run_library(load_config(_cfg(tmp_path, method, "straight")), check_models=False)
    want_c, want_r, want_s = _candidates(straight), _rewards(straight), _selections(straight)
    n_cand = len(want_c)
    _, per_prompt, nfe = CASES[method]
    assert n_cand == 2 * per_prompt and len(want_s) == 2
    assert query(straight, "SELECT sum(nfe_own) n FROM candidates").to_pylist()[0]["n"] == 2 * nfe
    assert len(want_r) == 2 * n_cand and all(r[2] == "ok" for r in want_r)

    path = _cfg(tmp_path, method, "killme")
    run = tmp_path / "runs" / "killme"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "ph"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="240", HF_HUB_OFFLINE="1",
               PREFECT_API_URL=api_url, AVITS_SCORE_FLUSH_ROWS="1")  # a reward part file per scored row
    exe = str(Path(sys.executable).parent / "avits")
    proc = subprocess.Popen([exe, "run", str(path), "-q"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline, killed = time.time() + 300, False
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail("the run finished before it could be killed:\n" + proc.stdout.read()[-3000:])
            if run.exists() and any((run / "rewards").glob("part-*.parquet")):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                killed = True
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert killed, "scoring never started"

    # the kill provably landed mid-run
    assert json.loads((run / "run.json").read_text())["status"] != "completed"
    got_before = _candidates(run)
    assert 0 < len(got_before) < n_cand, f"{len(got_before)} of {n_cand} candidates stored at the kill"
    assert not (run / "selections").exists() or not any((run / "selections").glob("part-*.parquet"))
    parts_before = {p: p.stat().st_mtime_ns for t in ("candidates", "rewards") for p in (run / t).glob("part-*.parquet")}

    again = subprocess.run([exe, "run", str(path), "-q"], env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=400)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"

    # nothing stored before the kill was rewritten, regenerated or rescored
    for p, mtime in parts_before.items():
        assert p.stat().st_mtime_ns == mtime, f"{p.name} rewritten"
    assert set(got_before) <= set(_candidates(run))
    # no lost, duplicated or different rows: equal to the uninterrupted run
    assert _candidates(run) == want_c
    assert _rewards(run) == want_r  # one ok row per (candidate, verifier), same values
    assert _selections(run) == want_s
