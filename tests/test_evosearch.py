"""EvoSearch: operators, tournament and elites, config validation, the in-memory loop on SynthAV,
the store-backed steps (plain calls) and, marked slow, the real ``its`` flow."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch

from avits_core.aggregate import get_aggregator
from avits_core.errors import ConfigError
from avits_core.generators.base import Latents
from avits_core.generators.synth import SynthAVGenerator
from avits_core.metrics.oracle import oracle_metrics
from avits_core.prompts import Prompt
from avits_core.registry import VERIFIERS
from avits_core.verifiers.base import Verifier
from avits_core.search.engine import denoise_capture
from avits_core.search.memory import best_of_n, evosearch
from avits_core.search.evosearch import (
    PRESETS,
    EvoSearchConfig,
    EvoSearchError,
    mutate,
    mutate_latent_additive,
    mutate_latent_vp,
    mutate_noise,
    plan_generation,
    select_elites,
    split_latent,
    tournament_select,
    tournament_size,
)

PROMPTS = [
    Prompt("pa", "a small red ball bounces three times with a high click over rain"),
    Prompt("pb", "a large blue cube bounces twice with a low beep over wind"),
    Prompt("pc", "a medium green ball bounces once with a mid buzz over hum"),
]


def _randn(shape: Sequence[int], seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _lat(seed: int, b: int = 2, dv: int = 20000, da: int = 10000, step: int = 0) -> Latents:
    return Latents(video=_randn((b, dv), seed), audio=_randn((b, da), seed + 1), step=step, seeds=list(range(b)))


class LinearGen:
    """A test generator whose clean-latent estimate is a fixed tensor (so the implied noise is known)."""

    name = "linear"

    def __init__(self, x0: Latents, num_steps: int = 10):
        self.x0 = x0
        self.nfe_total = 0
        self._ts = np.linspace(1.0, 0.0, num_steps + 1)

    @property
    def timesteps(self) -> np.ndarray:
        return self._ts.copy()

    @property
    def num_steps(self) -> int:
        return len(self._ts) - 1

    def init_noise(self, seeds):
        return Latents(video=torch.stack([_randn(self.x0.video.shape[1:], s) for s in seeds]),
                       audio=torch.stack([_randn(self.x0.audio.shape[1:], s + 7) for s in seeds]),
                       step=0, seeds=list(seeds))

    def predict_x0(self, latents, prompt, step):
        self.nfe_total += len(latents)
        return Latents(video=self.x0.video.clone(), audio=self.x0.audio.clone(), step=self.num_steps,
                       seeds=list(latents.seeds), nfe=latents.nfe + 1)


# --------------------------------------------------------------------------- operators


def test_mutate_noise_preserves_variance_and_correlation():
    z, eps = _lat(1), _lat(100)
    beta = 0.3
    m = mutate_noise(z, eps, beta)
    for a, orig in ((m.video, z.video), (m.audio, z.audio)):
        assert abs(a.var().item() - 1.0) < 0.02
        corr = torch.corrcoef(torch.stack([a.flatten(), orig.flatten()]))[0, 1].item()
        assert abs(corr - math.sqrt(1 - beta**2)) < 0.01
    assert m.step == z.step and m.seeds == z.seeds and (m.nfe == z.nfe).all()


def test_mutate_noise_beta_zero_is_identity_and_one_is_fresh_noise():
    z, eps = _lat(1, dv=50, da=30), _lat(2, dv=50, da=30)
    same = mutate_noise(z, eps, 0.0)
    assert torch.equal(same.video, z.video) and torch.equal(same.audio, z.audio)
    fresh = mutate_noise(z, eps, 1.0)
    assert torch.equal(fresh.video, eps.video) and torch.equal(fresh.audio, eps.audio)


@pytest.mark.parametrize("modality,video_changes,audio_changes",
                         [("joint", True, True), ("video", True, False), ("audio", False, True)])
def test_mutation_modality_options(modality, video_changes, audio_changes):
    z, eps = _lat(1, dv=50, da=30, step=4), _lat(2, dv=50, da=30)
    gen = LinearGen(_lat(9, dv=50, da=30))
    for m in (mutate_noise(z, eps, 0.5, modality),
              mutate_latent_vp(gen, z, PROMPTS[0], eps, 0.5, modality),
              mutate_latent_additive(gen, z, eps, modality)):
        assert (not torch.equal(m.video, z.video)) == video_changes
        assert (not torch.equal(m.audio, z.audio)) == audio_changes


def test_vp_latent_mutation_keeps_the_noise_part_standard_normal():
    x0 = Latents(video=torch.full((2, 20000), 0.7), audio=torch.full((2, 10000), -0.4), step=10, seeds=[0, 1])
    gen = LinearGen(x0, num_steps=10)
    k = 4
    s = float(gen.timesteps[k])
    n = _lat(3)
    x = Latents(video=(1 - s) * x0.video + s * n.video, audio=(1 - s) * x0.audio + s * n.audio, step=k, seeds=[0, 1])
    beta = 0.5
    m = mutate_latent_vp(gen, x, PROMPTS[0], _lat(50), beta)
    assert m.step == k and (m.nfe == 1).all()  # one predict_x0 per candidate
    for got, x0t, nt in ((m.video, x0.video, n.video), (m.audio, x0.audio, n.audio)):
        implied = (got - (1 - s) * x0t) / s
        assert abs(implied.var().item() - 1.0) < 0.02
        assert abs(implied.mean().item()) < 0.02
        corr = torch.corrcoef(torch.stack([implied.flatten(), nt.flatten()]))[0, 1].item()
        assert abs(corr - math.sqrt(1 - beta**2)) < 0.01
    _, noise = split_latent(gen, x, PROMPTS[0])
    assert torch.allclose(noise.video, n.video, atol=1e-4)


def test_vp_on_synthav_beta_zero_is_identity_and_spends_one_nfe():
    gen = SynthAVGenerator(num_steps=10)
    lat = gen.denoise(gen.init_noise([1, 2, 3]), PROMPTS[0], 0, 4)
    eps = gen.init_noise([7, 8, 9])
    same = mutate_latent_vp(gen, lat, PROMPTS[0], eps, 0.0)
    assert torch.allclose(same.video, lat.video, atol=1e-5) and torch.allclose(same.audio, lat.audio, atol=1e-5)
    assert (same.nfe == lat.nfe + 1).all()
    moved = mutate_latent_vp(gen, lat, PROMPTS[0], eps, 0.5)
    assert not torch.allclose(moved.video, lat.video, atol=1e-3)


def test_additive_rule_adds_the_noise_level_times_eps():
    gen = SynthAVGenerator(num_steps=10)
    lat = gen.denoise(gen.init_noise([1, 2]), PROMPTS[0], 0, 3)
    eps = gen.init_noise([5, 6])
    m = mutate_latent_additive(gen, lat, eps)
    s = float(gen.timesteps[3])
    assert torch.allclose(m.video - lat.video, s * eps.video, atol=1e-6)
    assert torch.allclose(m.audio - lat.audio, s * eps.audio, atol=1e-6)
    assert (m.nfe == lat.nfe).all()
    cfg = EvoSearchConfig(latent_mutation="additive", evolution_schedule=(0, 3))
    assert torch.equal(mutate(gen, lat, PROMPTS[0], eps, cfg).video, m.video)


def test_mutation_rejects_mismatched_noise_and_bad_beta():
    with pytest.raises(ValueError, match="shapes"):
        mutate_noise(_lat(1, dv=5, da=3), _lat(2, dv=6, da=3), 0.2)
    with pytest.raises(ValueError, match="beta"):
        mutate_noise(_lat(1, dv=5, da=3), _lat(2, dv=5, da=3), 1.5)
    with pytest.raises(ValueError, match="modality"):
        mutate_noise(_lat(1, dv=5, da=3), _lat(2, dv=5, da=3), 0.2, "both")


def test_denoise_capture_matches_one_pass_and_keeps_snapshots():
    gen = SynthAVGenerator(num_steps=10)
    z = gen.init_noise([1, 2])
    whole = gen.denoise(z, PROMPTS[0], 0, 10)
    final, snaps = denoise_capture(gen, z, PROMPTS[0], [0, 4, 4, 7, 12])
    assert sorted(snaps) == [0, 4, 7]
    assert torch.equal(final.video, whole.video) and (final.nfe == whole.nfe).all()
    assert snaps[4].step == 4 and (snaps[4].nfe == 4).all() and torch.equal(snaps[0].video, z.video)


# --------------------------------------------------------------------------- selection operators


def test_tournament_size_rule():
    assert tournament_size(5, 0.5) == 2
    assert tournament_size(10, 0.05) == 2
    assert tournament_size(10, 0.5) == 5
    assert tournament_size(10, 1.0) == 10
    assert tournament_size(2, 0.1) == 2
    assert tournament_size(1, 0.5) == 1


def test_tournament_never_draws_fewer_than_two():
    scores = np.array([0.3, 0.9, -1.0, 0.5, 0.1])
    rng = np.random.default_rng(0)
    winners = tournament_select(scores, 2000, 0.01, rng)
    # ratio 0.01 still draws 2 distinct members: the worst (index 2) can never win, index 4 wins
    # only against index 2 (1 pair in 10), the best (index 1) whenever drawn (4 pairs in 10)
    assert 2 not in winners
    counts = np.bincount(winners, minlength=5)
    assert counts[4] == pytest.approx(200, abs=60)
    assert counts[1] == pytest.approx(2000 * 4 / 10, abs=120)  # best wins whenever drawn
    assert tournament_select(scores, 3, 1.0, rng) == [1, 1, 1]
    assert tournament_select(np.zeros(4), 5, 1.0, rng) == [0, 0, 0, 0, 0]  # ties: lowest index
    assert tournament_select(np.array([2.0]), 3, 0.5, rng) == [0, 0, 0]  # pool of one: the whole pool


def test_select_elites_best_first_ties_to_lower_index():
    assert select_elites(np.array([0.1, 0.5, 0.5, 0.2]), 2) == [1, 2]
    assert select_elites(np.array([0.1, 0.5]), 0) == []
    assert select_elites(np.array([0.1, 0.5]), 5) == [1, 0]


def test_plan_generation():
    cfg = EvoSearchConfig.from_params({"preset": "paper"})
    pool = ["p_g00_c003", "p_g00_c000", "p_g00_c001", "p_g00_c002", "p_g00_c004"]
    scores = [0.1, 0.9, 0.4, 0.9, -2.0]
    plan = plan_generation(cfg, "p", 1, pool, scores, run_seed=3)
    assert plan.pool == sorted(pool) and plan.step == 0
    assert plan.elites == ["p_g00_c000", "p_g00_c002"]
    assert len(plan.parents) == 3 and set(plan.parents) <= set(pool) and "p_g00_c004" not in plan.parents
    assert len(set(plan.mutation_seeds)) == 3
    assert plan_generation(cfg, "p", 1, pool, scores, run_seed=3) == plan
    # fewer eligible than elite_size: all elites, the rest children
    small = plan_generation(cfg, "p", 2, ["p_g00_c001"], [0.3], run_seed=3)
    assert small.elites == ["p_g00_c001"] and small.parents == ["p_g00_c001"] * 4 and small.step == 10
    with pytest.raises(EvoSearchError, match="no candidate"):
        plan_generation(cfg, "p", 1, [], [], run_seed=3)


# --------------------------------------------------------------------------- configuration


def test_presets_defaults_and_overrides():
    paper = EvoSearchConfig.from_params({"preset": "paper"})
    assert paper.evolution_schedule == (0, 10) and paper.population_size_schedule == (5, 5, 5)
    assert (paper.elite_size, paper.tournament_ratio, paper.mutation_rate) == (2, 0.5, 0.2)
    assert paper.n_generations == 3 and paper.latent_mutation == "vp" and paper.modality == "joint"
    assert EvoSearchConfig.from_params({}).to_dict() == dict(paper.to_dict(), preset=None)
    demo = EvoSearchConfig.from_params({"preset": "demo", "mutation_rate": 0.1, "modality": "audio"})
    assert demo.mutation_rate == 0.1 and demo.modality == "audio"
    assert demo.evolution_schedule == tuple(PRESETS["demo"]["evolution_schedule"])
    assert paper.capture_steps(0) == [0, 10] and paper.capture_steps(1) == [10] and paper.capture_steps(2) == []


@pytest.mark.parametrize(
    "params,field",
    [
        ({"population_size_schedule": [5, 2, 5], "elite_size": 2}, r"population_size_schedule\[1\].*elite_size=2"),
        ({"population_size_schedule": [1, 3, 3], "elite_size": 2}, r"population_size_schedule\[0\]"),
        ({"population_size_schedule": [5, 5]}, r"population_size_schedule: has 2 entries.*expected 3"),
        ({"evolution_schedule": [10, 0]}, r"evolution_schedule\[1\]"),
        ({"evolution_schedule": [0, -1]}, r"evolution_schedule\[1\]"),
        ({"evolution_schedule": "0,10"}, r"evolution_schedule"),
        ({"population_size_schedule": [5, 2.5, 5]}, r"population_size_schedule\[1\]"),
        ({"elite_size": True}, r"elite_size"),
        ({"mutation_rate": 1.5}, r"mutation_rate"),
        ({"tournament_ratio": 0.0}, r"tournament_ratio"),
        ({"latent_mutation": "ddim"}, r"latent_mutation"),
        ({"modality": "both"}, r"modality"),
        ({"elites": 2}, r"search\.params\.elites: unknown"),
        ({"preset": "fast"}, r"preset.*'fast'"),
    ],
)
def test_config_errors_name_the_field(params, field):
    with pytest.raises(ConfigError, match=field):
        EvoSearchConfig.from_params(params)


def test_shipped_demo_config_is_valid():
    from avits_core import runner
    from avits_core.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "data/configs/evosearch-demo.yaml")
    assert cfg.search.method == "evosearch" and len(runner.validate_config(cfg)) == 8
    evo = EvoSearchConfig.from_params(cfg.search.params)
    assert evo.preset == "demo" and evo.n_generations == 3
    evo.check_steps(cfg.generator.params["num_steps"])


def test_schedule_step_beyond_the_generator_is_an_error_before_generating():
    cfg = EvoSearchConfig.from_params({"evolution_schedule": [0, 20], "population_size_schedule": [3, 3, 3],
                                       "elite_size": 1})
    gen = SynthAVGenerator(num_steps=20)
    with pytest.raises(ConfigError, match=r"evolution_schedule\[1\]: step 20 .*\[0, 19\]"):
        evosearch(gen, [], get_aggregator("weighted", ["x"]), PROMPTS[:1], cfg)
    assert gen.nfe_total == 0


def test_one_step_schedule_and_one_step_generator():
    cfg = EvoSearchConfig.from_params({"evolution_schedule": [0], "population_size_schedule": [3, 2],
                                       "elite_size": 1})
    assert cfg.n_generations == 2
    gen = SynthAVGenerator(num_steps=1)
    vs = [VERIFIERS.create("synth_text")]
    (res,) = evosearch(gen, vs, get_aggregator("weighted", ["synth_text"]), PROMPTS[:1], cfg)
    assert [c.generation for c in res.candidates] == [0, 0, 0, 1]
    assert res.populations[1][0] in res.populations[0] and len(res.populations[1]) == 2
    assert res.nfe_spent == 4  # 3 fresh + 1 child, one step each
    with pytest.raises(ConfigError, match=r"evolution_schedule\[0\]: step 1"):
        EvoSearchConfig.from_params({"evolution_schedule": [1], "population_size_schedule": [3, 2],
                                     "elite_size": 1}).check_steps(1)


def test_empty_schedule_is_best_of_n():
    cfg = EvoSearchConfig.from_params({"evolution_schedule": [], "population_size_schedule": [3], "elite_size": 5})
    gen = SynthAVGenerator(num_steps=6)
    vs = [VERIFIERS.create("synth_text")]
    evo = evosearch(gen, vs, get_aggregator("weighted", ["synth_text"]), PROMPTS[:2], cfg, run_seed=4)
    bon = best_of_n(gen, vs, get_aggregator("weighted", ["synth_text"]), PROMPTS[:2], 3, run_seed=4)
    for e, b in zip(evo, bon):
        assert [c.seed for c in e.candidates] == b.seeds
        assert e.selected == e.candidates[b.selected].candidate_id
        np.testing.assert_array_equal(e.aggregate, b.aggregate)


# --------------------------------------------------------------------------- the in-memory loop on SynthAV


class TruthScore(Verifier):
    """Test-only verifier that reads SynthAV's ground truth (a perfect reward, so the test measures the
    search, not verifier noise): attribute accuracy + bounce count correct - sync error / 200 ms - noise."""

    name = "truth_score"

    def score_clip(self, clip, prompt):
        m = oracle_metrics(clip.meta["truth"])
        return m["attribute_accuracy"] + m["bounce_count_correct"] - m["sync_error_ms"] / 200 - m["noise_level"]


@pytest.fixture(scope="module")
def evo_run():
    cfg = EvoSearchConfig.from_params({"evolution_schedule": [0, 4], "population_size_schedule": [4, 4, 4],
                                       "elite_size": 1, "tournament_ratio": 0.5, "mutation_rate": 0.3})
    gen = SynthAVGenerator(num_steps=10)
    vs = [TruthScore()]
    res = evosearch(gen, vs, get_aggregator("weighted", ["truth_score"]), PROMPTS, cfg, run_seed=0)
    return cfg, gen, vs, res


def test_evosearch_improves_the_aggregate_over_generations(evo_run):
    cfg, _, _, res = evo_run
    # a fixed (stateless) aggregate: each generation's new candidates beat the previous ones on average
    means = [np.concatenate([r.aggregate[[c.generation == g for c in r.candidates]] for r in res]).mean()
             for g in range(cfg.n_generations)]
    assert means[-1] > means[0] + 0.2 and means[1] > means[0]
    for r in res:
        agg = dict(zip([c.candidate_id for c in r.candidates], r.aggregate))
        best = [max(agg[c] for c in pop) for pop in r.populations]
        assert best == sorted(best)  # the elite is carried: a population is never worse than the last
        assert r.aggregate[[c.candidate_id for c in r.candidates].index(r.selected)] == r.aggregate.max()


def test_lineage_is_consistent(evo_run):
    cfg, gen, _, res = evo_run
    S = gen.num_steps
    for r in res:
        by_id = r.by_id
        assert [len(p) for p in r.populations] == list(cfg.population_size_schedule)
        for g, plan in enumerate(r.plans, start=1):
            assert plan.pool == sorted(r.populations[g - 1])
            assert set(plan.elites) <= set(plan.pool) and set(plan.parents) <= set(plan.pool)
            assert r.populations[g][: cfg.elite_size] == plan.elites
        for c in r.candidates:
            assert c.step == cfg.branch_step(c.generation)
            if c.generation == 0:
                assert c.parent_ids == [] and c.nfe == c.nfe_own == S
                continue
            (pid,) = c.parent_ids
            parent = by_id[pid]
            assert parent.generation < c.generation and pid in r.plans[c.generation - 1].pool
            vp_cost = 1 if c.step > 0 else 0
            assert c.nfe_own == vp_cost + S - c.step
            assert c.nfe == c.nfe_own + parent.nfe - (S - c.step)  # + the parent's nfe at step k
        assert r.nfe_spent == sum(c.nfe_own for c in r.candidates)


def test_evosearch_is_deterministic(evo_run):
    cfg, gen, vs, res = evo_run
    again = evosearch(gen, vs, get_aggregator("weighted", ["truth_score"]), PROMPTS[:1], cfg, run_seed=0)[0]
    first = res[0]
    key = lambda r: [(c.candidate_id, c.parent_ids, c.seed, c.nfe, c.scores) for c in r.candidates]  # noqa: E731
    assert key(again) == key(first) and again.selected == first.selected
    other = evosearch(gen, vs, get_aggregator("weighted", ["truth_score"]), PROMPTS[:1], cfg, run_seed=1)[0]
    assert [c.seed for c in other.candidates] != [c.seed for c in first.candidates]


def test_failed_scores_make_a_candidate_ineligible(evo_run):
    cfg, gen, _, _ = evo_run
    from avits_core.seeding import derive_seed

    bad_seed = derive_seed(0, PROMPTS[0].prompt_id, 1)

    class Flaky(TruthScore):
        name = "flaky"

        def score_clip(self, clip, prompt):
            if clip.meta["seed"] == bad_seed:
                raise RuntimeError("cannot measure")
            return super().score_clip(clip, prompt)

    (r,) = evosearch(gen, [Flaky()], get_aggregator("weighted", ["flaky"]), PROMPTS[:1], cfg, run_seed=0)
    bad = f"{PROMPTS[0].prompt_id}_g00_c001"
    assert r.by_id[bad].seed == bad_seed and math.isnan(r.by_id[bad].scores["flaky"])
    assert r.aggregate[1] == -np.inf and r.selected != bad
    assert all(bad not in plan.pool for plan in r.plans)


# --------------------------------------------------------------------------- store-backed steps (plain calls)


def _config(tmp_path: Path, **search):
    from avits_core.config import config_from_dict

    return config_from_dict(dict(
        name="evo-test", output_root=str(tmp_path), seed=0,
        generator=dict(name="synth", params=dict(num_steps=8)),
        prompts=dict(source=[p.text for p in PROMPTS[:2]]),
        search=dict(method="evosearch", params=dict(
            evolution_schedule=[0, 3], population_size_schedule=[3, 3, 3], elite_size=1, mutation_rate=0.5,
            **search)),
        verifiers=[dict(name="av_sync"), dict(name="synth_text")],
        aggregator=dict(name="arw", params=dict(optimizer="adam", lr=0.05, max_iter=20)),
        evaluation=dict(oracle=True, verifiers=[]),
    ))


def test_store_backed_steps_lineage_resume_and_compute(tmp_path):
    from avits_core import runner

    cfg = _config(tmp_path)
    ctx = runner.prepare_run(cfg, check_models=False)
    assert runner.start_search(ctx)["n_generations"] == 3 == ctx.n_generations
    G = ctx.n_generations
    pa = ctx.prompts[0].prompt_id
    assert len(runner.generate_event(ctx, pa, 0)) == 3
    with pytest.raises(EvoSearchError, match="no 'av_sync' reward yet"):
        runner.generate_event(ctx, pa, 1)
    made = {}
    for p in ctx.prompts:
        for g in range(G):
            stored = ctx.state.has_event(p.prompt_id, g)
            rows = runner.generate_event(ctx, p.prompt_id, g)
            made[(p.prompt_id, g)] = 0 if stored else len(rows)
            for spec in ctx.all_verifier_specs():
                runner.score_rows(ctx, spec, rows)
    assert made == {(p.prompt_id, g): (0 if (p.prompt_id, g) == (pa, 0) else 2 if g else 3)
                    for p in ctx.prompts for g in range(G)}
    # resume: a reopened run generates nothing again, and the plans are reused
    ctx2 = runner.open_run(ctx.store.path)
    n_parts = len(list((ctx.store.path / "candidates").glob("part-*.parquet")))
    assert all(len(runner.generate_event(ctx2, p.prompt_id, g)) for p in ctx2.prompts for g in range(G))
    assert len(list((ctx.store.path / "candidates").glob("part-*.parquet"))) == n_parts
    plan1 = ctx2.state.plan_for(pa, 1, 8)
    assert plan1 == runner.read_plan(ctx2.store.path, pa, 1) == ctx.state.plans[pa][1]

    rows = {r["candidate_id"]: r for r in ctx.store.read("candidates").to_pylist()}
    assert len(rows) == 2 * (3 + 2 + 2)
    for cid, r in rows.items():
        assert r["search"] == "evosearch" and r["step"] == (0, 0, 3)[r["generation"]]
        if r["generation"] < G - 1:
            assert r["latent_path"] and (ctx.store.path / r["latent_path"]).is_file()
        else:
            assert r["latent_path"] is None
        if r["generation"] == 0:
            assert r["parent_ids"] == [] and r["nfe"] == r["nfe_own"] == 8
        else:
            (par,) = r["parent_ids"]
            plan = runner.read_plan(ctx.store.path, r["prompt_id"], r["generation"])
            assert par in plan.info["pool"] and rows[par]["generation"] < r["generation"]
            assert r["seed"] == plan.info["mutation_seeds"][r["batch_index"]] == plan.candidates[r["batch_index"]].seed
            assert r["nfe_own"] == (1 + 8 - 3 if r["step"] else 8)
            assert r["nfe"] == r["nfe_own"] + (r["step"] if r["step"] else 0)
    # the stored latent at step 3 of a generation-0 candidate is the step-3 state of its noise
    gen = runner.get_generator("synth", {"num_steps": 8})
    c0 = rows[f"{pa}_g00_c000"]
    lat = ctx.state.load_latent(c0["candidate_id"], 3)
    ref = gen.denoise(gen.init_noise([c0["seed"]]), ctx.prompts[0], 0, 3)
    assert torch.equal(lat.video, ref.video) and int(lat.nfe[0]) == 3

    summary = runner.record_compute(ctx)
    info = ctx.store.read_run_json()
    assert info["compute"]["nfe_total"] == summary["nfe_total"] == 2 * (3 * 8 + 2 * 8 + 2 * 6)
    assert summary["nfe_per_prompt"][pa] == 52 and summary["decodes"] == 14
    assert summary["verifier_calls"]["synth_text"] >= 14 and summary["scoring_events"] == 6
    assert info["search"]["population_size_schedule"] == [3, 3, 3] and info["search"]["num_steps"] == 8

    tree = runner.lineage_tree(ctx, pa)
    assert all(cid in tree for cid in rows if cid.startswith(pa))
    assert "* selected" in tree and "elite->g1" in tree and "└── " in tree
    with pytest.raises(ConfigError, match="unknown prompt_id"):
        runner.lineage_tree(ctx, "nope")


def test_online_aggregate_equals_a_replay_of_the_stored_rewards(tmp_path):
    """The parents of every generation were ranked by the aggregates a full replay of the rewards stored
    up to that event gives (what the former runner recomputed per generation)."""
    from avits_core import runner
    from avits_core.selection import replay

    cfg = _config(tmp_path)
    out = runner.run(cfg, check_models=False)
    ctx = runner.open_run(out["run_path"])
    spec = runner.default_spec(ctx.cfg)
    cands = ctx.store.read("candidates", ["prompt_id", "candidate_id", "generation"]).to_pylist()
    rewards = runner.ok_rewards(ctx, spec.verifiers)
    order = [p.prompt_id for p in ctx.prompts]
    G = ctx.n_generations
    for pi, p in enumerate(order):
        for g in range(1, G):
            last = pi * G + g - 1
            keep = [c for c in cands if order.index(c["prompt_id"]) < pi or (c["prompt_id"] == p and c["generation"] < g)]
            ids = {c["candidate_id"] for c in keep}
            res = replay(spec, keep, [r for r in rewards if r["event_seq"] <= last and r["candidate_id"] in ids],
                         runner.higher_is_better(spec.verifiers), order)
            plan = runner.read_plan(ctx.store.path, p, g)
            want = [res.aggregates[c] for c in plan.info["pool"]]
            assert plan.info["pool_scores"] == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_flow_schedule_error_before_generation(tmp_path):
    from avits_core import runner

    cfg = _config(tmp_path)
    cfg.search.params = dict(cfg.search.params, evolution_schedule=[0, 8])
    ctx = runner.prepare_run(cfg, check_models=False)
    with pytest.raises(ConfigError, match=r"evolution_schedule\[1\]: step 8"):
        runner.start_search(ctx)
    assert ctx.store.read("candidates").num_rows == 0


@pytest.mark.slow
def test_its_flow_runs_evosearch_end_to_end(tmp_path):
    from flows.its import its

    cfg = _config(tmp_path)
    out = its(config=cfg.model_dump(mode="json"))
    info = json.loads((Path(out["run_path"]) / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["compute"]["decodes"] == 14 and info["compute"]["nfe_total"] == 2 * (24 + 16 + 12)
    assert {"generate", "plan"} <= set(info["timings"])
    from avits_core import runner

    ctx = runner.open_run(out["run_path"])
    sels = [s for s in ctx.store.read("selections").to_pylist() if s["selection_id"] == out["selection_id"]]
    assert len(sels) == 2 and all(s["candidate_id"] for s in sels)
    # the flow's selection is the best candidate over all generations under the final aggregate
    for s in sels:
        agg = ctx.state.aggregates_after(s["prompt_id"], ctx.n_generations - 1)
        assert s["candidate_id"] == max(sorted(agg), key=lambda c: agg[c])
