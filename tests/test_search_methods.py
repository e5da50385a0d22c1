"""zero_order, search_over_paths and modality routing (issue 16): planning rules on hand-scripted
scores, NFE and lineage through the engine, edge cases (budget of one, equal scores, failing
verifiers, a neighbourhood / population larger than the budget), tiny random LTX-2 at library level
(SIGKILL and resume: ``test_search_resume.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from avits_core.aggregate import get_aggregator
from avits_core.errors import ConfigError, EvoSearchError
from avits_core.generators.synth import SynthAVGenerator
from avits_core.prompts import Prompt
from avits_core.registry import SEARCH_METHODS
from avits_core.search.base import get_search
from avits_core.search.memory import run_in_memory
from avits_core.search.routing import Router, route, side_of, verifier_sides
from avits_core.seeding import candidate_seeds, derive_seed
from avits_core.verifiers.base import MinInput, Verifier

P = Prompt("pa", "a small red ball bounces three times with a high click over rain")
P2 = Prompt("pb", "a large blue cube bounces twice with a low beep over wind")


class Scripted(Verifier):
    """Test verifier: the score of a clip is ``table[seed]`` (its candidate's plan seed), ``default``
    for other seeds; a seed in ``fail`` raises (an error row)."""

    name = "scripted"

    def __init__(self, table=None, default=0.0, fail=()):
        self.table, self.default, self.fail = dict(table or {}), default, set(fail)

    def score_clip(self, clip, prompt):
        s = int(clip.meta["seed"])
        if s in self.fail:
            raise RuntimeError(f"scripted failure on seed {s}")
        return float(self.table.get(s, self.default))


def _run(method, verifier, prompts=(P,), steps=6, seed=0):
    gen = SynthAVGenerator(num_steps=steps)
    return run_in_memory(gen, [verifier], get_aggregator("weighted", [verifier.name]), list(prompts), method, seed)


def _zo_seed(pid, event, i, run_seed=0):
    return derive_seed(run_seed, pid, i, salt=f"zo-e{event}")


# --------------------------------------------------------------------------- registry and parameters


def test_registered_and_names_agree():
    for name, cls in (("zero_order", "ZeroOrder"), ("search_over_paths", "SearchOverPaths")):
        klass = SEARCH_METHODS.get_class(name)
        assert klass.name == name and klass.__name__ == cls


@pytest.mark.parametrize("method, params, field", [
    ("zero_order", {"n": 4, "neighbours": 8}, "search.params.neighbours: 8 candidates per event exceed the budget of n=4"),
    ("zero_order", {"radius": 0.0}, "search.params.radius"),
    ("zero_order", {"radius": 1.5}, "search.params.radius"),
    ("zero_order", {"modality": "both"}, "search.params.modality"),
    ("zero_order", {"pivots": 2}, "search.params.pivots: unknown parameter"),
    ("zero_order", {"verifier_modalities": {"x": ["smell"]}}, "search.params.verifier_modalities.x: unknown track"),
    ("search_over_paths", {"paths": 9, "budget": 8}, "search.params.paths: 9 paths exceed the budget of 8"),
    ("search_over_paths", {"schedule": [4, 2]}, r"search.params.schedule\[1\]: step 2 comes before step 4"),
    ("search_over_paths", {"schedule": [-1]}, r"search.params.schedule\[0\]"),
    ("search_over_paths", {"beta": 0}, "search.params.beta"),
    ("search_over_paths", {"branches": 0}, "search.params.branches"),
    ("evosearch", {"route_by_modality": "yes"}, "search.params.route_by_modality"),
    ("evosearch", {"modality": "smell"}, "search.params.modality"),
])
def test_bad_parameters_name_the_field(method, params, field):
    with pytest.raises(ConfigError, match=field):
        get_search(method, params)


def test_generator_checks_name_the_field():
    with pytest.raises(ConfigError, match=r"search.params.schedule\[1\]: step 6 is beyond"):
        get_search("search_over_paths", {"schedule": [2, 6]}).check_generator(6)
    # 2 paths x 2 branches at steps [2, 4] of 6: 2*6 + 4*(1+4) + 4*(1+2) = 44 step evaluations = 7.33 samples
    m = get_search("search_over_paths", {"paths": 2, "branches": 2, "schedule": [2, 4], "budget": 7})
    assert m.max_step_evals(6) == 44
    assert m.budget()[0] == 2 + 2 * 2 * 2  # candidates per prompt, for the pre-flight limits
    assert get_search("zero_order", {"n": 6, "neighbours": 3}).budget()[0] == 6
    with pytest.raises(ConfigError, match="search.params.budget: .* 44 step evaluations = 7.33 full samples"):
        m.check_generator(6)
    get_search("search_over_paths", {"paths": 2, "branches": 2, "schedule": [2, 4], "budget": 8}).check_generator(6)


def test_zero_order_takes_n_from_search_n():
    from avits_core.config import SearchConfig

    m = SEARCH_METHODS.get_class("zero_order").from_config(SearchConfig(method="zero_order", n=6, params={"neighbours": 4}))
    assert m.params.n == 6 and m.n_events == 2 and [m.event_size(e) for e in range(2)] == [4, 2]
    with pytest.raises(ConfigError, match="search.params.neighbours"):
        SEARCH_METHODS.get_class("zero_order").from_config(SearchConfig(method="zero_order", n=2, params={"neighbours": 3}))


# --------------------------------------------------------------------------- zero-order


def test_zero_order_moves_to_a_better_neighbour_and_restarts_at_a_fixed_point():
    s0, s1 = candidate_seeds(0, "pa", 2)
    table = {s0: 0.1, s1: 0.5,  # event 0 (restart): pivot = c001
             _zo_seed("pa", 1, 0): 0.7, _zo_seed("pa", 1, 1): 0.2,  # a neighbour beats the pivot: move
             _zo_seed("pa", 2, 0): 0.3, _zo_seed("pa", 2, 1): 0.6}  # none beats 0.7: restart at event 3
    (r,) = _run(get_search("zero_order", {"n": 8, "neighbours": 2, "radius": 0.3}), Scripted(table))
    by = {c.candidate_id: c for c in r.records}
    kinds = [(p.info.get("kind"), p.info.get("pivot")) for p in r.plans[1:]]
    assert kinds == [("neighbours", "pa_g00_c001"), ("neighbours", "pa_g01_c000"), ("restart", None)]
    assert r.plans[3].info["reason"] == "no neighbour beats the pivot" and r.plans[3].info["previous_pivot"] == "pa_g01_c000"
    assert by["pa_g01_c000"].parent_ids == ("pa_g00_c001",) and by["pa_g02_c001"].parent_ids == ("pa_g01_c000",)
    assert by["pa_g01_c000"].step == 0 and by["pa_g01_c000"].seed == _zo_seed("pa", 1, 0)
    # the restart draws Best-of-N's seeds 6 and 7 (events of 2: the seeds a Best-of-8 gives candidates 6, 7)
    assert [by[f"pa_g03_c00{i}"].seed for i in range(2)] == candidate_seeds(0, "pa", 2, start=6)
    assert by["pa_g03_c000"].parent_ids == ()
    assert r.selected == "pa_g01_c000"
    # NFE: every candidate is one full sample (step-0 mutation spends nothing): n x S
    assert [c.nfe_own for c in r.records] == [6] * 8 and [c.nfe for c in r.records] == [6] * 8 and r.nfe_spent == 48
    assert r.plans[1].candidates[0].mutation == {"rule": "vp", "beta": 0.3, "modality": "joint"}


def test_zero_order_budget_of_one_is_best_of_one():
    m = get_search("zero_order", {"n": 1, "neighbours": 1})
    (r,) = _run(m, Scripted())
    assert m.n_events == 1 and [c.candidate_id for c in r.records] == ["pa_g00_c000"]
    assert r.records[0].seed == candidate_seeds(0, "pa", 1)[0] and r.selected == "pa_g00_c000" and r.nfe_spent == 6


def test_zero_order_all_scores_equal_alternates_neighbours_and_restarts():
    (r,) = _run(get_search("zero_order", {"n": 10, "neighbours": 2}), Scripted(default=0.5))
    assert [p.info["kind"] for p in r.plans[1:]] == ["neighbours", "restart", "neighbours", "restart"]
    assert r.plans[1].info["pivot"] == "pa_g00_c000"  # tie: lowest id
    assert r.plans[3].info["pivot"] == "pa_g02_c000"
    assert r.selected == "pa_g00_c000" and len(r.records) == 10


def test_zero_order_failing_verifier():
    s0, s1 = candidate_seeds(0, "pa", 2)
    # event 0: c000 fails, so c001 is the pivot though c000 would score higher; every neighbour of
    # event 1 fails: restart; the last event's candidates have no pivot to beat
    fail = {s0, _zo_seed("pa", 1, 0), _zo_seed("pa", 1, 1)}
    (r,) = _run(get_search("zero_order", {"n": 6, "neighbours": 2}), Scripted({s0: 9.0, s1: 0.2}, fail=fail))
    assert r.plans[1].info["pivot"] == "pa_g00_c001"
    assert r.plans[2].info["kind"] == "restart" and r.plans[2].info["best_previous"] is None
    assert np.isnan(r.scores["pa_g00_c000"]["scripted"]) and r.selected != "pa_g00_c000"
    assert "pa_g00_c000" not in r.aggregates[-1]
    # every candidate of a restart failing: restart again
    allfail = candidate_seeds(0, "pa", 2)
    (r,) = _run(get_search("zero_order", {"n": 4, "neighbours": 2}), Scripted(fail=allfail))
    assert r.plans[1].info == {**r.plans[1].info, "kind": "restart", "reason": "no eligible candidate"}
    assert r.selected == "pa_g01_c000"


# --------------------------------------------------------------------------- search over paths


def test_paths_keep_the_best_paths_and_count_nfe():
    s = candidate_seeds(0, "pa", 2)
    r1 = [derive_seed(0, "pa", i, salt="paths-r1") for i in range(4)]
    # round 1 branches both fresh paths at step 2; its best two children (c003, c000) are kept for round 2
    table = {s[0]: 0.2, s[1]: 0.1, r1[0]: 0.5, r1[1]: 0.3, r1[2]: 0.1, r1[3]: 0.9}
    m = get_search("search_over_paths", {"paths": 2, "branches": 2, "schedule": [2, 4], "beta": 0.5})
    (r,) = _run(m, Scripted(table))
    by = {c.candidate_id: c for c in r.records}
    assert len(r.records) == 2 + 4 + 4
    assert r.plans[1].info["kept"] == ["pa_g00_c000", "pa_g00_c001"]
    assert r.plans[2].info["kept"] == ["pa_g01_c003", "pa_g01_c000"]
    assert [by[f"pa_g01_c00{i}"].parent_ids for i in range(4)] == [("pa_g00_c000",)] * 2 + [("pa_g00_c001",)] * 2
    assert [by[f"pa_g02_c00{i}"].parent_ids for i in range(4)] == [("pa_g01_c003",)] * 2 + [("pa_g01_c000",)] * 2
    assert by["pa_g01_c000"].step == 2 and by["pa_g02_c000"].step == 4
    # NFE (S = 6): fresh 6; round 1 at step 2: predict_x0 1 + 4 steps = 5 own, + 2 inherited; round 2 at
    # step 4: 1 + 2 = 3 own, + the parent's NFE at its step-4 latent (7 - 2 = 5: its 2 inherited, 1, 2 steps)
    assert [by[c].nfe_own for c in sorted(by)] == [6, 6] + [5] * 4 + [3] * 4
    assert by["pa_g01_c000"].nfe == 7 and by["pa_g02_c000"].nfe == 5 + 3
    assert r.nfe_spent == 44 == m.max_step_evals(6)
    assert r.selected == "pa_g01_c003"
    assert r.plans[2].candidates[0].mutation == {"rule": "vp", "beta": 0.5, "modality": "joint"}


def test_paths_budget_of_one_and_empty_schedule():
    m = get_search("search_over_paths", {"paths": 1, "branches": 3, "schedule": [], "budget": 1})
    m.check_generator(6)
    (r,) = _run(m, Scripted())
    assert m.n_events == 1 and [c.candidate_id for c in r.records] == ["pa_g00_c000"] and r.nfe_spent == 6


def test_paths_all_scores_equal_keep_the_lowest_ids():
    (r,) = _run(get_search("search_over_paths", {"paths": 2, "branches": 2, "schedule": [0, 3]}), Scripted(default=1.0))
    assert r.plans[1].info["kept"] == ["pa_g00_c000", "pa_g00_c001"]
    assert r.plans[2].info["kept"] == ["pa_g01_c000", "pa_g01_c001"]
    assert r.selected == "pa_g00_c000"
    by = {c.candidate_id: c for c in r.records}
    assert by["pa_g01_c000"].nfe_own == 6  # a branch at step 0 is a noise mutation: no predict_x0


def test_paths_failing_verifier():
    s = candidate_seeds(0, "pa", 2)
    (r,) = _run(get_search("search_over_paths", {"paths": 2, "branches": 2, "schedule": [2]}),
                Scripted({s[0]: 5.0}, fail={s[0]}))
    # the failed path cannot be kept; fewer eligible paths than `paths`: all of them are kept
    assert r.plans[1].info["kept"] == ["pa_g00_c001"] and len(r.plans[1].candidates) == 2
    assert r.selected != "pa_g00_c000"
    with pytest.raises(EvoSearchError, match="no candidate of event 0 has all its rewards"):
        _run(get_search("search_over_paths", {"paths": 2, "branches": 1, "schedule": [2]}), Scripted(fail=set(s)))


# --------------------------------------------------------------------------- routing


def test_route_rule_hand_computed():
    sides = {"vid": "video", "aud": "audio", "both": None}
    rewards = {"a": {"vid": 1.0, "aud": 0.0, "both": 3.0}, "b": {"vid": 0.0, "aud": 1.0, "both": -3.0},
               "c": {"vid": 0.5, "aud": 0.5, "both": 0.0}}
    # z(vid) of a = (1 - 0.5) / sqrt(1/6) > 0, z(aud) of a < 0: its audio is the weak side
    assert route("a", rewards, sides) == "audio" and route("b", rewards, sides) == "video"
    assert route("c", rewards, sides, fallback="joint") == "joint"  # equal z: fallback
    only_v = {"vid": "video", "both": None}
    assert route("a", rewards, only_v) == "audio"  # video fine: mutate the other track
    assert route("b", rewards, only_v) == "video"
    assert route("a", rewards, {"both": None}, fallback="video") == "video"
    equal = {c: {"vid": 1.0, "aud": 1.0} for c in "xy"}
    assert route("x", equal, sides) == "joint"
    missing = {"a": {"vid": None, "aud": 0.2}, "b": {"vid": 1.0, "aud": 0.8}}
    assert route("a", missing, sides) == "audio"  # only the audio side measured, z < 0


def test_verifier_sides_from_the_registry_and_overrides():
    assert side_of(("video", "text")) == "video" and side_of(("audio",)) == "audio" and side_of(("video", "audio")) is None
    sides = verifier_sides(["clap", "clip", "av_sync", "synth_text", "ib_av", "mine"], {"mine": ["audio", "text"]})
    assert sides == {"clap": "audio", "clip": "video", "av_sync": None, "synth_text": None, "ib_av": None, "mine": "audio"}
    with pytest.raises(ConfigError, match=r"search.params.verifier_modalities: .*'nope'"):
        verifier_sides(["nope"])


class Brightness(Verifier):
    """Test verifier: mean pixel value of the video in [0, 1] (reads the video only)."""

    name = "brightness"
    min_input = MinInput(modalities=("video",))

    def score_clip(self, clip, prompt):
        return float(np.asarray(clip.video, dtype=np.float64).mean() / 255.0)


class Loudness(Verifier):
    """Test verifier: RMS of the audio (reads the audio only)."""

    name = "loudness"
    min_input = MinInput(modalities=("audio",))

    def score_clip(self, clip, prompt):
        return float(np.sqrt(np.mean(np.square(np.asarray(clip.audio, dtype=np.float64)))))


MODS = {"brightness": ["video"], "loudness": ["audio"]}


def _routing_checked(results, weak_side):
    """Every routed choice of the plans is the one :func:`route` gives for its parent from the scores."""
    n = 0
    for r in results:
        for plan in r.plans[1:]:
            for c in plan.candidates:
                if c.fresh:  # a zero-order restart
                    continue
                parent = c.parent
                pool = {cid: {v: (None if np.isnan(x) else x) for v, x in s.items()}
                        for cid, s in r.scores.items() if int(cid.split("_g")[1][:2]) < plan.event}
                assert c.mutation["modality"] == route(parent, pool, weak_side), (plan.event, parent)
                n += 1
    return n


@pytest.mark.parametrize("method, params", [
    ("evosearch", dict(evolution_schedule=[0, 3], population_size_schedule=[3, 3, 3], elite_size=1, mutation_rate=0.3)),
    ("zero_order", dict(n=6, neighbours=2)),
    ("search_over_paths", dict(paths=2, branches=2, schedule=[2, 4])),
])
def test_route_by_modality_on_synthav(method, params):
    params = dict(params, route_by_modality=True, verifier_modalities=MODS)
    vs = [Brightness(), Loudness()]
    gen = SynthAVGenerator(num_steps=6)
    res = run_in_memory(gen, vs, get_aggregator("weighted", ["brightness", "loudness"]), [P, P2],
                        get_search(method, params), 0)
    n = _routing_checked(res, {"brightness": "video", "loudness": "audio"})
    chosen = {c.mutation["modality"] for r in res for p in r.plans[1:] for c in p.candidates if not c.fresh}
    assert n > 0 and chosen <= {"video", "audio", "joint"} and chosen & {"video", "audio"}
    # modality recorded in the plan (EvoSearch, paths: per child / per path; zero-order: per pivot)
    plan = res[0].plans[1]
    assert "modalities" in plan.info or "modality" in plan.info


def test_routing_off_or_with_two_track_verifiers_is_the_plain_modality():
    base = dict(evolution_schedule=[0, 3], population_size_schedule=[3, 3, 3], elite_size=1)
    gen = SynthAVGenerator(num_steps=6)
    from avits_core.registry import VERIFIERS

    vs = [VERIFIERS.create("av_sync")]
    agg = lambda: get_aggregator("weighted", ["av_sync"])  # noqa: E731
    plain = run_in_memory(gen, vs, agg(), [P], get_search("evosearch", dict(base, modality="audio")), 0)[0]
    routed = run_in_memory(gen, vs, agg(), [P], get_search("evosearch", dict(base, modality="audio",
                                                                              route_by_modality=True)), 0)[0]
    # av_sync reads both tracks: nothing to route, the fallback modality everywhere, same search
    assert [c.mutation for p in routed.plans[1:] for c in p.candidates] == \
        [c.mutation for p in plain.plans[1:] for c in p.candidates]
    assert {c.mutation["modality"] for p in routed.plans[1:] for c in p.candidates} == {"audio"}
    assert routed.selected == plain.selected and routed.scores == plain.scores
    # routing off leaves EvoSearch's recorded parameters as they were
    assert "route_by_modality" not in get_search("evosearch", base).describe()


def test_router_without_rewards_is_a_clear_error():
    from avits_core.search.base import PromptView

    view = PromptView("p", 1, 0, 6, [], {}, lambda: {})
    with pytest.raises(EvoSearchError, match="route_by_modality needs the per-verifier rewards"):
        Router("joint", True).for_parents(view, ["p_g00_c000"])
    assert Router("video", False).for_parents(view, ["a", "b"]) == ["video", "video"]


# --------------------------------------------------------------------------- tiny random LTX-2 (library level)


@pytest.fixture(scope="module")
def tiny_ltx2(tmp_path_factory):
    pytest.importorskip("diffusers", reason="diffusers is not installed (pip install 'avits[ltx2]')")

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_ltx2 import TINY_MAX_SEQUENCE_LENGTH, one_torch_thread, save_tiny_ltx2

    from avits_core.registry import GENERATORS

    with one_torch_thread():
        path = save_tiny_ltx2(tmp_path_factory.mktemp("ltx2") / "tiny-2.0", "2.0")
        gen = GENERATORS.create("ltx2", model_path=str(path), num_steps=3,
                                max_sequence_length=TINY_MAX_SEQUENCE_LENGTH, height=64, width=96, num_frames=9,
                                frame_rate=24.0, guidance_scale=1.0, audio_guidance_scale=1.0, stg_scale=0.0,
                                audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0,
                                guidance_rescale=0.0, audio_guidance_rescale=0.0)
        yield gen


@pytest.mark.parametrize("method, params, n_cands, own", [
    ("zero_order", dict(n=3, neighbours=1, radius=0.5, route_by_modality=True, verifier_modalities=MODS), 3, [3, 3, 3]),
    ("search_over_paths", dict(paths=1, branches=2, schedule=[1], route_by_modality=True, verifier_modalities=MODS),
     3, [3, 3, 3]),
    ("evosearch", dict(evolution_schedule=[1], population_size_schedule=[2, 2], elite_size=1, mutation_rate=0.5,
                       route_by_modality=True, verifier_modalities=MODS), 3, [3, 3, 3]),
])
def test_methods_on_tiny_ltx2(tiny_ltx2, method, params, n_cands, own):
    gen = tiny_ltx2
    p = Prompt("t0", "a red ball bounces twice")
    (r,) = run_in_memory(gen, [Brightness(), Loudness()], get_aggregator("weighted", ["brightness", "loudness"]),
                         [p], get_search(method, params), 0)
    assert len(r.records) == n_cands and r.selected in r.aggregates[-1]
    # LTX-2 without guidance: one forward pass per step; a branch at step 1 spends predict_x0 (1) + 2 steps
    assert [c.nfe_own for c in r.records] == own
    for c in r.records:
        if c.parent_ids:
            parent = next(x for x in r.records if x.candidate_id == c.parent_ids[0])
            # inherited: the parent's steps up to the branch step (0 for a step-0 neighbour)
            assert c.nfe == c.step + c.nfe_own and c.generation > parent.generation
    assert _routing_checked([r], {"brightness": "video", "loudness": "audio"}) >= 1
    clip = r.clips[r.selected]
    assert clip.video.ndim == 4 and np.isfinite(clip.audio).all()


# --------------------------------------------------------------------------- avits run (slow)
# ``avits run`` of zero_order and search_over_paths, killed with SIGKILL mid-run and rerun, compared with an
# uninterrupted run: tests/test_search_resume.py (with beam and prune; smc in test_search_smc_beam_prune.py).
