"""Re-ranking a finished run without regenerating: same spec -> same selections, new verifiers
score only the missing pairs, budgets, bad input fails before any work, the vectorised replay
equals the straightforward one, the real flow, and the CLI commands."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from avits_core import analysis, runner
from avits_core.aggregate import get_aggregator
from avits.cli import app
from avits_core.errors import ConfigError, UnknownNameError
from avits_core.search.base import candidate_id
from avits_core.selection import SelectionSpec, replay
from avits_core.store.duck import query
from avits_core.rerank import missing_pairs, parse_verifiers, prepare_rerank, rerank_spec
from test_analysis import SYNTH_PROMPTS, synth_run

cli = CliRunner()


def _snapshot(run: Path) -> dict[str, str]:
    """relative path -> sha256 of every file in the run folder (media, parts, run.json)."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def _table_parts(run: Path, table: str) -> dict[str, str]:
    return {k: v for k, v in _snapshot(run).items() if k.startswith(table + "/")}


# --------------------------------------------------------------------------- vectorised replay


def reference_replay(spec, candidates, rewards, higher_is_better, prompt_order):
    """The straightforward per-row replay (the implementation before vectorisation), kept as the
    reference the fast one must equal."""
    V = spec.verifiers
    vidx = {v: j for j, v in enumerate(V)}
    by_prompt: dict[str, list[str]] = {}
    gen_of: dict[str, int] = {}
    for c in sorted(candidates, key=lambda c: c["candidate_id"]):
        by_prompt.setdefault(c["prompt_id"], []).append(c["candidate_id"])
        gen_of[c["candidate_id"]] = int(c.get("generation") or 0)
    allowed: dict[str, str] = {}
    for pid, ids in by_prompt.items():
        for cid in ids[: spec.budget] if spec.budget else ids:
            allowed[cid] = pid
    values: dict[str, np.ndarray] = {}
    event_of: dict[str, int] = {}
    for r in rewards:
        cid = r["candidate_id"]
        j = vidx.get(r["verifier"])
        if j is None or cid not in allowed or r.get("value") is None:
            continue
        vec = values.setdefault(cid, np.full(len(V), np.nan))
        val = float(r["value"])
        vec[j] = val if higher_is_better.get(r["verifier"], True) else -val
        event_of[cid] = int(r["event_seq"])
    eligible = {cid for cid, vec in values.items() if np.all(np.isfinite(vec))}
    events: dict[int, list[str]] = {}
    for cid in sorted(eligible):
        events.setdefault(event_of[cid], []).append(cid)
    last_event: dict[str, int] = {}
    for e, ids in events.items():
        pid = allowed[ids[0]]
        last_event[pid] = max(last_event.get(pid, e), e)
    agg = get_aggregator(spec.aggregator, V, spec.weight_map, **spec.params)
    seen: dict[str, list[str]] = {}
    selections: dict[str, tuple] = {}
    aggregates: dict[str, float] = {}
    for e in sorted(events):
        ids = events[e]
        pid = allowed[ids[0]]
        scores = {v: np.array([values[cid][j] for cid in ids]) for v, j in vidx.items()}
        agg.observe(scores, event_seq=e, prompt_id=pid, generation=min(gen_of[cid] for cid in ids))
        seen.setdefault(pid, []).extend(ids)
        if last_event[pid] == e:
            pool = sorted(seen[pid])
            a = agg.combine({v: np.array([values[cid][j] for cid in pool]) for v, j in vidx.items()})
            best = int(np.flatnonzero(a == a.max())[0])
            aggregates.update({cid: float(x) for cid, x in zip(pool, a)})
            selections[pid] = (pool[best], float(a[best]))
    sel = [(pid, *selections.get(pid, (None, None))) for pid in prompt_order if pid in by_prompt]
    return sel, [dict(t, arw_shard=0) for t in agg.trace], aggregates  # run scope: one state, 0


