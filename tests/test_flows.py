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


class _AtOnce:
    """Counts how many of the wrapped calls run at once (``most``) and in all (``calls``); each wrapped call
    holds ``hold_s`` first, so that calls parallel threads make overlap when nothing bounds them."""

    def __init__(self, hold_s: float):
        import threading

        self.hold_s, self.lock, self.now, self.most, self.calls = hold_s, threading.Lock(), 0, 0, 0

    def wrap(self, real):
        import time

        real = getattr(real, "_real", real)  # an earlier wrapper of these tests: its original

        def wrapped(*a, **kw):
            with self.lock:
                self.now += 1
                self.calls += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(self.hold_s)
                return real(*a, **kw)
            finally:
                with self.lock:
                    self.now -= 1

        wrapped._real = real
        return wrapped


class _Concurrency(_AtOnce):
    """The run's generation and scoring calls (``avits_core.runner``, where the tasks look them up at call
    time), each held 0.3 s: how many *tasks* ran at once."""

    def __init__(self, monkeypatch):
        from avits_core import runner

        super().__init__(0.3)
        for name in ("generate_events", "score_rows", "score_verifier"):
            monkeypatch.setattr(runner, name, self.wrap(getattr(runner, name)))


class _WorkAtOnce(_AtOnce):
    """The model and verifier calls inside the tasks (a generation chunk, a verifier's ``score``), each held
    0.2 s: how many *computed* at once."""

    def __init__(self, monkeypatch):
        from avits_core.search import generation
        from avits_core.verifiers.base import Verifier

        super().__init__(0.2)
        monkeypatch.setattr(generation, "_generate_rows", self.wrap(generation._generate_rows))
        monkeypatch.setattr(Verifier, "score", self.wrap(Verifier.score))


def test_runner_workers_bounds_the_task_pool_of_every_flow(tmp_path, prefect_harness, monkeypatch):
    """``runner: {workers: K}`` runs the tasks of ``its``, ``its-shard`` and ``rerank`` on a pool of K threads
    (it used to be ignored for the thread runner, and ``its-shard`` and ``rerank`` ignored the runner block
    altogether: Prefect's default pool ran up to 6 tasks at once while the numeric-thread limit assumed K; on
    2 cores one task at a time spends ~11 % less CPU and ~30 % more wall, issue 17). Unset, Prefect's own
    pool runs the tiny run's 2 generation and 2 scoring tasks of a wave at once. Selections do not depend
    on it."""
    from avits_core import runner
    from avits_core.config import config_from_dict
    from flows.its import its
    from flows.rerank import rerank
    from flows.shards import its_shard

    one = {"runner": {"kind": "thread", "workers": 1}}
    seen = {}
    for label, over in (("default", {}), ("one", one)):
        c = _Concurrency(monkeypatch)
        out = its(config=tiny_config(tmp_path / label, **over))
        seen[f"its {label}"] = (c.most, c.calls, out["run_path"])
        c = _Concurrency(monkeypatch)
        rr = rerank(out["run_path"], verifiers="av_sync,synth_text,quality,av_align")  # 2 of them to score
        seen[f"rerank {label}"] = (c.most, c.calls, rr["selection_id"])
        cfg = config_from_dict(tiny_config(tmp_path / f"shard-{label}", **over))
        runner.prepare_run(cfg)
        c = _Concurrency(monkeypatch)
        its_shard(config=cfg, shard=0, shards=1)
        seen[f"its-shard {label}"] = (c.most, c.calls, None)
    # 2 prompts, 1 prompt per task: 2 generation tasks, then 2 scoring tasks; a rerank runs one scoring task
    # per verifier of its spec (those with every pair stored find them cached)
    assert {k: v[:2] for k, v in seen.items()} == {
        "its default": (2, 4), "rerank default": (4, 4), "its-shard default": (2, 4),
        "its one": (1, 4), "rerank one": (1, 4), "its-shard one": (1, 4)}
    pick = lambda path: query(path, "SELECT prompt_id, candidate_id FROM selections ORDER BY prompt_id, selection_id").to_pylist()
    assert pick(seen["its default"][2]) == pick(seen["its one"][2])
    assert seen["rerank default"][2] == seen["rerank one"][2]



def test_compute_slots_bound_the_work_not_the_task_pool(tmp_path, prefect_harness, monkeypatch):
    """``runner.compute_slots: 1``: Prefect's pool still runs the tiny run's 2 generation and then 2 scoring
    tasks at once, but only one of them generates or scores at a moment (they take turns chunk by chunk);
    a rerank, which runs on the run's stored runner block, too. ``0`` (no bound): both at once. The
    default on a machine is cores // numeric threads (avits_core/threads.py). Selections do not depend
    on it."""
    from avits_core import threads
    from flows.its import its
    from flows.rerank import rerank

    seen = {}
    before = threads.compute_slots()
    try:
        for slots in (1, 0):
            over = {"runner": {"compute_slots": slots}}
            tasks, work = _Concurrency(monkeypatch), _WorkAtOnce(monkeypatch)
            out = its(config=tiny_config(tmp_path / f"s{slots}", **over))
            seen[f"its {slots}"] = (tasks.most, work.most)
            assert threads.compute_slots() == (slots or None)
            tasks, work = _Concurrency(monkeypatch), _WorkAtOnce(monkeypatch)
            rr = rerank(out["run_path"], verifiers="av_sync,synth_text,quality,av_align")  # 2 left to score
            seen[f"rerank {slots}"] = (tasks.most, work.most)
            seen[f"picks {slots}"] = query(out["run_path"], "SELECT prompt_id, candidate_id FROM selections "
                                           "ORDER BY prompt_id, selection_id").to_pylist()
            seen[f"rerank picks {slots}"] = query(out["run_path"], "SELECT prompt_id, candidate_id FROM selections "
                                                  f"WHERE selection_id = '{rr['selection_id']}' ORDER BY prompt_id").to_pylist()
    finally:
        threads.set_compute_slots(before)
    assert {k: v for k, v in seen.items() if "picks" not in k} == {
        "its 1": (2, 1), "rerank 1": (4, 1), "its 0": (2, 2), "rerank 0": (4, 2)}
    assert seen["picks 1"] == seen["picks 0"] and seen["rerank picks 1"] == seen["rerank picks 0"]
