"""The real Prefect flows (its, benchmark) against one temporary Prefect server per session."""

import json
from pathlib import Path

import pytest
import yaml

from avits_core.store import RunStore
from avits_core.store.duck import query
from helpers import tiny_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _parts(run: Path) -> dict[str, list[str]]:
    return {t: sorted(p.name for p in (run / t).glob("part-*.parquet")) for t in ("candidates", "rewards", "selections", "metrics", "arw_trace")}


def test_its_flow_end_to_end_and_rerun_is_a_no_op(tmp_path, prefect_harness):
    from flows.its import its

    out = its(config=tiny_config(tmp_path))
    run = Path(out["run_path"])
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["selection_id"] == out["selection_id"]
    assert set(info["timings"]) >= {"generate", "score:av_sync", "score:synth_text", "select"}
    comp = info["compute"]
    assert comp["nfe_total"] == 4 * 6 and comp["decodes"] == 4  # 6 Euler steps, 1 NFE each (guidance 1)
    assert comp["verifier_calls"] == {"av_sync": 4, "synth_text": 4}
    c = query(run, "SELECT count(*) n, count(DISTINCT candidate_id) u, count(DISTINCT prompt_id) p FROM candidates").to_pylist()[0]
    assert c == {"n": 4, "u": 4, "p": 2}
    mp4s = list((run / "media").rglob("*.mp4"))
    assert len(mp4s) == 4
    r = query(run, "SELECT verifier, count(*) n FROM rewards_all GROUP BY verifier ORDER BY verifier").to_pylist()
    assert r == [{"verifier": "av_sync", "n": 4}, {"verifier": "synth_text", "n": 4}]
    s = query(run, "SELECT prompt_id, candidate_id FROM selections").to_pylist()
    assert len(s) == 2 and all(x["candidate_id"] for x in s)
    tr = query(run, "SELECT count(*) n FROM arw_trace").to_pylist()[0]["n"]
    assert tr == 2 * 2  # one row per verifier per scoring event
    metrics = {m["metric"] for m in query(run, "SELECT DISTINCT metric FROM metrics").to_pylist()}
    assert {"sync_error_ms", "attribute_accuracy", "faithful", "av_sync", "synth_text"} <= metrics
    assert (run / "report" / "report.md").exists() and (run / "report" / "index.html").exists()
    assert (run / "report" / "rewards.svg").exists() and (run / "report" / "arw_sigma.svg").exists()
    names = {row["metric"] for row in out["results"]}
    assert "sync_error_ms" in names

    before = _parts(run)
    mtimes = {p: p.stat().st_mtime_ns for p in mp4s}
    out2 = its(config=tiny_config(tmp_path))
    assert out2["run_path"] == out["run_path"] and out2["selection_id"] == out["selection_id"]
    assert _parts(run) == before  # nothing generated, scored, selected or evaluated twice
    assert {p: p.stat().st_mtime_ns for p in mp4s} == mtimes
    assert json.loads((run / "run.json").read_text())["resumes"] == 1


def test_its_flow_fills_in_a_new_evaluation_verifier_on_rerun(tmp_path, prefect_harness):
    from flows.its import its

    out = its(config=tiny_config(tmp_path, run_id="fill"))
    run = Path(out["run_path"])
    cfg = tiny_config(tmp_path, run_id="fill")
    cfg["evaluation"]["verifiers"] = ["quality"]
    # a changed config cannot silently reuse the folder...
    from avits_core.errors import ConfigError

    with pytest.raises(ConfigError, match="different config"):
        its(config=cfg)
    # ...but the rerank path adds the verifier to the same candidates without regenerating
    from flows.rerank import rerank

    cand_parts = _parts(run)["candidates"]
    res = rerank(str(run), verifiers="av_sync,synth_text,quality")
    assert _parts(run)["candidates"] == cand_parts
    n = query(run, "SELECT count(*) n FROM rewards_all WHERE verifier='quality'").to_pylist()[0]["n"]
    assert n == 4
    assert res["selection_id"] != out["selection_id"]
    # the rerank's report goes to its own folder; the run's report stays
    assert f"report/selections/{res['selection_id']}" in res["report"] and (run / "report" / "report.md").exists()
    # the new verifier gets baseline rows too, so its change is defined
    b = query(run, "SELECT count(*) n FROM metrics WHERE selection_id IS NULL AND metric = 'quality'").to_pylist()[0]
    assert b["n"] == 2
    q = [r for r in res["results"] if r["metric"] == "quality"][0]
    assert q["change"] is not None