def _messy_tables(rng: np.random.Generator, n_prompts: int, n_gen: int, n_per_gen: int, verifiers: Sequence[str]):
    """EvoSearch-like tables with every irregularity the replay must handle."""
    cands, rewards = [], []
    order = [f"q{i:03d}" for i in range(n_prompts)]
    for pi, pid in enumerate(order):
        for g in range(n_gen):
            for i in range(n_per_gen):
                cid = candidate_id(pid, g, i)
                c = dict(prompt_id=pid, candidate_id=cid)
                if i:  # the first candidate of each generation has no generation key, the others None for 0
                    c["generation"] = g if g else None
                cands.append(c)
                for v in verifiers:
                    u = rng.random()
                    value: Any = float(rng.normal(0, 1 + verifiers.index(v)))
                    if u < 0.04:
                        continue  # no row
                    if u < 0.06:
                        value = None  # a null value
                    elif u < 0.07:
                        value = float("nan")
                    elif u < 0.10:  # a duplicate row for the pair (an earlier value; the later row wins)
                        rewards.append(dict(candidate_id=cid, verifier=v, value=float(rng.normal()),
                                            event_seq=pi * n_gen + g))
                    rewards.append(dict(candidate_id=cid, verifier=v, value=value, event_seq=pi * n_gen + g))
        rewards.append(dict(candidate_id=f"{pid}_ghost", verifier=verifiers[0], value=1.0, event_seq=pi * n_gen))
        rewards.append(dict(candidate_id=candidate_id(pid, 0, 0), verifier="other", value=9.0, event_seq=pi * n_gen))
    return order, cands, rewards


AGGREGATORS = ["weighted", "rank", "minmax", "zscore_candidate", "zscore_history", "arw"]


@pytest.mark.parametrize("aggregator", AGGREGATORS)
@pytest.mark.parametrize("budget", [None, 3])
def test_vectorised_replay_equals_the_reference(aggregator, budget):
    rng = np.random.default_rng([AGGREGATORS.index(aggregator), budget or 0])
    verifiers = ["x", "y", "z"]
    order, cands, rewards = _messy_tables(rng, 12, 3, 4, verifiers)
    rewards = [rewards[i] for i in rng.permutation(len(rewards))]  # scoring tasks write in any order
    hib = {"x": True, "y": False, "z": True}
    spec = SelectionSpec(verifiers, [1.0, 2.0, 0.5], aggregator, {"max_iter": 10} if aggregator == "arw" else {},
                         budget=budget)
    want_sel, want_trace, want_agg = reference_replay(spec, cands, rewards, hib, order[::-1])
    for given in (rewards, {k: [r[k] for r in rewards] for k in ("candidate_id", "verifier", "value", "event_seq")}):
        res = replay(spec, cands, given, hib, order[::-1])
        assert [(s["prompt_id"], s["candidate_id"], s["score"]) for s in res.selections] == want_sel
        assert [{k: v for k, v in t.items() if k != "selection_id"} for t in res.trace] == want_trace
        assert res.aggregates == want_agg
    assert sum(s[1] is not None for s in want_sel) >= 10  # the data leave most prompts selectable


def test_vectorised_replay_accepts_an_arrow_table():
    import pyarrow as pa

    rng = np.random.default_rng(5)
    order, cands, rewards = _messy_tables(rng, 6, 1, 5, ["x", "y"])
    spec = SelectionSpec(["x", "y"], [1, 1], "arw")
    a = replay(spec, pa.Table.from_pylist(cands), pa.Table.from_pylist(rewards), {}, order)
    b = replay(spec, cands, rewards, {}, order)
    assert a.selections == b.selections and a.trace == b.trace and a.aggregates == b.aggregates


# --------------------------------------------------------------------------- rerank with plain functions


def test_rerank_with_the_runs_own_spec_gives_the_online_selections(tmp_path):
    ctx = synth_run(tmp_path)
    run = ctx.store.path
    online_id = json.loads((run / "run.json").read_text())["selection_id"]
    online = {r["prompt_id"]: r["candidate_id"] for r in ctx.store.read("selections").to_pylist()}
    before = _snapshot(run)
    for verifiers, aggregator, params in [
        (None, None, None),
        ("av_sync,synth_text", "arw", None),
        ("synth_text:3,av_sync:3", "arw", None),  # order and scale of relative weights do not matter
    ]:
        spec = rerank_spec(ctx, verifiers, aggregator, params, None)
        assert spec.selection_id == online_id
        assert runner.select(ctx, spec) == online_id
        # the replay itself (not only the stored-selection shortcut) picks the same candidates
        assert analysis.run_spec(analysis.load_run_data(ctx), spec) == online
    assert _snapshot(run) == before  # nothing written: no duplicated selections or traces
    # a fresh copy of the run without its selections replays to the same rows
    fresh = tmp_path / "fresh" / "tiny"
    shutil.copytree(run, fresh)
    for t in ("selections", "arw_trace", "metrics"):
        shutil.rmtree(fresh / t)
    fctx = runner.open_run(fresh)
    assert runner.select(fctx, rerank_spec(fctx, None, None, None, None)) == online_id
    again = {r["prompt_id"]: r for r in fctx.store.read("selections").to_pylist()}
    assert {p: r["candidate_id"] for p, r in again.items()} == online
    old = {r["prompt_id"]: r["score"] for r in ctx.store.read("selections").to_pylist()}
    assert {p: r["score"] for p, r in again.items()} == old
    t_old = sorted((r["event_seq"], r["verifier"], r["sigma"]) for r in ctx.store.read("arw_trace").to_pylist())
    t_new = sorted((r["event_seq"], r["verifier"], r["sigma"]) for r in fctx.store.read("arw_trace").to_pylist())
    assert t_new == t_old


