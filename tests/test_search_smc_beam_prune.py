"""SMC (Feynman-Kac steering), latent beam search and Best-of-N with pruning: the three methods that
score clean estimates at intermediate steps (issue 16, part 2).

Hand-checked pieces (systematic resampling, ESS, potentials), parameter errors naming the field,
the engine's intermediate candidates (kind, x0_step, NFE with look-ahead, kept latents), the edge
cases the issue names (a budget of one candidate, all scores equal, a verifier failing on some
candidates, a population larger than the budget), the store-backed run against the in-memory loop
(same candidates, same selection; replay from the tables picks only final candidates; a rerank too),
tiny random LTX-2 at library level, and - slow - ``avits run`` on SynthAV and a resume after SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from avits_core.aggregate import get_aggregator
from avits_core.errors import ConfigError
from avits_core.generators.synth import SynthAVGenerator
from avits_core.prompts import Prompt
from avits_core.registry import SEARCH_METHODS, VERIFIERS
from avits_core.search.base import CandidatePlan, EventPlan, get_search
from avits_core.search.engine import best_of, generate_event
from avits_core.search.memory import run_in_memory
from avits_core.search.smc import effective_sample_size, log_potential, systematic_resample
from avits_core.verifiers.base import Verifier
from helpers import tiny_config, write_config

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [Prompt("pa", "a small red ball bounces three times with a high click over rain"),
           Prompt("pb", "a large blue cube bounces twice with a low beep over wind")]
GUIDED = ["av_align", "av_sync", "synth_text"]


def _verifiers(names=GUIDED):
    return [VERIFIERS.get_class(n)() for n in names]


def _arw(names=GUIDED):
    return get_aggregator("arw", names, {n: 1.0 / len(names) for n in names})


class Constant(Verifier):
    """Test verifier: 0.5 for every clip (all scores equal)."""

    name = "constant"

    def score_clip(self, clip, prompt):
        return 0.5


class Brightness(Verifier):
    """Test verifier: mean pixel value of the clip in [0, 1] (works on any generator's clips)."""

    name = "brightness"

    def score_clip(self, clip, prompt):
        return float(np.asarray(clip.video, dtype=np.float64).mean() / 255.0)


def _fails(seed: int) -> bool:
    return hashlib.blake2b(str(seed).encode(), digest_size=1).digest()[0] % 3 == 0


class FailsOnSome(Verifier):
    """Test verifier: the clip's mean pixel value, but raises on about a third of the seeds."""

    name = "fails_on_some"

    def score_clip(self, clip, prompt):
        if _fails(int(clip.meta["seed"])):
            raise RuntimeError("cannot measure this clip")
        return float(np.asarray(clip.video, dtype=np.float64).mean() / 255.0)


# --------------------------------------------------------------------------- hand-checked pieces


def test_systematic_resampling_by_hand():
    w = [0.1, 0.2, 0.3, 0.4]  # cumulative 0.1 0.3 0.6 1.0
    assert systematic_resample(w, 0.5) == [1, 2, 3, 3]  # positions .125 .375 .625 .875
    assert systematic_resample(w, 0.0) == [0, 1, 2, 3]  # positions 0 .25 .5 .75
    assert systematic_resample([0, 0, 5, 0], 0.3) == [2, 2, 2, 2]
    assert systematic_resample([1, 1], 0.99) == [0, 1]
    rng = np.random.default_rng(0)
    for _ in range(50):  # every index appears floor(K w) or ceil(K w) times (not so for multinomial)
        K = int(rng.integers(1, 12))
        w = rng.random(K) ** 3
        counts = np.bincount(systematic_resample(w, float(rng.random())), minlength=K)
        target = K * w / w.sum()
        assert np.all(counts >= np.floor(target - 1e-9)) and np.all(counts <= np.ceil(target + 1e-9))
    for bad in ([], [0, 0], [1, -1], [1, float("nan")]):
        with pytest.raises(ValueError):
            systematic_resample(bad, 0.5)


def test_ess_and_potentials_by_hand():
    assert effective_sample_size([0.0, 0.0, 0.0, 0.0]) == pytest.approx(4.0)
    assert effective_sample_size([0.0, -np.inf, -np.inf]) == pytest.approx(1.0)
    assert effective_sample_size([-np.inf, -np.inf]) == 0.0
    # weights 1 and 3: (4)^2 / (1 + 9) = 1.6
    assert effective_sample_size([0.0, np.log(3.0)]) == pytest.approx(1.6)
    assert log_potential("diff", 2.0, [1.0, 3.0]) == pytest.approx(4.0)
    assert log_potential("diff", 2.0, [3.0]) == pytest.approx(6.0)  # r_0 = 0
    assert log_potential("max", 2.0, [1.0, 3.0, 2.0]) == pytest.approx(6.0)
    assert log_potential("add", 2.0, [1.0, 3.0, 2.0]) == pytest.approx(12.0)
    assert log_potential("add", 1.0, [None, 3.0, 2.0]) == pytest.approx(5.0)  # a missing ancestor is skipped
    assert log_potential("max", 1.0, [1.0, None]) == -np.inf  # the particle's own reward is missing


def test_registered():
    for name in ("smc", "beam", "prune"):
        assert SEARCH_METHODS.get_class(name).name == name


@pytest.mark.parametrize("method, params, field", [
    ("prune", dict(keep=0.0), "search.params.keep"),
    ("prune", dict(keep=[0.5, 0.5]), "search.params.keep"),
    ("prune", dict(prune_steps=[8, 4]), "search.params.prune_steps[1]"),
    ("prune", dict(n=0), "search.params.n"),
    ("prune", dict(foo=1), "search.params.foo"),
    ("smc", dict(potential="sum"), "search.params.potential"),
    ("smc", dict(noise_scale=0.0), "search.params.noise_scale"),
    ("smc", dict(ess_threshold=1.5), "search.params.ess_threshold"),
    ("smc", dict(particles=0), "search.params.particles"),
    ("smc", dict(resample_steps=[]), "search.params.resample_steps"),
    ("beam", dict(noise_scale=0.0), "search.params.noise_scale"),
    ("beam", dict(beams=0), "search.params.beams"),
    ("beam", dict(beam_steps=[5, 5]), "search.params.beam_steps[1]"),
])
def test_parameter_errors_name_the_field(method, params, field):
    with pytest.raises(ConfigError) as e:
        get_search(method, params)
    assert str(e.value).startswith(field), str(e.value)


@pytest.mark.parametrize("method, params, field", [
    ("prune", dict(n=16, prune_steps=[5], keep=0.5, nfe_budget=160), "search.params.n"),
    ("smc", dict(particles=16, resample_steps=[5, 10], nfe_budget=160), "search.params.particles"),
    ("beam", dict(beams=8, candidates_per_beam=4, beam_steps=[5], nfe_budget=160), "search.params.beams"),
    ("prune", dict(prune_steps=[20]), "search.params.prune_steps[0]"),
    ("smc", dict(resample_steps=[0, 5]), "search.params.resample_steps[0]"),
    ("beam", dict(beam_steps=[5, 25]), "search.params.beam_steps[1]"),
])
def test_population_larger_than_the_budget_or_steps_beyond_the_schedule(method, params, field):
    m = get_search(method, params)
    with pytest.raises(ConfigError) as e:
        m.check_generator(20)
    assert str(e.value).startswith(field), str(e.value)
    if "nfe_budget" in params:
        assert "nfe_budget" in str(e.value)
        get_search(method, dict(params, nfe_budget=m.planned_steps(20))).check_generator(20)  # exactly fits


# --------------------------------------------------------------------------- engine: intermediate candidates


class _Keep:
    def __init__(self):
        self.lat = {}

    def __call__(self, cid, step):
        return self.lat[cid][step]


def test_engine_intermediate_candidates_and_continuation():
    """An intermediate candidate keeps its latent at stop, decodes its look-ahead clean estimate and
    counts its NFE; a continuation from that latent with the ODE is the uninterrupted sample."""
    g = SynthAVGenerator(num_steps=10, guidance=2.0)  # 2 NFE per step
    p = PROMPTS[0]
    keep = _Keep()
    plan0 = EventPlan("pa", 0, [CandidatePlan(seed=7, stop=4, lookahead=3), CandidatePlan(seed=8, stop=4)])
    ge0 = generate_event(g, p, plan0, [], keep)
    r0 = ge0.records
    assert [r.kind for r in r0] == ["intermediate"] * 2 and [r.x0_step for r in r0] == [4, 4]
    assert [r.nfe for r in r0] == [2 * (4 + 3), 2 * (4 + 1)] and [r.nfe_own for r in r0] == [14, 10]
    assert all(set(lat) == {4} for lat in ge0.latents)
    assert int(ge0.latents[0][4].nfe[0]) == 8  # the kept latent does not carry the estimate's cost
    for r, lat in zip(r0, ge0.latents):
        keep.lat[r.candidate_id] = lat
    plan1 = EventPlan("pa", 1, [CandidatePlan(seed=7, parent=r0[0].candidate_id, step=4, mutation={"rule": "continue"})])
    ge1 = generate_event(g, p, plan1, [], keep)
    (r1,) = ge1.records
    assert r1.kind == "final" and r1.x0_step is None and r1.nfe == 20 and r1.nfe_own == 12
    direct = g.generate(p, [7])[0]
    assert np.array_equal(ge1.clips[0].video, direct.video) and np.array_equal(ge1.clips[0].audio, direct.audio)
    # the clean estimate at step 4 is a clip of its own, different from the final one
    assert not np.array_equal(ge0.clips[0].video, direct.video)
    with pytest.raises(Exception, match="stop"):
        generate_event(g, p, EventPlan("pa", 0, [CandidatePlan(seed=1, stop=10)]), [], keep)


def test_prune_finishes_exactly_the_best_of_n_candidates_it_keeps():
    g = SynthAVGenerator(num_steps=20)
    m = get_search("prune", dict(n=6, prune_steps=[4, 10], keep=0.5))
    (res,) = run_in_memory(g, _verifiers(), _arw(), PROMPTS[:1], m, run_seed=5)
    (bon,) = run_in_memory(g, _verifiers(), _arw(), PROMPTS[:1], get_search("best_of_n", dict(n=6)), run_seed=5)
    by_seed = {c.seed: bon.clips[c.candidate_id] for c in bon.records}
    kinds = [(c.generation, c.kind) for c in res.records]
    assert kinds == [(0, "intermediate")] * 6 + [(1, "intermediate")] * 3 + [(2, "final")] * 2
    finals = [c for c in res.records if c.kind == "final"]
    for c in finals:  # bit for bit the Best-of-N candidate with the same seed
        assert np.array_equal(res.clips[c.candidate_id].video, by_seed[c.seed].video)
        assert np.array_equal(res.clips[c.candidate_id].audio, by_seed[c.seed].audio)
    assert res.selected in {c.candidate_id for c in finals}
    # the survivors are the best-ranked by the aggregate after each event
    info = res.plans[1].info
    agg0 = res.aggregates[0]
    assert info["kept"] == sorted(sorted(agg0, key=lambda c: (-agg0[c], c))[:3])
    assert res.nfe_spent == m.planned_steps(20) == 6 * (4 + 1) + 3 * (6 + 1) + 2 * 10


def test_smc_resamples_systematically_and_particles_diverge():
    g = SynthAVGenerator(num_steps=12)
    m = get_search("smc", dict(particles=6, resample_steps=[3, 6], lmbda=50.0, ess_threshold=1.0, noise_scale=1.0))
    (res,) = run_in_memory(g, [Brightness()], get_aggregator("weighted", ["brightness"], {"brightness": 1.0}),
                           PROMPTS[:1], m, run_seed=1)
    by_id = {c.candidate_id: c for c in res.records}
    for e in (1, 2):
        info = res.plans[e].info
        assert info["resampled"] is True  # lambda 50 concentrates the weights; threshold 1 resamples
        lw = np.array([x if x is not None else -np.inf for x in info["log_weight"]])
        w = np.exp(lw - lw.max())
        assert info["ancestors"] == systematic_resample(w, info["u0"])
        kids = [c for c in res.records if c.generation == e]
        assert [k.parent_ids[0] for k in kids] == [info["particles"][a] for a in info["ancestors"]]
        # recorded potentials: "max" over the lineage under the final-state aggregates of the same event
        assert len(set(info["ancestors"])) < 6
    # two children of one parent take different stochastic paths
    kids = [c for c in res.records if c.generation == 2]
    same = {}
    for k in kids:
        same.setdefault(k.parent_ids[0], []).append(k.candidate_id)
    twins = next(v for v in same.values() if len(v) > 1)
    assert not np.array_equal(res.clips[twins[0]].video, res.clips[twins[1]].video)
    assert by_id[res.selected].kind == "final"
    assert res.nfe_spent == m.planned_steps(12) == 6 * 12 + 6 * 2


def test_beam_keeps_the_best_and_counts_the_lookahead():
    g = SynthAVGenerator(num_steps=12)
    m = get_search("beam", dict(beams=2, candidates_per_beam=3, beam_steps=[4, 8], lookahead=3))
    (res,) = run_in_memory(g, _verifiers(), _arw(), PROMPTS[1:], m, run_seed=2)
    for e in (1, 2):
        prev = [c.candidate_id for c in res.records if c.generation == e - 1]
        agg = res.aggregates[e - 1]
        best = sorted(prev, key=lambda c: (-agg[c], c))[:2]
        assert res.plans[e].info["beams"] == best
        kids = [c for c in res.records if c.generation == e]
        assert [k.parent_ids[0] for k in kids] == [b for b in best for _ in range(3)]
    inter = [c for c in res.records if c.kind == "intermediate"]
    assert {c.nfe_own for c in inter if c.generation == 0} == {4 + 3}
    assert {c.nfe_own for c in inter if c.generation == 1} == {4 + 3}
    assert {c.nfe_own for c in res.records if c.kind == "final"} == {4}
    assert res.nfe_spent == m.planned_steps(12) == 6 * 7 + 6 * 7 + 6 * 4


@pytest.mark.parametrize("method, params", [
    ("smc", dict(particles=4, resample_steps=[3, 5], ess_threshold=1.0)),
    ("beam", dict(beams=2, candidates_per_beam=2, beam_steps=[3, 5])),
])
def test_modality_options(method, params):
    """``modality`` fixes which track's transitions are stochastic; ``route_by_modality`` picks it per
    parent from its one-sided verifiers (here a video-only verifier: a weak video -> "video")."""
    g = SynthAVGenerator(num_steps=8)
    agg = get_aggregator("weighted", ["brightness"], {"brightness": 1.0})
    (res,) = run_in_memory(g, [Brightness()], agg, PROMPTS[:1], get_search(method, dict(params, modality="audio")))
    assert all(set(pl.info["modalities"]) == {"audio"} for pl in res.plans[1:])
    assert all(c.noise_modality == "audio" for pl in res.plans for c in pl.candidates)
    routed = get_search(method, dict(params, route_by_modality=True, verifier_modalities={"brightness": ["video"]}))
    agg = get_aggregator("weighted", ["brightness"], {"brightness": 1.0})
    (res,) = run_in_memory(g, [Brightness()], agg, PROMPTS[:1], routed)
    for e, pl in enumerate(res.plans[1:], start=1):
        parents = [c.parent for c in pl.candidates]
        pool = {c.candidate_id: res.scores[c.candidate_id]["brightness"] for c in res.records}
        vals = np.array(list(pool.values()))
        for par, mod in zip(parents, [c.noise_modality for c in pl.candidates]):
            # the rewards the router sees are the candidates scored so far (events < e)
            seen = np.array([v for cid, v in pool.items() if int(cid.split("_g")[1][:2]) < e])
            z = (pool[par] - seen.mean()) / (seen.std() or 1.0)
            assert mod == ("video" if z < 0 else "audio"), (e, par, z, mod)
        assert vals.size


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("method, params", [
    ("prune", dict(n=1, prune_steps=[3], keep=0.5)),
    ("smc", dict(particles=1, resample_steps=[3], noise_scale=0.0)),
    ("beam", dict(beams=1, candidates_per_beam=1, beam_steps=[3], noise_scale=0.0)),
])
def test_budget_of_one_candidate(method, params):
    g = SynthAVGenerator(num_steps=8)
    (res,) = run_in_memory(g, _verifiers(), _arw(), PROMPTS[:1], get_search(method, params), run_seed=0)
    assert [(c.generation, c.kind) for c in res.records] == [(0, "intermediate"), (1, "final")]
    assert res.selected == res.records[-1].candidate_id
    # with the ODE the single path is the first Best-of-N candidate
    first = g.generate(PROMPTS[0], [res.records[0].seed])[0]
    assert np.array_equal(res.clips[res.selected].video, first.video)


@pytest.mark.parametrize("method, params", [
    ("prune", dict(n=4, prune_steps=[3, 5], keep=0.5)),
    ("smc", dict(particles=4, resample_steps=[3, 5])),
    ("beam", dict(beams=2, candidates_per_beam=2, beam_steps=[3, 5])),
])
def test_all_scores_equal(method, params):
    """Equal scores: ties go to the lowest ids (prune keeps, beams), SMC's weights stay equal (ESS = K,
    no resampling: every particle continues itself), the answer is the lowest final id."""
    g = SynthAVGenerator(num_steps=8)
    (res,) = run_in_memory(g, [Constant()], get_aggregator("weighted", ["constant"], {"constant": 1.0}),
                           PROMPTS[:1], get_search(method, params), run_seed=0)
    finals = sorted(c.candidate_id for c in res.records if c.kind == "final")
    assert res.selected == finals[0]
    for e in (1, 2):
        info = res.plans[e].info
        prev = sorted(c.candidate_id for c in res.records if c.generation == e - 1)
        if method == "prune":
            assert info["kept"] == prev[: len(info["kept"])]
        elif method == "beam":
            assert info["beams"] == prev[:2]
        else:
            assert info["ess"] == pytest.approx(4.0) and info["resampled"] is False
            assert info["ancestors"] == [0, 1, 2, 3]


@pytest.mark.parametrize("method, params", [
    ("prune", dict(n=6, prune_steps=[3], keep=0.5)),
    ("smc", dict(particles=6, resample_steps=[3, 5], lmbda=20.0, ess_threshold=1.0)),
    ("beam", dict(beams=2, candidates_per_beam=3, beam_steps=[3])),
])
def test_a_verifier_failing_on_some_candidates(method, params):
    """A candidate a verifier fails on is not eligible: it is pruned / never a beam / has weight 0
    (never resampled) while eligible ones exist, and it is never the answer."""
    g = SynthAVGenerator(num_steps=8)
    ms = get_search(method, params)
    results = run_in_memory(g, [FailsOnSome()], get_aggregator("weighted", ["fails_on_some"], {"fails_on_some": 1.0}),
                            PROMPTS, ms, run_seed=3)
    n_failed = 0
    for res in results:
        failed = {c.candidate_id for c in res.records if _fails(c.seed)}
        n_failed += len(failed)
        assert res.selected is None or res.selected not in failed
        for e in range(1, ms.n_events):
            info = res.plans[e].info
            prev = [c.candidate_id for c in res.records if c.generation == e - 1]
            ok = [c for c in prev if c not in failed]
            chosen = info.get("kept") or info.get("beams") or \
                sorted({info["particles"][a] for a in info["ancestors"]})
            if ok:
                if method == "smc":
                    assert not set(chosen) & failed or not info["resampled"]
                    if info["resampled"]:
                        assert all(info["log_weight"][info["particles"].index(c)] is None for c in failed & set(prev))
                else:
                    assert set(chosen[: len(ok)]) <= set(ok) or set(ok) <= set(chosen)
    assert n_failed > 0  # the case really happened


# --------------------------------------------------------------------------- store-backed runs


def _cfg(tmp_path, method, params, name):
    from avits_core.config import config_from_dict

    return config_from_dict(dict(
        name=name, output_root=str(tmp_path), seed=4, generator=dict(name="synth", params=dict(num_steps=8)),
        prompts=dict(source=[p.text for p in PROMPTS]), search=dict(method=method, params=params),
        verifiers=[dict(name=n) for n in GUIDED], aggregator=dict(name="arw"),
        evaluation=dict(oracle=True, verifiers=[])))


@pytest.mark.parametrize("method, params", [
    ("prune", dict(n=4, prune_steps=[3], keep=0.5)),
    ("smc", dict(particles=3, resample_steps=[2, 5], ess_threshold=1.0)),
    ("beam", dict(beams=2, candidates_per_beam=2, beam_steps=[3], lookahead=2)),
])
def test_store_backed_run_equals_the_in_memory_loop(tmp_path, method, params):
    """``runner.run`` (tables, media, kept latent files, stored plans) makes the same candidates and the
    same answers as the in-memory loop; intermediate rows carry kind/x0_step, their rewards have the
    event_seq of their event, the replay selects final candidates only, a rerank with another
    aggregator too, and the baseline is a final candidate."""
    from avits_core import runner
    from avits_core.rerank import prepare_rerank
    from avits_core.runner.select import select
    from avits_core.store.duck import query

    cfg = _cfg(tmp_path, method, params, f"t-{method}")
    out = runner.run(cfg, check_models=False)
    run = Path(out["run_path"])
    cands = query(run, "SELECT prompt_id, candidate_id, generation, kind, x0_step, parent_ids, seed, nfe, nfe_own, "
                       "latent_path FROM candidates ORDER BY candidate_id").to_pylist()
    prompts = [Prompt(p.prompt_id, p.text) for p in out["ctx"].prompts]
    mem = run_in_memory(SynthAVGenerator(num_steps=8), _verifiers(), _arw(), prompts, get_search(method, params), 4)
    mem_rows = [(c.candidate_id, c.kind, c.x0_step, list(c.parent_ids), c.seed, c.nfe, c.nfe_own)
                for r in mem for c in r.records]
    # verifiers score the stored mp4 in a run and the clips in memory, so rewards (and choices made from
    # them) may differ in the last digits; event 0 depends on no reward and is the same
    rows = [(c["candidate_id"], c["kind"], c["x0_step"], c["parent_ids"], c["seed"], c["nfe"], c["nfe_own"])
            for c in cands]
    assert [r for r in rows if "_g00_" in r[0]] == [r for r in mem_rows if "_g00_" in r[0]]
    assert [r[:3] for r in rows] == [r[:3] for r in mem_rows]  # same events, sizes, kinds
    planned = get_search(method, params).planned_steps(8)
    for p in prompts:
        assert sum(c["nfe_own"] for c in cands if c["prompt_id"] == p.prompt_id) == planned
    assert {c["kind"] for c in cands} == {"intermediate", "final"}
    assert all(c["latent_path"] for c in cands if c["kind"] == "intermediate")
    E = get_search(method, params).n_events
    ev = query(run, "SELECT DISTINCT r.event_seq, c.prompt_id, c.generation FROM rewards r "
                    "JOIN candidates c USING (candidate_id)").to_pylist()
    pindex = {p.prompt_id: i for i, p in enumerate(prompts)}
    assert len(ev) == len(prompts) * E
    assert all(e["event_seq"] == pindex[e["prompt_id"]] * E + e["generation"] for e in ev)
    kind = {c["candidate_id"]: c["kind"] for c in cands}
    sel = query(run, f"SELECT prompt_id, candidate_id FROM selections WHERE selection_id = '{out['selection_id']}' "
                     "ORDER BY prompt_id").to_pylist()
    assert len(sel) == len(prompts) and all(kind[s["candidate_id"]] == "final" for s in sel)
    # the online state's answer (final aggregates after the last event) is the replay's selection
    ctx0 = out["ctx"]
    state = ctx0.state
    for s in sel:
        fin = state.final_aggregates_after(s["prompt_id"], E - 1)
        assert best_of(fin) == s["candidate_id"]
    base = query(run, "SELECT DISTINCT candidate_id FROM metrics WHERE selection_id IS NULL").to_pylist()
    assert base and all(kind[b["candidate_id"]] == "final" for b in base)
    # rerank (no generation): another aggregator still picks only among the finals
    ctx, spec, _ = prepare_rerank(str(run), verifiers="av_sync,synth_text", aggregator="rank")
    sid = select(ctx, spec)
    picks = query(run, f"SELECT candidate_id FROM selections WHERE selection_id = '{sid}'").to_pylist()
    assert len(picks) == len(prompts) and all(kind[p["candidate_id"]] == "final" for p in picks)
    if method != "prune":
        assert any(c["kind"] == "final" and c["parent_ids"] for c in cands)


# --------------------------------------------------------------------------- tiny LTX-2 (library level)


def test_tiny_ltx2_all_three_methods(tmp_path):
    pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_ltx2 import TINY_MAX_SEQUENCE_LENGTH, one_torch_thread, save_tiny_ltx2
    from avits_core.generators.ltx2 import LTX2Generator

    path = save_tiny_ltx2(tmp_path / "tiny", "2.0")
    with one_torch_thread():
        gen = LTX2Generator(height=64, width=96, num_frames=9, frame_rate=24.0, model_path=str(path), num_steps=4,
                            max_sequence_length=TINY_MAX_SEQUENCE_LENGTH, guidance_scale=2.0,
                            audio_guidance_scale=2.0)
        c = gen.nfe_per_step
        prompts = [Prompt("p0", "a red ball bounces twice")]
        agg = lambda: get_aggregator("weighted", ["brightness"], {"brightness": 1.0})  # noqa: E731
        cases = [("prune", dict(n=3, prune_steps=[2], keep=0.5)),
                 ("smc", dict(particles=2, resample_steps=[1, 2], noise_scale=0.8, ess_threshold=1.0)),
                 ("beam", dict(beams=1, candidates_per_beam=2, beam_steps=[2], lookahead=2, noise_scale=0.8))]
        for method, params in cases:
            m = get_search(method, params)
            (res,) = run_in_memory(gen, [Brightness()], agg(), prompts, m, run_seed=0)
            assert res.nfe_spent == c * m.planned_steps(4), method
            finals = [r for r in res.records if r.kind == "final"]
            assert finals and res.selected in {r.candidate_id for r in finals}
            assert all(r.nfe == 4 * c for r in finals)
            assert all(np.isfinite(v["brightness"]) for v in res.scores.values())


# --------------------------------------------------------------------------- avits run (slow)


def _avits(args, env, **kw):
    exe = Path(sys.executable).parent / "avits"
    return subprocess.Popen([str(exe), *args], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **kw)


def _env(tmp_path):
    return dict(os.environ, PREFECT_HOME=str(tmp_path / "ph"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="240", AVITS_SCORE_FLUSH_ROWS="2")


SMALL = {
    "smc": {"particles": 3, "resample_steps": [2, 4]},
    "beam": {"beams": 2, "candidates_per_beam": 2, "beam_steps": [3]},
    "prune": {"n": 4, "prune_steps": [2, 4], "keep": 0.5},
}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["smc", "beam", "prune"])
def test_avits_run_on_synthav(tmp_path, method):
    from avits_core.store.duck import query

    cfg = tiny_config(tmp_path, run_id=method)
    cfg["search"] = {"method": method, "params": SMALL[method]}
    write_config(cfg, tmp_path / "c.yaml")
    proc = _avits(["run", str(tmp_path / "c.yaml"), "-q"], _env(tmp_path))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    run = tmp_path / "runs" / method
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["search"]["method"] == method
    kinds = query(run, "SELECT kind, count(*) n FROM candidates GROUP BY kind").to_pylist()
    assert {k["kind"] for k in kinds} == {"intermediate", "final"}
    sel = query(run, "SELECT s.candidate_id, c.kind FROM selections s JOIN candidates c USING (candidate_id)").to_pylist()
    assert len(sel) == 2 and all(s["kind"] == "final" for s in sel)


@pytest.mark.slow
def test_smc_resumes_after_sigkill(tmp_path):
    """Kill `avits run` of an SMC run with SIGKILL mid-way, run it again: it finishes with the lineage
    it started (stored plans), no duplicated and no missing rows, and the same answers as an
    uninterrupted run of the same config."""
    from avits_core.store.duck import query

    cfg = tiny_config(tmp_path, run_id="killme")
    cfg["prompts"] = {"source": str(REPO / "data/prompts/synth-24.csv"), "limit": 4}
    cfg["search"] = {"method": "smc", "params": {"particles": 3, "resample_steps": [2, 4], "ess_threshold": 1.0}}
    path = write_config(cfg, tmp_path / "cfg.yaml")
    env = _env(tmp_path)
    run = tmp_path / "runs" / "killme"
    proc = _avits(["run", str(path), "-q"], env)
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed:\n" + proc.stdout.read()[-3000:])
        n_plans = len(list((run / "plans").rglob("e*.json"))) if run.exists() else 0
        if n_plans >= 3:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            killed = True
            break
        time.sleep(0.02)
    assert killed, "the run never reached its third plan"
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    plans_before = {p: p.read_text() for p in (run / "plans").rglob("e*.json")}
    again = _avits(["run", str(path), "-q"], env)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-4000:]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    for p, text in plans_before.items():  # the lineage it started is the lineage it finished
        assert p.read_text() == text
    n = 4 * 3 * 3
    c = query(run, "SELECT count(*) n, count(DISTINCT candidate_id) u FROM candidates").to_pylist()[0]
    assert c == {"n": n, "u": n}
    r = query(run, "SELECT count(*) n, count(DISTINCT (candidate_id, verifier)) u FROM rewards_all").to_pylist()[0]
    assert r == {"n": n * 2, "u": n * 2}
    s = query(run, "SELECT s.prompt_id, s.candidate_id, c.kind FROM selections s JOIN candidates c "
                   "USING (candidate_id) ORDER BY prompt_id").to_pylist()
    assert len(s) == 4 and all(x["kind"] == "final" for x in s)
    # an uninterrupted run of the same config picks the same answers
    cfg2 = dict(cfg, run_id="straight")
    (tmp_path / "cfg2.yaml").write_text(yaml.safe_dump(cfg2))
    straight = _avits(["run", str(tmp_path / "cfg2.yaml"), "-q"], env)
    out, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, out[-4000:]
    s2 = query(tmp_path / "runs" / "straight", "SELECT prompt_id, candidate_id FROM selections ORDER BY prompt_id").to_pylist()
    assert [(x["prompt_id"], x["candidate_id"]) for x in s] == [(x["prompt_id"], x["candidate_id"]) for x in s2]