def test_benchmark_flow_with_equal_nfe_best_of_n(tmp_path, prefect_harness):
    from flows.benchmark import benchmark

    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    evo = tiny_config(tmp_path, name="tinyevo")
    evo["search"] = {"method": "evosearch", "params": {"evolution_schedule": [0, 3], "population_size_schedule": [2, 2, 2],
                                                      "elite_size": 1, "tournament_ratio": 0.5, "mutation_rate": 0.3}}
    (tmp_path / "evo.yaml").write_text(yaml.safe_dump(evo))
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump({
        "name": "tinybench",
        "configs": [{"path": "evo.yaml", "label": "evo"}, {"path": "tiny.yaml", "label": "bon", "match_nfe": "evo"}],
    }))
    out = benchmark(str(tmp_path / "bench.yaml"))
    labels = {r["label"] for r in out["rows"]}
    assert labels == {"evo", "bon"}
    nfe = {r["label"]: r["nfe_per_prompt"] for r in out["rows"]}
    # evo: 2x6 + 1 child x 6 (k=0) + 1 child x 3 (k=3) = 21 -> Best-of-round(21/6)=Best-of-4 -> 24 NFE/prompt
    assert nfe["bon"] == pytest.approx(6 * round(nfe["evo"] / 6))
    for k in ("parquet", "markdown", "plot"):
        assert Path(out["paths"][k]).exists()
    assert "NFE / prompt" in Path(out["paths"]["markdown"]).read_text()


def test_score_task_takes_event_pairs_and_reads_the_rows_from_the_run_state(tmp_path):
    """The ``score`` task gets (prompt, event) pairs, never candidate rows (Prefect walks every task
    parameter on submit and run: ~0.25 ms per row and scoring task, issue 17); it scores exactly the
    candidates of those events, from this process's run state or, in a fresh process, the tables."""
    import pickle

    from avits_core import runner
    from avits_core.config import config_from_dict
    from tasks import its as t

    ctx = runner.prepare_run(config_from_dict(tiny_config(tmp_path)))
    first, second = ctx.prompts[0].prompt_id, ctx.prompts[1].prompt_id
    t.generate.fn(ctx, [(first, 0), (second, 0)])
    spec = ctx.cfg.verifiers[0].model_dump()
    n = len(ctx.state.event_rows(first, 0))
    assert n > 0
    assert t.score.fn(ctx, spec, [(first, 0)]) == {"scored": n, "errors": 0, "cached": 0}
    other = pickle.loads(pickle.dumps(ctx))  # another process's copy: no state, rebuilt from the tables
    assert other._state is None
    assert t.score.fn(other, spec, [(first, 0), (second, 0)]) == {"scored": n, "errors": 0, "cached": n}
    scored = {r["prompt_id"] for r in query(ctx.store.path, "SELECT DISTINCT prompt_id FROM rewards").to_pylist()}
    assert scored == {first, second}
    # an event never generated (Best-of-N has event 0 only): a loud error, never an empty scoring pass
    with pytest.raises(RuntimeError, match=rf"no stored candidates for \(prompt, event\) \[\('{first}', 1\)\]"):
        t.score.fn(ctx, spec, [(first, 0), (first, 1)])


def test_runner_workers_bounds_the_thread_pool(tmp_path, prefect_harness, monkeypatch):
    """``runner: {workers: K}`` runs the flow's tasks on a pool of K threads (it used to be ignored for the
    thread runner: Prefect's default pool ran up to 6 tasks at once while the numeric-thread limit assumed K;
    on 2 cores one task at a time spends ~11 % less CPU and ~30 % more wall, issue 17); unset, Prefect's
    own pool is kept and no subflow is made. The selections do not depend on it."""
    from flows import its as its_module

    made = []
    real_runner_for = its_module.task_runner_for
    monkeypatch.setattr(its_module, "task_runner_for", lambda cfg: made.append(real_runner_for(cfg)) or made[-1])
    default = its_module.its(config=tiny_config(tmp_path / "a"))
    assert made == []
    one = its_module.its(config={**tiny_config(tmp_path / "b"), "runner": {"kind": "thread", "workers": 1}})
    assert [type(r).__name__ for r in made] == ["ThreadPoolTaskRunner"] and made[0]._max_workers == 1
    assert default["run_path"] != one["run_path"]
    pick = lambda out: query(out["run_path"], "SELECT prompt_id, candidate_id FROM selections ORDER BY prompt_id").to_pylist()
    assert pick(default) == pick(one)