def test_rerank_with_a_new_verifier_scores_only_the_missing_pairs(tmp_path):
    ctx = synth_run(tmp_path)
    run = ctx.store.path
    n = len(ctx.store.candidate_ids())
    # two candidates already have an av_align reward (as if an earlier attempt had died part-way)
    pre = sorted(ctx.store.candidate_ids())[:2]
    ctx.store.append("rewards", [dict(prompt_id=c.split("_")[0], candidate_id=c, verifier="av_align",
                                      verifier_version=str(runner.get_verifier("av_align", {}).version),
                                      value=0.123, status="ok", event_seq=0, generation=0, wall_s=0.0) for c in pre])
    cand_parts, reward_parts = _table_parts(run, "candidates"), _table_parts(run, "rewards")
    rows_before = query(run, "SELECT * FROM rewards_all ORDER BY candidate_id, verifier").to_pylist()

    ctx, spec, vspecs = prepare_rerank(str(run), "av_sync,synth_text,av_align:2", "weighted", None, None)
    assert missing_pairs(ctx, vspecs) == {"av_sync": 0, "synth_text": 0, "av_align": n - 2}
    counts = {vs.name: runner.score_verifier(ctx, vs) for vs in vspecs}
    assert counts["av_align"] == {"scored": n - 2, "errors": 0, "cached": 2}
    assert counts["av_sync"]["scored"] == counts["synth_text"]["scored"] == 0

    assert _table_parts(run, "candidates") == cand_parts  # candidates byte-identical, same parts
    after_parts = _table_parts(run, "rewards")
    assert {k: v for k, v in after_parts.items() if k in reward_parts} == reward_parts  # old parts untouched
    rows_after = query(run, "SELECT * FROM rewards_all ORDER BY candidate_id, verifier").to_pylist()
    assert len(rows_after) == len(rows_before) + n - 2
    key = lambda r: (r["candidate_id"], r["verifier"], r["value"], r["scored_at"])  # noqa: E731
    assert {key(r) for r in rows_before} <= {key(r) for r in rows_after}
    new = [r for r in rows_after if key(r) not in {key(x) for x in rows_before}]
    assert {r["verifier"] for r in new} == {"av_align"} and not {r["candidate_id"] for r in new} & set(pre)
    assert {r["value"] for r in rows_after if r["candidate_id"] in pre and r["verifier"] == "av_align"} == {0.123}

    online_id = json.loads((run / "run.json").read_text())["selection_id"]
    sel = runner.select(ctx, spec)
    assert sel == spec.selection_id != online_id
    runner.evaluate(ctx, sel)
    res = {r["metric"]: r for r in runner.results_table(ctx, sel)}
    assert res["av_align"]["selected"] is not None and res["av_align"]["held_out"] is False
    assert res["sync_error_ms"]["held_out"] is True and res["sync_error_ms"]["selected"] is not None
    rows = [r for r in ctx.store.read("selections").to_pylist() if r["selection_id"] == sel]
    assert len(rows) == len(SYNTH_PROMPTS) and rows[0]["weights"] == pytest.approx([0.25, 0.25, 0.5])
    # scoring again is a no-op
    assert all(runner.score_verifier(ctx, vs)["scored"] == 0 for vs in vspecs)


