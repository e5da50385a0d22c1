"""The SearchMethod protocol: a method is one file that only plans; the engine does the rest, in memory
and over the run's tables alike; a third-party method plugs in through the entry-point group
``avits.search`` and runs through ``avits run``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from avits_core.aggregate import get_aggregator
from avits_core.errors import ConfigError, EvoSearchError, UnknownNameError
from avits_core.generators.synth import SynthAVGenerator
from avits_core.prompts import Prompt
from avits_core.registry import SEARCH_METHODS, Registry
from avits_core.search.base import CandidatePlan, EventPlan, MethodParams, PromptView, SearchMethod, get_search
from avits_core.search.best_of_n import BestOfN
from avits_core.search.engine import OnlineSelection, best_of, generate_event
from avits_core.search.evosearch import EvoSearch
from avits_core.search.memory import run_in_memory
from avits_core.verifiers.base import Verifier
from helpers import tiny_config, write_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROMPTS = [Prompt("pa", "a small red ball bounces three times with a high click over rain"),
           Prompt("pb", "a large blue cube bounces twice with a low beep over wind")]


class SeedParity(Verifier):
    """Test verifier: 1.0 for a clip whose seed is even, else 0.0 (a hand-checkable ranking)."""

    name = "seed_parity"

    def score_clip(self, clip, prompt):
        return float(clip.meta["seed"] % 2 == 0)


class Chain(SearchMethod):
    """Test method: event 0 = two fresh noises, events 1 and 2 = one child of the previous event's best
    candidate, branched at step 2 (so every candidate keeps its step-2 latent)."""

    name = "chain"

    @property
    def n_events(self) -> int:
        return 3

    def capture_steps(self, event):
        return [2] if event < 2 else []

    def plan(self, event, view):
        if event == 0:
            return EventPlan(view.prompt_id, 0, [CandidatePlan(seed=10), CandidatePlan(seed=11)])
        agg = view.aggregates()
        last = {c: a for c, a in agg.items() if c in view.made_at(event - 1)}
        parent = best_of(last)
        return EventPlan(view.prompt_id, event, [CandidatePlan(seed=100 + event, parent=parent, step=2,
                                                               mutation={"rule": "vp", "beta": 0.5})])


# --------------------------------------------------------------------------- protocol and registry


def test_builtins_are_registered_and_their_names_agree():
    assert {"best_of_n", "evosearch"} <= set(SEARCH_METHODS.names())
    for name in ("best_of_n", "evosearch"):
        assert SEARCH_METHODS.get_class(name).name == name
    with pytest.raises(UnknownNameError, match="unknown search method 'nope'.*best_of_n"):
        get_search("nope")


def test_a_class_name_that_differs_from_its_key_is_an_error():
    reg = Registry("search method", "avits.search", {"alias": "avits_core.search.best_of_n:BestOfN"})
    with pytest.raises(ConfigError, match="registered under a name its class does not have.*'best_of_n'"):
        reg.get_class("alias")


def test_builtin_names_are_the_shipped_ones_not_later_registrations():
    reg = Registry("search method", "avits.search", {"best_of_n": "avits_core.search.best_of_n:BestOfN"})
    reg.register("mine", "my_plugin:Mine")
    reg.register("other", BestOfN)
    assert reg.builtin_names() == ["best_of_n"]
    assert {"best_of_n", "mine", "other"} <= set(reg.names())  # (+ any installed plugin)


def test_parameters_are_declared_and_checked():
    assert BestOfN({"n": 3}).params.n == 3
    from avits_core.config import SearchConfig

    assert get_search("best_of_n").params.n == 8
    m = SEARCH_METHODS.get_class("best_of_n").from_config(SearchConfig(method="best_of_n", n=5))
    assert m.params.n == 5 and m.n_events == 1 and m.describe()["n"] == 5
    with pytest.raises(ConfigError, match=r"search\.params\.n"):
        BestOfN({"n": 0})
    with pytest.raises(ConfigError, match=r"search\.params\.bogus: unknown parameter"):
        BestOfN({"bogus": 1})
    with pytest.raises(ConfigError, match=r"search\.params\.mutation_rate"):  # EvoSearch's own message passes through
        EvoSearch({"mutation_rate": 2.0})
    evo = EvoSearch({"preset": "demo"})
    assert evo.n_events == 3 and evo.capture_steps(0) == [0, 6] and evo.describe()["population_size_schedule"] == [4, 4, 4]
    with pytest.raises(ValueError, match="a branch needs both"):
        CandidatePlan(seed=1, parent="x")
    plan = EventPlan("p", 1, [CandidatePlan(seed=1, parent="p_g00_c000", step=3, mutation={"rule": "vp", "beta": 0.2})],
                     info={"k": 1})
    assert EventPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_online_selection_equals_the_replay():
    """Fed event by event, the aggregator ranks exactly as selection.replay does (hand-built rewards)."""
    from avits_core.selection import SelectionSpec, replay

    spec = SelectionSpec(verifiers=["a", "b"], weights=[1, 1], aggregator="arw", params={"max_iter": 5})
    hib = {"a": True, "b": False}
    rng = np.random.default_rng(0)
    cands, rewards, online = [], [], OnlineSelection(get_aggregator("arw", ["a", "b"], spec.weight_map, max_iter=5),
                                                     ["a", "b"], hib)
    for pi, pid in enumerate(["p0", "p1"]):
        for g in range(2):
            rows = []
            for i in range(3):
                cid = f"{pid}_g{g:02d}_c{i:03d}"
                cands.append(dict(prompt_id=pid, candidate_id=cid, generation=g))
                vals = {"a": float(rng.normal()), "b": None if (pi, g, i) == (0, 1, 2) else float(rng.normal())}
                rows.append((cid, vals))
                rewards += [dict(candidate_id=cid, verifier=v, value=x, event_seq=pi * 2 + g)
                            for v, x in vals.items() if x is not None]
            online.feed(pi * 2 + g, pid, g, rows)
        if pid == "p0":
            mine = online.aggregates("p0")
    res = replay(spec, cands, rewards, hib, ["p0", "p1"])
    assert mine == {c: res.aggregates[c] for c in mine} and "p0_g01_c002" not in mine  # missing b: not eligible
    assert online.aggregates("p1") == {c: a for c, a in res.aggregates.items() if c.startswith("p1")}
    assert best_of(online.aggregates("p1")) == res.selections[1]["candidate_id"]


def test_a_method_is_one_class_the_engine_runs_in_memory():
    gen = SynthAVGenerator(num_steps=6)
    (ra, rb) = run_in_memory(gen, [SeedParity()], get_aggregator("weighted", ["seed_parity"]), PROMPTS, Chain(), 0)
    for r in (ra, rb):
        ids = [c.candidate_id for c in r.records]
        assert ids == [f"{r.prompt_id}_g00_c000", f"{r.prompt_id}_g00_c001", f"{r.prompt_id}_g01_c000",
                       f"{r.prompt_id}_g02_c000"]
        by = {c.candidate_id: c for c in r.records}
        g1, g2 = by[ids[2]], by[ids[3]]
        # seed 10 is even (score 1) and beats seed 11: it is the parent of event 1; event 2 branches from
        # the better of event 1's single child (itself)
        assert g1.parent_ids == (ids[0],) and g2.parent_ids == (ids[2],) and g1.seed == 101 and g2.seed == 102
        assert g1.step == g2.step == 2
        # NFE: 6 for a fresh sample; a child spends 1 (predict_x0 of the VP mutation) + 4 steps and
        # inherits its parent's NFE at the branch point: 2 steps for g1; for g2, g1's latent at step 2, which
        # already carried g1's 2 inherited steps + its predict_x0
        assert [c.nfe_own for c in r.records] == [6, 6, 5, 5] and g1.nfe == 2 + 5 and g2.nfe == 3 + 5
        assert r.nfe_spent == 22 and r.scores[ids[0]]["seed_parity"] == 1.0 and r.scores[ids[1]]["seed_parity"] == 0.0
        assert r.selected == ids[0] or r.scores[r.selected]["seed_parity"] == 1.0
        assert [len(a) for a in r.aggregates] == [2, 3, 4]


def test_generate_event_without_the_parent_latent_is_a_clear_error():
    gen = SynthAVGenerator(num_steps=4)
    plan = EventPlan("pa", 1, [CandidatePlan(seed=1, parent="pa_g00_c000", step=2, mutation={"rule": "vp", "beta": 0.1})])

    def nothing(cid, step):
        raise EvoSearchError(f"candidate {cid} kept no latent at step {step}")

    with pytest.raises(EvoSearchError, match="pa_g00_c000 kept no latent at step 2"):
        generate_event(gen, PROMPTS[0], plan, [], nothing)
    with pytest.raises(EvoSearchError, match="creates no candidate"):
        generate_event(gen, PROMPTS[0], EventPlan("pa", 0, []), [], nothing)


def test_plan_view_gives_aggregates_only_when_asked():
    calls = []
    view = PromptView("p", 1, 0, 6, [], {}, lambda: calls.append(1) or {"x": 1.0})
    assert calls == []
    assert view.aggregates() == {"x": 1.0} and view.aggregates() == {"x": 1.0} and calls == [1]


# --------------------------------------------------------------------------- a plugin through `avits run`


@pytest.fixture(scope="module")
def search_plugin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("search-plugin")
    src = root / "src"
    shutil.copytree(REPO / "tests/plugins/avits_toy_search", src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-index", "--disable-pip-version-check", "--target", str(site), str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return site


def _avits(args, site: Path, tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               HF_HUB_OFFLINE="1", COLUMNS="200")
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([str(BIN / "avits"), *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)


def test_method_not_visible_without_the_plugin():
    assert "toy_pair" not in SEARCH_METHODS.names()


@pytest.mark.slow
def test_plugin_search_method_runs_through_avits_run(search_plugin, tmp_path):
    cfg = tiny_config(tmp_path, run_id="toy")
    cfg["search"] = {"method": "toy_pair", "params": {"k": 2, "step": 3, "beta": 0.4}}
    path = write_config(cfg, tmp_path / "toy.yaml")
    r = _avits(["run", str(path), "-q"], search_plugin, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "runs" / "toy"
    from avits_core.store.duck import query

    c = query(run, "SELECT prompt_id, candidate_id, generation, step, parent_ids, nfe, nfe_own, search FROM candidates "
                   "ORDER BY candidate_id").to_pylist()
    assert len(c) == 2 * 4 and {x["search"] for x in c} == {"toy_pair"}
    for x in c:
        if x["generation"] == 0:
            assert x["parent_ids"] == [] and x["nfe"] == x["nfe_own"] == 6
        else:
            (par,) = x["parent_ids"]
            assert par.startswith(x["prompt_id"] + "_g00_") and x["step"] == 3
            assert x["nfe_own"] == 1 + 3 and x["nfe"] == 3 + 4
    ev = query(run, "SELECT DISTINCT r.event_seq, c.prompt_id, c.generation FROM rewards r "
                    "JOIN candidates c USING (candidate_id)").to_pylist()
    pindex = {p: i for i, p in enumerate(sorted({x["prompt_id"] for x in c}))}
    assert len(ev) == 4 and all(e["event_seq"] == pindex[e["prompt_id"]] * 2 + e["generation"] for e in ev)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["search"]["method"] == "toy_pair" and info["search"]["k"] == 2
    plans = sorted((run / "plans").rglob("e01.json"))
    assert len(plans) == 2
    for pf in plans:  # the stored plan names the parent every child of event 1 has
        plan = json.loads(pf.read_text())
        kids = [x for x in c if x["prompt_id"] == plan["prompt_id"] and x["generation"] == 1]
        assert {x["parent_ids"][0] for x in kids} == {plan["info"]["parent"]}

    bad = dict(cfg, run_id="bad")
    bad["search"] = {"method": "toy_misnamed"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    r = _avits(["run", str(tmp_path / "bad.yaml"), "-q"], search_plugin, tmp_path, timeout=120)
    assert r.returncode == 2 and "registered under a name its class does not have" in r.stdout + r.stderr
    assert not (tmp_path / "runs" / "bad").exists()


# --------------------------------------------------------------------------- cost of a step


@pytest.mark.parametrize("method", ["best_of_n", "evosearch"])
def test_table_reads_of_a_run_do_not_grow_with_its_size(method, tmp_path, monkeypatch):
    """Each (prompt, event) step works from the run state read once, not from the tables: a run of 6
    prompts reads the tables as often as a run of 2 (the old runner re-read candidates on every append
    and EvoSearch replayed every table per generation)."""
    from avits_core import runner
    from avits_core.config import config_from_dict
    from avits_core.store import RunStore

    calls = {"n": 0}
    real = RunStore.read

    def counting(self, table, columns=None):
        calls["n"] += 1
        return real(self, table, columns)

    monkeypatch.setattr(RunStore, "read", counting)
    search = {"method": "best_of_n", "n": 2, "prompts_per_task": 1} if method == "best_of_n" else \
        {"method": "evosearch", "params": {"evolution_schedule": [1], "population_size_schedule": [2, 2], "elite_size": 1}}
    reads = []
    for n in (2, 6):
        cfg = config_from_dict(dict(
            name=f"cost-{n}", output_root=str(tmp_path), seed=0, generator=dict(name="synth", params=dict(num_steps=3)),
            prompts=dict(source=[f"a small red ball bounces {w} times" for w in ["one", "two", "three", "four", "five", "six"][:n]]),
            search=search, verifiers=[dict(name="synth_text")], aggregator=dict(name="arw", params=dict(max_iter=3)),
            evaluation=dict(oracle=False, verifiers=[])))
        ctx = runner.prepare_run(cfg, check_models=False)
        calls["n"] = 0
        runner.run_search(ctx)
        reads.append(calls["n"])
        assert ctx.store.read("candidates").num_rows == n * (2 if method == "best_of_n" else 3)
    assert reads[0] == reads[1] and reads[0] <= 6, reads
