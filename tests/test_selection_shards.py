"""Per-shard ARW scope (``arw_shards``): the partition, the replay, and a multi-event search run in shards.

Oracles: a shard-scope replay must equal one run-scope replay per shard's prompts (each shard's
state sees only its events); the aggregates an EvoSearch plan ranked its parents by must equal a
replay of the rewards stored up to that event *of the prompt's shard*; two "processes" (two run
contexts, each with its own state) running one shard each, in reverse order, give the tables of one
process running the whole K = 2 run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from avits_core.errors import ConfigError
from avits_core.search.base import candidate_id
from avits_core.selection import SelectionSpec, prompt_shards, replay


def test_prompt_shards_is_the_worker_split():
    from flows.shards import shard_prompt_ids

    ids = [f"p{i}" for i in range(7)]
    assert prompt_shards(ids, 3) == {"p0": 0, "p1": 1, "p2": 2, "p3": 0, "p4": 1, "p5": 2, "p6": 0}
    for k in (1, 2, 3, 5):
        part = prompt_shards(ids, k)
        for s in range(k):
            assert [p for p in ids if part[p] == s] == shard_prompt_ids(ids, s, k)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError, match="shards must be an integer >= 1"):
            prompt_shards(ids, bad)


def test_spec_records_the_scope_and_keeps_run_scope_ids():
    from avits_core.store import make_selection_id

    base = dict(verifiers=["a", "b"], weights=[1, 1], aggregator="arw", params={"max_iter": 5})
    run = SelectionSpec(**base)
    assert "arw_shards" not in run.to_dict()  # run scope: the spec (and id) of before the field existed
    assert run.selection_id == make_selection_id(dict(verifiers=["a", "b"], weights=[0.5, 0.5], aggregator="arw",
                                                      params={"max_iter": 5}, budget=None))
    two = SelectionSpec(**base, arw_shards=2)
    assert two.to_dict()["arw_shards"] == 2 and two.selection_id != run.selection_id
    assert SelectionSpec(**two.to_dict()) == two  # a stored spec JSON round-trips (rerank, analysis)
    for bad in (0, True, "2"):
        with pytest.raises(ConfigError, match="arw_shards must be an integer >= 1"):
            SelectionSpec(**base, arw_shards=bad)


def _bon_tables(n_prompts: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    order = [f"q{i}" for i in range(n_prompts)]
    cands, rewards = [], []
    for pi, pid in enumerate(order):
        for i in range(n):
            cid = candidate_id(pid, 0, i)
            cands.append(dict(prompt_id=pid, candidate_id=cid, generation=0))
            # verifier b's scale drifts over prompts: ARW's sigma after many events differs from a few
            rewards.append(dict(candidate_id=cid, verifier="a", value=float(rng.normal()), event_seq=pi))
            rewards.append(dict(candidate_id=cid, verifier="b", value=float(rng.normal() * (1 + 3 * pi)), event_seq=pi))
    return order, cands, rewards


def test_shard_scope_replay_is_one_run_scope_replay_per_shard():
    order, cands, rewards = _bon_tables(6, 5, seed=3)
    hib = {"a": True, "b": True}
    base = dict(verifiers=["a", "b"], weights=[1, 2], aggregator="arw", params={"max_iter": 10, "lr": 0.2})
    two = replay(SelectionSpec(**base, arw_shards=2), cands, rewards, hib, order)
    run = replay(SelectionSpec(**base), cands, rewards, hib, order)
    picks = {s["prompt_id"]: s["candidate_id"] for s in two.selections}
    assert [s["prompt_id"] for s in two.selections] == order
    for shard in (0, 1):
        mine = order[shard::2]
        sub = replay(SelectionSpec(**base), [c for c in cands if c["prompt_id"] in mine],
                     [r for r in rewards if r["candidate_id"].split("_g")[0] in mine], hib, mine)
        assert {s["prompt_id"]: s["candidate_id"] for s in sub.selections} == {p: picks[p] for p in mine}
        for s in sub.selections:  # the same score: the shard's sigma, not the run's
            got = next(t for t in two.selections if t["prompt_id"] == s["prompt_id"])
            assert got["score"] == pytest.approx(s["score"], rel=1e-12)
        strip = [{k: v for k, v in t.items() if k not in ("selection_id", "arw_shard")} for t in sub.trace]
        assert [{k: v for k, v in t.items() if k not in ("selection_id", "arw_shard")} for t in two.trace
                if t["prompt_id"] in mine] == strip
        # each row says which state wrote it: the shard of its prompt (run scope: the one state, 0)
        assert {t["arw_shard"] for t in two.trace if t["prompt_id"] in mine} == {shard}
        assert {t["arw_shard"] for t in sub.trace} == {0}
    # the trace is in event order over both shards, and the run-scope replay is really another one
    assert [t["event_seq"] for t in two.trace] == sorted(t["event_seq"] for t in two.trace)
    assert [s["score"] for s in run.selections] != pytest.approx([s["score"] for s in two.selections])
    assert {t["arw_shard"] for t in run.trace} == {0}
    assert replay(SelectionSpec(**base, arw_shards=1), cands, rewards, hib, order).selections == run.selections
    with pytest.raises(ConfigError, match="needs every prompt in the prompt order"):
        replay(SelectionSpec(**base, arw_shards=2), cands, rewards, hib, order[:-1])


# --------------------------------------------------------------------------- EvoSearch over a run's tables

PROMPTS = ["a small red ball bounces twice with a high click", "a large blue cube bounces three times over rain",
           "a small green ball bounces once with a low thud", "a large yellow cube bounces twice with a high click"]


def _config(root, **extra):
    from avits_core.config import config_from_dict

    search = dict(method="evosearch", params=dict(evolution_schedule=[0, 3], population_size_schedule=[3, 2, 2],
                                                  elite_size=1, mutation_rate=0.5))
    search.update(extra)
    return config_from_dict(dict(
        name="evo-shards", output_root=str(root), seed=0, generator=dict(name="synth", params=dict(num_steps=6)),
        prompts=dict(source=PROMPTS), search=search,
        verifiers=[dict(name="av_sync"), dict(name="synth_text")],
        aggregator=dict(name="arw", params=dict(optimizer="adam", lr=0.05, max_iter=20)),
        evaluation=dict(oracle=True, verifiers=[]),
    ))


def _run_shard(ctx, shard: int, shards: int, kill_after: int | None = None) -> None:
    """One shard's generation and scoring, as flows/waves.run_waves does it for a shard flow run.
    ``kill_after`` k: stop (as a killed shard would) after generating the k-th wave, before scoring it."""
    from avits_core import runner

    runner.start_search(ctx)
    mine = set([p.prompt_id for p in ctx.prompts][shard::shards])
    done = 0
    for wave in runner.schedule(ctx):
        items = [it for it in wave.items if it[0] in mine]
        if items:
            rows = runner.generate_events(ctx, items)
            done += 1
            if done == kill_after:
                return
            for spec in ctx.all_verifier_specs():
                runner.score_rows(ctx, spec, rows)


@pytest.fixture(scope="module")
def evo_two(tmp_path_factory):
    from avits_core import runner

    out = runner.run(_config(tmp_path_factory.mktemp("one"), arw_shards=2), check_models=False)
    return runner.open_run(out["run_path"]), out


def test_evosearch_plans_from_its_shards_state_and_the_replay_reproduces_it(evo_two):
    from avits_core import runner

    ctx, out = evo_two
    spec = runner.default_spec(ctx.cfg)
    assert spec.arw_shards == 2 and out["selection_id"] == spec.selection_id
    sel = [s for s in ctx.store.read("selections").to_pylist() if s["selection_id"] == spec.selection_id]
    assert json.loads(sel[0]["spec"])["arw_shards"] == 2
    info = ctx.store.read_run_json()
    order = [p.prompt_id for p in ctx.prompts]
    assert info["search"]["arw_scope"]["prompt_shard"] == {p: i % 2 for i, p in enumerate(order)}
    cands = ctx.store.read("candidates", ["prompt_id", "candidate_id", "generation"]).to_pylist()
    rewards = runner.ok_rewards(ctx, spec.verifiers)
    hib = runner.higher_is_better(spec.verifiers)
    G = ctx.n_generations
    differs = 0
    for pi, p in enumerate(order):
        for g in range(1, G):
            last = pi * G + g - 1
            plan = runner.read_plan(ctx.store.path, p, g)

            def aggregates(same_shard_only: bool, k: int) -> list[float]:
                keep = [c for c in cands if (c["prompt_id"] == p and c["generation"] < g) or (
                    order.index(c["prompt_id"]) < pi and (not same_shard_only or order.index(c["prompt_id"]) % 2 == pi % 2))]
                ids = {c["candidate_id"] for c in keep}
                res = replay(SelectionSpec(spec.verifiers, spec.weights, spec.aggregator, spec.params, arw_shards=k),
                             keep, [r for r in rewards if r["event_seq"] <= last and r["candidate_id"] in ids], hib, order)
                return [res.aggregates[c] for c in plan.info["pool"]]

            assert plan.info["pool_scores"] == pytest.approx(aggregates(True, 1), rel=1e-12, abs=1e-12)
            assert plan.info["pool_scores"] == pytest.approx(aggregates(False, 2), rel=1e-12, abs=1e-12)
            differs += plan.info["pool_scores"] != pytest.approx(aggregates(False, 1), rel=1e-9)
    assert differs  # run scope would have ranked some pool otherwise: the scope is not a no-op
    # the stored selection is the shard-scope replay of every stored reward
    res = replay(spec, cands, rewards, hib, order)
    assert {s["prompt_id"]: s["candidate_id"] for s in sel} == {s["prompt_id"]: s["candidate_id"] for s in res.selections}


def test_stored_trace_and_report_plot_keep_each_shards_arw_state_apart(evo_two):
    """arw_trace.arw_shard names the state a row belongs to, so one state's sigma is one series in SQL and
    in the report's plot (the two states' events interleave in event_seq: one line through both zigzags)."""
    from avits_core.report.run import _plot_data
    from avits_core.store.duck import query

    ctx, out = evo_two
    order = [p.prompt_id for p in ctx.prompts]
    rows = query(ctx.store.path, "SELECT prompt_id, arw_shard, count(*) n FROM arw_trace WHERE selection_id = ? "
                 "GROUP BY ALL ORDER BY prompt_id", params=[out["selection_id"]]).to_pylist()
    assert [(r["prompt_id"], r["arw_shard"]) for r in rows] == sorted((p, i % 2) for i, p in enumerate(order))
    # one state's fit over its own events: history_n grows by the state's own rewards only
    one = query(ctx.store.path, "SELECT event_seq, history_n FROM arw_trace WHERE selection_id = ? AND arw_shard = 1 "
                "AND verifier = 'av_sync' ORDER BY event_seq", params=[out["selection_id"]]).to_pylist()
    assert [r["history_n"] for r in one] == sorted(r["history_n"] for r in one) and one
    series = _plot_data(ctx, out["selection_id"], [])["arw_sigma.svg"]
    assert sorted(series) == [f"{v} (ARW shard {k})" for v in ("av_sync", "synth_text") for k in (0, 1)]
    assert [len(s["x"]) for s in series.values()] == [2 * ctx.n_generations] * 4  # 2 prompts x G events each
    assert all(s["x"] == sorted(s["x"]) for s in series.values())
    # (a run-scope selection keeps one series per verifier, named by the verifier: tests/test_report_plots.py)


def test_two_processes_one_shard_each_equal_one_process(evo_two, tmp_path):
    from avits_core import runner
    from scale_common import table_rows

    ctx1, _ = evo_two
    cfg = _config(tmp_path, arw_shards=2)
    assert cfg.resolved_run_id() == ctx1.run_id != _config(tmp_path).resolved_run_id()  # K is in the run id
    runner.prepare_run(cfg, check_models=False)
    # the second shard first, "killed" after generating its 4th wave (prompt q3's event 0) before
    # scoring it; then the first shard; then the second again (a restart): each in a context (state,
    # as a process would have) of its own
    for shard, kill in ((1, 4), (0, None), (1, None)):
        _run_shard(runner.open_run(tmp_path / ctx1.run_id), shard, 2, kill_after=kill)
    ctx = runner.open_run(tmp_path / ctx1.run_id)
    runner.select(ctx, runner.default_spec(ctx.cfg))
    for table in ("candidates", "rewards", "selections", "arw_trace"):
        assert table_rows(ctx.store.path, table) == table_rows(ctx1.store.path, table), table
    for p in ctx.prompts:  # the plans, with the aggregates their parents were ranked by
        for g in range(1, ctx.n_generations):
            mine, ref = (runner.read_plan(c.store.path, p.prompt_id, g) for c in (ctx, ctx1))
            assert mine.info["pool_scores"] == pytest.approx(ref.info["pool_scores"], rel=1e-12, abs=1e-12)
            assert mine == ref
    # the same run id with another ARW scope is another config: refused, nothing generated
    with pytest.raises(ConfigError, match="config"):
        runner.prepare_run(_config(tmp_path, arw_shards=4).model_copy(update={"run_id": ctx1.run_id}),
                           check_models=False)


def test_rerank_and_budget_keep_the_runs_arw_scope(evo_two):
    """A rerank with the run's own spec reproduces its selection (same id, shard scope); another verifier
    set keeps the shard scope; a budget curve's specs keep it too."""
    from avits_core import runner
    from avits_core.rerank import rerank_spec

    ctx, out = evo_two
    own = rerank_spec(ctx, None, None, None, None)
    assert own == runner.default_spec(ctx.cfg) and own.selection_id == out["selection_id"]
    other = rerank_spec(ctx, "synth_text", "weighted", None, None)
    assert other.arw_shards == 2 and other.verifiers == ["synth_text"]
    import avits_core.analysis as analysis

    rows = analysis.bon_at_k(analysis.load_run_data(ctx), own, ks=[2])  # `avits budget` (read-only here)
    assert {r["selection_id"] for r in rows} == {SelectionSpec(own.verifiers, own.weights, own.aggregator, own.params,
                                                               budget=2, arw_shards=2).selection_id}