def test_rerank_with_a_budget(tmp_path):
    ctx = synth_run(tmp_path)
    spec = rerank_spec(ctx, None, None, None, 2)
    assert spec.budget == 2 and spec.selection_id != runner.default_spec(ctx.cfg).selection_id
    sel = runner.select(ctx, spec)
    rows = [r for r in ctx.store.read("selections").to_pylist() if r["selection_id"] == sel]
    assert len(rows) == 3 and all(r["budget"] == 2 for r in rows)
    assert all(r["candidate_id"][-4:] in ("c000", "c001") for r in rows)
    runner.evaluate(ctx, sel)
    res = {r["metric"]: r for r in runner.results_table(ctx, sel)}
    bon = analysis.bon_at_k(analysis.load_run_data(ctx), runner.default_spec(ctx.cfg), ks=[2])
    for r in bon:
        assert res[r["metric"]]["selected"] == pytest.approx(r["value"], abs=1e-12)
    # a budget above the number of candidates means all of them
    big = rerank_spec(ctx, None, None, None, 99)
    picks = analysis.run_spec(analysis.load_run_data(ctx), big)
    assert picks == {r["prompt_id"]: r["candidate_id"] for r in ctx.store.read("selections").to_pylist()
                     if r["selection_id"] == runner.default_spec(ctx.cfg).selection_id}


@pytest.mark.parametrize(
    "kw, exc, needle",
    [
        (dict(verifiers="av_sync,nope"), UnknownNameError, "unknown verifier 'nope'"),
        (dict(aggregator="median"), UnknownNameError, "unknown aggregator 'median'"),
        (dict(verifiers="av_sync:abc"), ConfigError, "weight of 'av_sync' in 'av_sync:abc' is not a number"),
        (dict(verifiers="av_sync:-1,synth_text"), ConfigError, "weights must be finite, >= 0"),
        (dict(verifiers="av_sync:0"), ConfigError, "not all 0"),
        (dict(verifiers="av_sync:nan"), ConfigError, "weights must be finite"),
        (dict(verifiers=":2"), ConfigError, "no verifier name"),
        (dict(verifiers="av_sync,av_sync"), ConfigError, "twice"),
        (dict(budget=0), ConfigError, "budget must be >= 1"),
        (dict(budget=1.5), ConfigError, "budget must be an integer"),
        (dict(params={"bogus": 1}), ConfigError, "bogus"),
        (dict(aggregator="zscore"), ConfigError, "zscore: needs parameter stats"),
        (dict(aggregator="arw", params={"lr": -1}), ConfigError, "lr must be > 0"),
    ],
)
def test_bad_rerank_input_fails_before_any_work(tmp_path, kw, exc, needle):
    ctx = synth_run(tmp_path)
    before = _snapshot(ctx.store.path)
    with pytest.raises(exc, match=needle):
        prepare_rerank(str(ctx.store.path), **kw)
    assert _snapshot(ctx.store.path) == before


def test_rerank_of_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is not a run folder"):
        prepare_rerank(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="is not a run folder"):
        prepare_rerank(str(tmp_path / "missing"))


def test_parse_verifiers():
    assert parse_verifiers("a, b:2 ,c:0.5,") == (["a", "b", "c"], [1.0, 2.0, 0.5])
    assert parse_verifiers(["a:3"]) == (["a"], [3.0])
    with pytest.raises(ConfigError, match="empty"):
        parse_verifiers(" , ")


# --------------------------------------------------------------------------- the real flow


@pytest.mark.slow
def test_rerank_flow_end_to_end(tmp_path, prefect_harness):
    from flows.rerank import rerank

    ctx = synth_run(tmp_path)
    run = ctx.store.path
    cand = _table_parts(run, "candidates")
    media = {k: v for k, v in _snapshot(run).items() if k.startswith("media/")}
    out = rerank(str(run), verifiers="av_sync,synth_text:2,av_align", aggregator="rank", budget=3)
    assert out["scored"]["av_align"] == {"scored": 12, "errors": 0, "cached": 0}
    assert out["scored"]["av_sync"]["scored"] == 0 and out["scored"]["av_sync"]["cached"] == 12
    sel = out["selection_id"]
    assert sel == SelectionSpec(["av_sync", "synth_text", "av_align"], [1, 2, 1], "rank", budget=3).selection_id
    rows = [r for r in ctx.store.read("selections").to_pylist() if r["selection_id"] == sel]
    assert len(rows) == 3 and all(r["candidate_id"][-4:] in ("c000", "c001", "c002") for r in rows)
    assert {r["metric"] for r in out["results"]} >= {"av_align", "sync_error_ms", "faithful"}
    assert Path(out["report"]).exists()
    assert _table_parts(run, "candidates") == cand
    assert {k: v for k, v in _snapshot(run).items() if k.startswith("media/")} == media
    out2 = rerank(str(run), verifiers="av_sync,synth_text:2,av_align", aggregator="rank", budget=3)
    assert out2["selection_id"] == sel and out2["scored"]["av_align"]["scored"] == 0
    assert len([r for r in ctx.store.read("selections").to_pylist() if r["selection_id"] == sel]) == 3


