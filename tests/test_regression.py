"""The restructuring of issue 11 (one search engine for every method, the runner split by job) changes
no number: the demo and the EvoSearch demo, re-run at library level, give the selections, metrics,
candidates (ids, seeds, NFE, lineage) and NFE totals recorded BEFORE the change.

``tests/data/regression_before.json`` was recorded with the code of commit d628798 (the old
``runner.py`` / ``evo_runner.py``) on reduced prompt counts (demo: 4 prompts x Best-of-8; EvoSearch
demo preset: 3 prompts), each run the way the old flow ran it (generate, score every verifier,
select, evaluate). ``tests/data/regression_full_before.json`` holds the full configs (24 and 8
prompts), ``tests/data/regression_benchmark_before.json`` the two other runs of the nightly benchmark
(EvoSearch demo preset on all 24 prompts, Best-of-9 at its NFE); those comparisons are marked slow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from avits_core import runner
from avits_core.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _run(entry: dict, root: Path) -> dict:
    cfg = load_config(REPO / entry["config"], [f"output_root={root}"] + entry["overrides"])
    out = runner.run(cfg, check_models=False)
    ctx = out["ctx"]
    sel = {r["prompt_id"]: r["candidate_id"] for r in ctx.store.read("selections").to_pylist()
           if r["selection_id"] == out["selection_id"]}
    cands = sorted(ctx.store.read("candidates", ["candidate_id", "seed", "nfe", "nfe_own", "parent_ids", "step"]).to_pylist(),
                   key=lambda r: r["candidate_id"])
    return dict(selection_id=out["selection_id"], selections=sel,
                metrics={r["metric"]: {"baseline": r["baseline"], "selected": r["selected"]} for r in out["results"]},
                nfe_total=ctx.store.read_run_json()["compute"]["nfe_total"],
                candidates=[[c["candidate_id"], c["seed"], c["nfe"], c["nfe_own"], c["parent_ids"], c["step"]] for c in cands])


def _compare(before: dict, after: dict) -> None:
    assert after["selections"] == before["selections"]
    assert after["selection_id"] == before["selection_id"]
    assert after["nfe_total"] == before["nfe_total"]
    assert len(after["candidates"]) == len(before["candidates"])
    for b, a in zip(before["candidates"], after["candidates"]):
        # ids, seeds, nfe, parents, branch step; nfe_own was not stored for Best-of-N before (= nfe now)
        assert (a[0], a[1], a[2], a[4], a[5]) == (b[0], b[1], b[2], b[4], b[5]), (a, b)
        assert a[3] == (b[3] if b[3] is not None else b[2])
    assert set(after["metrics"]) == set(before["metrics"])
    for m, v in before["metrics"].items():
        for k in ("baseline", "selected"):
            assert math.isclose(after["metrics"][m][k], v[k], rel_tol=1e-12, abs_tol=1e-12), (m, k, after["metrics"][m][k], v[k])


@pytest.mark.parametrize("i", [0, 1], ids=["demo-4-prompts", "evosearch-demo-3-prompts"])
def test_reduced_demo_and_evosearch_demo_match_the_recording(i, tmp_path):
    before = json.loads((REPO / "tests/data/regression_before.json").read_text())[i]
    _compare(before, _run(before, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("i", [0, 1], ids=["demo-24-prompts", "evosearch-demo-8-prompts"])
def test_full_demo_and_evosearch_demo_match_the_recording(i, tmp_path):
    path = REPO / "tests/data/regression_full_before.json"
    before = json.loads(path.read_text())[i]
    _compare(before, _run(before, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("i", [0, 1], ids=["benchmark-evosearch-24-prompts", "benchmark-best-of-9"])
def test_benchmark_runs_match_the_recording(i, tmp_path):
    before = json.loads((REPO / "tests/data/regression_benchmark_before.json").read_text())[i]
    _compare(before, _run(before, tmp_path))
