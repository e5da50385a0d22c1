"""Analysis of finished runs: BoN@k, ablations, diagnostics, canned queries, edge cases.

Two kinds of runs: hand-made stores (exact, chosen reward values; no media) and one real tiny
SynthAV run (3 prompts x 4 candidates, generated and scored once per session, copied per test).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from avits_core import analysis, runner
from avits_core.config import config_from_dict, load_config
from avits_core.errors import ConfigError
from avits_core.report.analysis import plot_bon_at_k
from avits_core.report.format import markdown_table, write_rows
from avits_core.search.base import candidate_id
from avits_core.selection import SelectionSpec
from avits_core.store import RunStore, connect
from avits_core.store.queries import ablation as canned_ablation, bon_at_k as canned_bon_at_k

REPO = Path(__file__).resolve().parents[1]
ALL_AGGREGATORS = ["weighted", "rank", "minmax", "zscore_candidate", "zscore_history", "arw", "zscore"]
SYNTH_PROMPTS = [
    "a small red ball bounces twice with a high beep over rain",
    "a large blue cube bounces three times with a low click",
    "a small green ball bounces once with a low thud",
]

# --------------------------------------------------------------------------- run builders


def make_run(root: Path, scores: Sequence[dict[str, list[Any]]], *, verifiers: Sequence[str] = ("av_align", "av_sync"),
             weights: Sequence[float] | None = None, aggregator: str = "weighted", params: dict | None = None,
             nfe: int = 20, run_id: str = "hand") -> runner.RunContext:
    """A run folder with hand-made tables. ``scores[i][verifier]`` lists the rewards of prompt i's
    candidates: a number (ok row), None (no row at all) or "error" (an error row)."""
    n = max(len(next(iter(s.values()))) for s in scores)
    cfg = config_from_dict(dict(
        name="hand", run_id=run_id, output_root=str(root), generator=dict(name="synth"),
        prompts=dict(source=[f"prompt {i} a red ball bounces" for i in range(len(scores))]),
        search=dict(method="best_of_n", n=n),
        verifiers=[dict(name=v, weight=(weights[j] if weights else 1.0)) for j, v in enumerate(verifiers)],
        aggregator=dict(name=aggregator, params=params or {}),
        evaluation=dict(oracle=False, verifiers=[]),
    ))
    store = RunStore(root, run_id).create()
    store.write_run_json(dict(run_id=run_id, status="completed", config=cfg.model_dump(mode="json"),
                              config_hash=cfg.config_hash(), n_prompts=len(scores), timings={}))
    cands, rews = [], []
    for pi, per_v in enumerate(scores):
        pid = f"p{pi:04d}"
        m = len(next(iter(per_v.values())))
        for j in range(m):
            cid = candidate_id(pid, 0, j)
            cands.append(dict(prompt_id=pid, prompt_index=pi, prompt_text=f"prompt {pi}", candidate_id=cid,
                              search="best_of_n", generation=0, step=0, seed=j, generator="synth", nfe=nfe,
                              media_path=f"media/{cid}.mp4"))
            for v, vals in per_v.items():
                x = vals[j]
                if x is None:
                    continue
                row = dict(prompt_id=pid, candidate_id=cid, verifier=v, verifier_version="1", event_seq=pi,
                           generation=0, wall_s=0.0)
                row.update(dict(value=None, status="error", error="RuntimeError: boom") if x == "error"
                           else dict(value=float(x), status="ok"))
                rews.append(row)
    store.append("candidates", cands)
    store.append("rewards", rews)
    return runner.open_run(store.path)


_TEMPLATE: dict[str, Path] = {}


def synth_run_template() -> Path:
    """A finished tiny SynthAV run (3 prompts x 4 candidates, av_sync + synth_text guided by ARW,
    quality held out), built once per session; copy it before writing into it."""
    if "path" not in _TEMPLATE:
        root = Path(tempfile.mkdtemp(prefix="avits-test-analysis-"))
        atexit.register(shutil.rmtree, root, True)
        cfg = load_config(REPO / "tests/data/tiny.yaml", [
            f"output_root={root}", "run_id=tiny", "search.n=4", "evaluation.verifiers=[quality]",
            "prompts.source=" + json.dumps(SYNTH_PROMPTS)])
        ctx = runner.prepare_run(cfg)
        runner.generate_shard(ctx, ctx.prompts)
        for spec in ctx.all_verifier_specs():
            runner.score_verifier(ctx, spec)
        sel = runner.select(ctx)
        runner.evaluate(ctx, sel)
        runner.finish_run(ctx, selection_id=sel)
        _TEMPLATE["path"] = ctx.store.path
    return _TEMPLATE["path"]


def synth_run(tmp_path: Path) -> runner.RunContext:
    dst = tmp_path / "runs" / "tiny"
    shutil.copytree(synth_run_template(), dst)
    return runner.open_run(dst)


def _results(ctx: runner.RunContext, sel: str) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in runner.results_table(ctx, sel)}


# --------------------------------------------------------------------------- BoN@k


def test_bon_at_k_ends_at_the_online_selection_starts_at_the_baseline_and_nfe_is_linear(tmp_path):
    ctx = synth_run(tmp_path)
    data = analysis.load_run_data(ctx)
    spec = runner.default_spec(ctx.cfg)
    rows = analysis.bon_at_k(data, spec)
    assert sorted({r["k"] for r in rows}) == [1, 2, 3, 4]
    res = _results(ctx, spec.selection_id)  # the online run's stored evaluation
    at = {(r["k"], r["metric"]): r for r in rows}
    for m, r in res.items():
        assert at[(4, m)]["value"] == pytest.approx(r["selected"], abs=1e-12), m
        assert at[(1, m)]["value"] == pytest.approx(r["baseline"], abs=1e-12), m
    # k = N picks exactly the stored selections
    stored = {s["prompt_id"]: s["candidate_id"] for s in ctx.store.read("selections").to_pylist()}
    full = SelectionSpec(spec.verifiers, spec.weights, spec.aggregator, spec.params, budget=4)
    assert analysis.run_spec(data, full) == stored
    nfe = {r["k"]: r["nfe_per_prompt"] for r in rows}
    per_candidate = ctx.cfg.generator.params["num_steps"]  # SynthAV: one NFE per Euler step
    assert nfe == {k: k * per_candidate for k in (1, 2, 3, 4)}
    assert len({r["selection_id"] for r in rows}) == 4
    assert {r["metric"] for r in rows if r["guided"]} == {"av_sync", "synth_text"}
    assert {"sync_error_ms", "faithful", "quality"} <= {r["metric"] for r in rows if r["held_out"]}


def test_bon_at_k_picks_only_among_the_first_k(tmp_path):
    # rewards rise with the candidate index: BoN@k must pick candidate k-1
    ctx = make_run(tmp_path, [{"av_align": [0.1, 0.2, 0.3, 0.4], "av_sync": [0.0, 0.0, 0.0, 0.0]}] * 2)
    data = analysis.load_run_data(ctx)
    spec = SelectionSpec(["av_align"], [1.0], "weighted")
    rows = analysis.bon_at_k(data, spec, ks=[1, 2, 3, 4, 9])
    got = {r["k"]: r["value"] for r in rows if r["metric"] == "av_align"}
    assert got == pytest.approx({1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4, 9: 0.4})
    assert {r["k"]: r["nfe_per_prompt"] for r in rows} == {1: 20, 2: 40, 3: 60, 4: 80, 9: 80}
    with pytest.raises(ConfigError, match="budgets must be integers >= 1"):
        analysis.bon_at_k(data, spec, ks=[0])
    wide = analysis.budget_wide(rows)
    assert [w["k"] for w in wide] == [1, 2, 3, 4, 9] and wide[1]["av_align"] == pytest.approx(0.2)
    import xml.etree.ElementTree as ET

    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # an older avits's plot of the same name
    svg_path = plot_bon_at_k(rows, tmp_path / "b.svg", title="t")
    assert not (tmp_path / "b.png").exists()
    root = ET.parse(svg_path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    metrics = list(wide[0])[2:]
    # one line per metric against k and one against NFE per prompt, a dot per k
    assert len(list(root.iter(f"{ns}polyline"))) == 2 * len(metrics)
    assert len(list(root.iter(f"{ns}circle"))) == 2 * len(metrics) * 5
    line = list(root.iter(f"{ns}polyline"))[metrics.index("av_align")]  # against k: rises to k = 4, flat to 9
    ys = [float(p.split(",")[1]) for p in line.get("points").split()]
    assert ys[0] > ys[1] > ys[2] > ys[3] and ys[3] == pytest.approx(ys[4])  # SVG y grows downwards


# --------------------------------------------------------------------------- ablations


def _random_scores(rng, n_prompts: int, n: int, verifiers: Sequence[str]) -> list[dict[str, list[float]]]:
    return [{v: list(np.round(rng.normal(0, 1, n), 6)) for v in verifiers} for _ in range(n_prompts)]


def test_ablate_rows_and_single_verifier_subsets_select_that_verifiers_argmax(tmp_path):
    vers = ["av_align", "av_sync", "synth_text"]
    scores = _random_scores(np.random.default_rng(0), 5, 6, vers)
    ctx = make_run(tmp_path, scores, verifiers=vers, weights=[2.0, 1.0, 1.0], aggregator="arw",
                   params=dict(lr=0.05, max_iter=20))
    data = analysis.load_run_data(ctx)
    rows = analysis.ablate(data, vers)
    n_aggs = len(analysis.DEFAULT_AGGREGATORS)
    assert len(rows) == (2 ** 3 - 1) * n_aggs * 3  # subsets x aggregators x metrics
    assert len({(r["verifiers"], r["aggregator"]) for r in rows}) == 7 * n_aggs
    for v in vers:
        best = np.mean([max(s[v]) for s in scores])
        for r in rows:
            if r["verifiers"] == v and r["metric"] == v:
                assert r["selected"] == pytest.approx(best), (v, r["aggregator"])
                assert r["guided"] and not r["held_out"] and r["norm_gain"] > 0
    # the full set with the run's own aggregator, weights and params is the online spec
    full_arw = {r["selection_id"] for r in rows if r["verifiers"] == "+".join(vers) and r["aggregator"] == "arw"}
    assert full_arw == {runner.default_spec(ctx.cfg).selection_id}
    summary = analysis.ablation_summary(data, rows)
    assert summary[0]["verifiers"] == "(baseline)" and len(summary) == 1 + 7 * n_aggs
    for s in summary[1:]:
        if s["verifiers"] == "+".join(vers):  # no oracle and no verifier left out: nothing held out
            assert s["held_out_gain"] is None and s["hacking_gap"] is None
        else:
            assert s["hacking_gap"] == pytest.approx(s["guided_gain"] - s["held_out_gain"])
    with pytest.raises(ConfigError, match="no rewards for verifier"):
        analysis.ablate(data, ["av_align", "quality"])
    with pytest.raises(ConfigError, match="zscore: needs parameter stats"):
        analysis.ablate(data, vers, ["zscore"])


def test_ablation_full_set_reproduces_the_online_run_and_canned_query_matches(tmp_path):
    ctx = synth_run(tmp_path)
    data = analysis.load_run_data(ctx)
    rows = analysis.ablate(data, ["av_sync", "synth_text"])
    assert len(rows) == 3 * len(analysis.DEFAULT_AGGREGATORS) * len(data.metrics)
    online = _results(ctx, runner.default_spec(ctx.cfg).selection_id)
    for r in rows:
        if r["verifiers"] == "av_sync+synth_text" and r["aggregator"] == "arw":
            assert r["selected"] == pytest.approx(online[r["metric"]]["selected"], abs=1e-12)
            assert r["baseline"] == pytest.approx(online[r["metric"]]["baseline"], abs=1e-12)
    con = connect(ctx.store.path)
    empty = canned_ablation(con)  # no ablation file yet: no rows, the same columns
    assert empty.num_rows == 0 and "hacking_gap" in empty.column_names
    write_rows(rows, ctx.store.path / "analysis" / "ablation.parquet")
    got = {(r["verifiers"], r["aggregator"]): r for r in canned_ablation(con).to_pylist()}
    summary = analysis.ablation_summary(data, rows)[1:]
    assert len(got) == len(summary)
    for s in summary:
        g = got[(s["verifiers"], s["aggregator"])]
        assert g["run_id"] == "tiny" and g["n_prompts"] == 3
        for k in ("guided_gain", "held_out_gain", "hacking_gap"):
            assert g[k] == pytest.approx(s[k], abs=1e-12) if s[k] is not None else g[k] is None
    # over the runs root as well
    root_rows = canned_ablation(connect(ctx.store.path.parent)).to_pylist()
    assert len(root_rows) == len(summary)
    con.close()


# --------------------------------------------------------------------------- diagnostics


def test_diagnostics_on_the_synth_run(tmp_path):
    ctx = synth_run(tmp_path)
    data = analysis.load_run_data(ctx)
    spec = runner.default_spec(ctx.cfg)
    d = analysis.diagnostics(data, spec)
    assert d["selection_id"] == spec.selection_id
    online = _results(ctx, spec.selection_id)
    gains = {g["metric"]: g for g in d["gains"]}
    assert set(gains) == set(online)
    for m, g in gains.items():
        assert g["change"] == pytest.approx(online[m]["change"], abs=1e-12)
        assert g["guided"] == (m in spec.verifiers) and g["oracle"] == (m in data.oracle_metrics)
    guided = [gains[v]["norm_gain"] for v in spec.verifiers if gains[v]["norm_gain"] is not None]
    held = [gains[m]["norm_gain"] for m in data.oracle_metrics if gains[m]["norm_gain"] is not None]
    assert d["guided_gain"] == pytest.approx(np.mean(guided))
    assert d["held_out_gain"] == pytest.approx(np.mean(held))
    assert d["hacking_gap"] == pytest.approx(d["guided_gain"] - d["held_out_gain"])
    names = data.verifiers + data.oracle_metrics
    assert len(d["correlations"]) == len(names) * (len(names) - 1) // 2
    for c in d["correlations"]:
        for k in ("pooled", "within_prompt"):
            assert c[k] is None or -1.0 <= c[k] <= 1.0
    assert {c["kind"] for c in d["correlations"]} == {"verifier-verifier", "verifier-oracle", "oracle-oracle"}
    assert len(d["pareto"]) == 3 and d["selected_on_pareto_front"] == 1.0
    for agg in ("weighted", "arw", "rank", "minmax"):
        s = SelectionSpec(spec.verifiers, [1.0, 3.0], agg)
        assert analysis.diagnostics(data, s)["selected_on_pareto_front"] == 1.0, agg
    json.dumps(d)  # serialisable as the CLI writes it


def test_diagnostics_exact_values_on_a_hand_made_run(tmp_path):
    # av_sync = 2 * av_align (rank-identical), synth_text = -av_align: correlations +1 / -1
    a = [[0.1, 0.5, 0.3, 0.9], [0.2, 0.8, 0.4, 0.6], [0.7, 0.1, 0.3, 0.5]]
    scores = [{"av_align": x, "av_sync": [2 * v for v in x], "synth_text": [-v for v in x]} for x in a]
    ctx = make_run(tmp_path, scores, verifiers=["av_align", "av_sync", "synth_text"])
    data = analysis.load_run_data(ctx)
    corr = {(c["a"], c["b"]): c for c in analysis.correlations(data)}
    assert corr[("av_align", "av_sync")]["pooled"] == pytest.approx(1.0)
    assert corr[("av_align", "av_sync")]["within_prompt"] == pytest.approx(1.0)
    assert corr[("av_align", "synth_text")]["pooled"] == pytest.approx(-1.0)
    assert corr[("av_align", "synth_text")]["n_prompts"] == 3
    d = analysis.diagnostics(data, SelectionSpec(["av_align"], [1.0], "weighted"))
    g = {r["metric"]: r for r in d["gains"]}
    # baseline = first candidates (0.1, 0.2, 0.7), selected = the maxima (0.9, 0.8, 0.7)
    assert g["av_align"]["change"] == pytest.approx(np.mean([0.9, 0.8, 0.7]) - np.mean([0.1, 0.2, 0.7]))
    assert g["av_align"]["norm_gain"] == pytest.approx(g["av_align"]["change"] / np.std(sum(a, [])))
    assert g["synth_text"]["norm_gain"] < 0  # the held-out verifier got worse: a hacking gap
    assert d["held_out_gain"] == pytest.approx(np.mean([g["av_sync"]["norm_gain"], g["synth_text"]["norm_gain"]]))
    assert d["hacking_gap"] > 0


def test_a_zero_weight_can_select_off_the_pareto_front(tmp_path):
    # a tie on the weighted verifier goes to the lowest id, which the zero-weight verifier dominates
    ctx = make_run(tmp_path, [{"av_align": [1.0, 1.0, 0.0], "av_sync": [0.0, 1.0, 2.0]}])
    data = analysis.load_run_data(ctx)
    d = analysis.diagnostics(data, SelectionSpec(["av_align", "av_sync"], [1.0, 0.0], "weighted"))
    assert d["pareto"][0]["selected"] == candidate_id("p0000", 0, 0)
    assert d["pareto"][0]["on_front"] is False and d["pareto"][0]["front_size"] == 2
    assert d["selected_on_pareto_front"] == 0.0


def test_stored_specs_and_spec_of_selection(tmp_path):
    ctx = synth_run(tmp_path)
    specs = analysis.stored_specs(ctx)
    assert [s.selection_id for s in specs] == [runner.default_spec(ctx.cfg).selection_id]
    assert analysis.spec_of_selection(ctx, specs[0].selection_id).selection_id == specs[0].selection_id
    with pytest.raises(ConfigError, match="no selection 'nope'"):
        analysis.spec_of_selection(ctx, "nope")
    data = analysis.load_run_data(ctx)
    table = analysis.diagnostics_table(data, specs)
    assert len(table) == 1 and table[0]["selected_on_pareto_front"] == 1.0


def test_canned_bon_at_k_reads_recorded_budget_selections(tmp_path):
    ctx = synth_run(tmp_path)
    data = analysis.load_run_data(ctx)
    spec = runner.default_spec(ctx.cfg)
    con = connect(ctx.store.path)
    online = canned_bon_at_k(con).to_pylist()  # the online selection (no budget) is the point k = N
    assert {(r["k"], r["budget"], r["selection_id"]) for r in online} == {(4, None, spec.selection_id)}
    ids = analysis.record_budget_selections(ctx, spec, [1, 2, 3, 4])
    assert len(set(ids)) == 4 and set(ids) <= ctx.store.selection_ids()
    again = analysis.record_budget_selections(ctx, spec, [1, 2, 3, 4])  # idempotent
    assert again == ids and ctx.store.read("selections").num_rows == 3 * 5
    rows = canned_bon_at_k(con).to_pylist()
    got = {(r["k"], r["metric"]): r for r in rows if r["budget"] is not None}
    for r in online:
        assert r["value"] == pytest.approx(got[(4, r["metric"])]["value"], abs=1e-12)
    want = analysis.bon_at_k(data, spec)
    assert len(got) == len(want)
    for w in want:
        g = got[(w["k"], w["metric"])]
        assert g["value"] == pytest.approx(w["value"], abs=1e-12)
        assert g["nfe_per_prompt"] == pytest.approx(w["nfe_per_prompt"])
        assert g["held_out"] == w["held_out"] and g["selection_id"] == w["selection_id"]
        assert g["aggregator"] == "arw" and g["verifiers"] == "av_sync+synth_text"
    con.close()


# --------------------------------------------------------------------------- edge cases


def _select_all(ctx, verifiers: Sequence[str], stats: dict | None = None) -> dict[str, dict[str, Any]]:
    """runner.select with every aggregator (zscore gets prior stats); agg -> prompt -> selection row."""
    out = {}
    for agg in ALL_AGGREGATORS:
        params = {"stats": stats or {v: {"mean": 0.0, "std": 1.0} for v in verifiers}} if agg == "zscore" else {}
        sid = runner.select(ctx, SelectionSpec(list(verifiers), [1.0] * len(verifiers), agg, params))
        out[agg] = {r["prompt_id"]: r for r in ctx.store.read("selections").to_pylist() if r["selection_id"] == sid}
    return out


def test_constant_scores_select_the_first_candidate_with_every_aggregator(tmp_path):
    ctx = make_run(tmp_path, [{"av_align": [0.5] * 4, "av_sync": [0.2] * 4}, {"av_align": [0.5] * 4, "av_sync": [0.2] * 4}])
    for agg, sel in _select_all(ctx, ["av_align", "av_sync"]).items():
        for pid, row in sel.items():
            assert row["candidate_id"] == candidate_id(pid, 0, 0), agg
            assert np.isfinite(row["score"]), agg
    data = analysis.load_run_data(ctx)
    d = analysis.diagnostics(data, runner.default_spec(ctx.cfg))
    assert all(g["norm_gain"] is None and g["change"] == 0 for g in d["gains"])  # sd 0: no normalised gain
    assert d["guided_gain"] is None and d["hacking_gap"] is None
    assert all(c["pooled"] is None and c["within_prompt"] is None for c in d["correlations"])
    assert d["selected_on_pareto_front"] == 1.0 and d["mean_front_size"] == 4
    assert all(r["change"] == 0 for r in analysis.ablate(data, ["av_align", "av_sync"]))


def test_a_single_candidate_per_prompt(tmp_path):
    ctx = make_run(tmp_path, [{"av_align": [0.3], "av_sync": [0.1]}, {"av_align": [0.9], "av_sync": [-0.4]}])
    for agg, sel in _select_all(ctx, ["av_align", "av_sync"]).items():
        assert [r["candidate_id"] for r in sel.values()] == ["p0000_g00_c000", "p0001_g00_c000"], agg
    data = analysis.load_run_data(ctx)
    rows = analysis.bon_at_k(data, runner.default_spec(ctx.cfg))
    assert {r["k"] for r in rows} == {1}
    d = analysis.diagnostics(data, runner.default_spec(ctx.cfg))
    assert all(g["change"] == 0 for g in d["gains"])
    assert all(c["within_prompt"] is None for c in d["correlations"])  # one candidate: no ranking
    assert [p["front_size"] for p in d["pareto"]] == [1, 1] and d["selected_on_pareto_front"] == 1.0


def test_missing_rewards_policy(tmp_path):
    # p0: c1 has the best av_align but no av_sync row, c2 has an error row -> c3 wins among c0, c3
    # p1: every candidate lacks av_sync -> a null selection; p2 complete
    scores = [
        {"av_align": [0.1, 0.9, 0.8, 0.5], "av_sync": [0.0, None, "error", 0.0]},
        {"av_align": [0.1, 0.2, 0.3, 0.4], "av_sync": [None, None, "error", None]},
        {"av_align": [0.1, 0.2, 0.3, 0.4], "av_sync": [0.0, 0.0, 0.0, 0.0]},
    ]
    ctx = make_run(tmp_path, scores)
    for agg, sel in _select_all(ctx, ["av_align", "av_sync"]).items():
        assert sel["p0000"]["candidate_id"] == "p0000_g00_c003", agg
        assert sel["p0001"]["candidate_id"] is None and sel["p0001"]["score"] is None, agg
        assert sel["p0002"]["candidate_id"] == "p0002_g00_c003", agg
    # a verifier subset that does not need the missing verifier sees every candidate
    data = analysis.load_run_data(ctx)
    picks = analysis.run_spec(data, SelectionSpec(["av_align"], [1.0], "weighted"))
    assert picks == {"p0000": "p0000_g00_c001", "p0001": "p0001_g00_c003", "p0002": "p0002_g00_c003"}
    # BoN@1 of p1 has no eligible candidate: that prompt is left out of the mean (n_prompts 2)
    rows = analysis.bon_at_k(data, runner.default_spec(ctx.cfg), ks=[1])
    assert {r["n_prompts"] for r in rows} == {2}
    d = analysis.diagnostics(data, runner.default_spec(ctx.cfg))
    assert [p["prompt_id"] for p in d["pareto"]] == ["p0000", "p0002"]
    assert d["pareto"][0]["n_eligible"] == 2
    # evaluate skips the null selection
    sid = runner.default_spec(ctx.cfg).selection_id
    runner.evaluate(ctx, sid)
    m = [r for r in ctx.store.read("metrics").to_pylist() if r["selection_id"] == sid]
    assert {r["prompt_id"] for r in m} == {"p0000", "p0002"}


def test_ties_go_to_the_lowest_candidate_id_with_every_aggregator(tmp_path):
    # c1 and c3 tie on both verifiers and beat the others
    scores = [{"av_align": [0.1, 0.7, 0.2, 0.7], "av_sync": [0.0, 0.5, 0.1, 0.5]}] * 3
    ctx = make_run(tmp_path, scores)
    for agg, sel in _select_all(ctx, ["av_align", "av_sync"]).items():
        assert {r["candidate_id"][-4:] for r in sel.values()} == {"c001"}, agg
    # exact aggregate ties between different score vectors, too (weighted: 0.4 + 0.6 = 0.6 + 0.4)
    ctx2 = make_run(tmp_path / "b", [{"av_align": [0.6, 0.4, 0.0], "av_sync": [0.4, 0.6, 0.0]}])
    data = analysis.load_run_data(ctx2)
    assert analysis.run_spec(data, SelectionSpec(["av_align", "av_sync"], [1, 1], "weighted")) == {"p0000": "p0000_g00_c000"}
    assert analysis.run_spec(data, SelectionSpec(["av_align", "av_sync"], [1, 1], "rank")) == {"p0000": "p0000_g00_c000"}


def test_unscored_verifier_and_output_helpers(tmp_path):
    ctx = make_run(tmp_path, [{"av_align": [0.1, 0.2], "av_sync": [0.3, 0.4]}])
    data = analysis.load_run_data(ctx)
    with pytest.raises(ConfigError, match=r"no rewards for verifier\(s\) \['quality'\]"):
        analysis.bon_at_k(data, SelectionSpec(["quality"], [1.0]))
    with pytest.raises(ConfigError, match="nothing to write"):
        write_rows([], tmp_path / "x.parquet")
    p = write_rows([{"a": 1, "b": None}, {"a": 2, "b": 0.5}], tmp_path / "out" / "x.parquet")
    import pyarrow.parquet as pq

    assert pq.read_table(p).to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": 0.5}]
    md = markdown_table([{"a": 1.234567, "b": None, "c": True, "d": "x|y"}])
    assert md.splitlines()[2] == "| 1.235 | – | yes | x\\|y |"


def test_ablation_specs_use_equal_weights_for_evaluation_only_verifiers(tmp_path):
    ctx = make_run(tmp_path, [{"av_align": [0.1, 0.2], "av_sync": [0.3, 0.4], "quality": [0.5, 0.1]}],
                   verifiers=["av_align", "av_sync"], weights=[3.0, 1.0])
    data = analysis.load_run_data(ctx)
    specs = analysis.ablation_specs(data, ["av_align", "av_sync", "quality"], ["weighted"])
    w = {tuple(s.verifiers): s.weights for s in specs}
    assert w[("av_align", "av_sync")] == pytest.approx([0.75, 0.25])
    assert w[("av_align", "quality")] == pytest.approx([0.75, 0.25])  # run weight 3 vs default 1
    assert w[("quality",)] == [1.0]
    assert len(specs) == 7
    with pytest.raises(ConfigError, match="twice"):
        analysis.ablation_specs(data, ["av_align", "av_align"])