# --------------------------------------------------------------------------- CLI


def test_cli_budget_ablate_diagnose_sql(tmp_path):
    ctx = synth_run(tmp_path)
    run = str(ctx.store.path)
    spec_id = runner.default_spec(ctx.cfg).selection_id
    out = ctx.store.path / "analysis"

    res = cli.invoke(app, ["budget", run])
    assert res.exit_code == 0, res.output
    for ext in ("parquet", "md", "svg"):
        assert (out / f"budget-{spec_id}.{ext}").exists()
    t = pq.read_table(out / f"budget-{spec_id}.parquet").to_pylist()
    assert sorted({r["k"] for r in t}) == [1, 2, 3, 4] and {r["spec_id"] for r in t} == {spec_id}
    assert "| k | NFE/prompt |" in (out / f"budget-{spec_id}.md").read_text()
    res = cli.invoke(app, ["sql", run, "-c", "bon_at_k", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert sorted({r["budget"] for r in json.loads(res.output) if r["budget"]}) == [1, 2, 3, 4]

    res = cli.invoke(app, ["ablate", run, "--aggregators", "weighted,arw"])
    assert res.exit_code == 0, res.output
    t = pq.read_table(out / "ablation.parquet")
    assert t.num_rows == 3 * 2 * len(analysis.load_run_data(ctx).metrics)
    md = (out / "ablation.md").read_text()
    assert "| (baseline) |" in md and "| av_sync+synth_text | arw |" in md
    res = cli.invoke(app, ["sql", run, "-c", "ablation", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)) == 6

    res = cli.invoke(app, ["diagnose", run])
    assert res.exit_code == 0, res.output
    assert "hacking gap" in res.output and "Pareto front" in res.output
    d = json.loads((out / f"diagnostics-{spec_id}.json").read_text())
    assert d["selection_id"] == spec_id and d["selected_on_pareto_front"] == 1.0
    res = cli.invoke(app, ["diagnose", run, "--all"])
    assert res.exit_code == 0, res.output
    assert pq.read_table(out / "diagnostics.parquet").num_rows == 1 + 4  # online + the recorded budgets
    res = cli.invoke(app, ["diagnose", run, "--selection", spec_id, "--aggregator", "rank"])
    assert res.exit_code == 2 and "do not combine" in res.output

    res = cli.invoke(app, ["sql", run, "-c", "winners", "--format", "json"])
    assert res.exit_code == 0, res.output
    winners = json.loads(res.output)
    online = {r["candidate_id"] for r in ctx.store.read("selections").to_pylist() if r["selection_id"] == spec_id}
    assert online <= {w["candidate_id"] for w in winners if w["selection_id"] == spec_id}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--verifiers", "nope"], "unknown verifier 'nope'"),
        (["--aggregator", "median"], "unknown aggregator 'median'"),
        (["--budget", "0"], "budget must be >= 1"),
        (["--verifiers", "av_sync:x"], "is not a number"),
        (["--param", "bogus=1"], "bogus"),
    ],
)
def test_cli_rerank_bad_input_exits_2_and_writes_nothing(tmp_path, args, needle):
    ctx = synth_run(tmp_path)
    before = _snapshot(ctx.store.path)
    res = cli.invoke(app, ["rerank", str(ctx.store.path), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert _snapshot(ctx.store.path) == before


def test_cli_analysis_commands_on_bad_input(tmp_path):
    res = cli.invoke(app, ["rerank", str(tmp_path)])
    assert res.exit_code == 2 and "not a run folder" in res.output
    for cmd in ("budget", "ablate", "diagnose"):
        res = cli.invoke(app, [cmd, str(tmp_path / "nope")])
        assert res.exit_code == 2 and "not a run folder" in res.output, cmd
    ctx = synth_run(tmp_path)
    res = cli.invoke(app, ["budget", str(ctx.store.path), "--verifiers", "av_align"])
    assert res.exit_code == 2 and "no rewards for verifier(s) ['av_align']" in res.output
    res = cli.invoke(app, ["ablate", str(ctx.store.path), "--aggregators", "weighted,nope"])
    assert res.exit_code == 2 and "unknown aggregator 'nope'" in res.output
    res = cli.invoke(app, ["diagnose", str(ctx.store.path), "--selection", "nope"])
    assert res.exit_code == 2 and "no selection 'nope'" in res.output
    assert not (ctx.store.path / "analysis").exists()
