"""Replay selection: event order, missing-reward policy, ties, budgets, ARW online equivalence."""

import json
from pathlib import Path

import numpy as np
import pytest

from avits_core.aggregate import get_aggregator
from avits_core.errors import ConfigError
from avits_core.search.base import candidate_id
from avits_core.selection import SelectionSpec, replay

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "testvectors" / "arw"


def _tables(scores: dict[str, dict[str, list[float]]], order: list[str]):
    """scores[prompt][verifier] -> list of values; returns candidates and reward rows (BoN, one event per prompt)."""
    cands, rewards = [], []
    for pi, pid in enumerate(order):
        per_v = scores[pid]
        n = len(next(iter(per_v.values())))
        for i in range(n):
            cid = candidate_id(pid, 0, i)
            cands.append(dict(prompt_id=pid, candidate_id=cid, generation=0))
            for v, vals in per_v.items():
                if vals[i] is not None:
                    rewards.append(dict(candidate_id=cid, verifier=v, value=vals[i], event_seq=pi))
    return cands, rewards


def test_replay_reproduces_online_arw_on_shared_vector():
    path = VECTORS / "adam_lr005_it5_bon.json"
    if not path.exists():
        pytest.skip(f"shared test vectors not found at {VECTORS}")
    vec = json.loads(path.read_text())
    spec_v = vec["spec"]
    order = [e["prompt_id"] for e in vec["events"]]
    scores = {e["prompt_id"]: e["scores"] for e in vec["events"]}
    cands, rewards = _tables(scores, order)
    # shuffle the reward rows: replay must not depend on the order scoring tasks wrote them in
    rng = np.random.default_rng(0)
    rewards = [rewards[i] for i in rng.permutation(len(rewards))]
    spec = SelectionSpec(
        verifiers=vec["verifiers"],
        weights=[spec_v["weights"][v] for v in vec["verifiers"]],
        aggregator="arw",
        params=dict(optimizer=spec_v["optimizer"], lr=spec_v["lr"], max_iter=spec_v["max_iter"]),
    )
    res = replay(spec, cands, rewards, {v: True for v in vec["verifiers"]}, order)
    for exp, sel in zip(vec["expected"], res.selections):
        assert sel["candidate_id"] == candidate_id(exp["prompt_id"], 0, exp["selected"])
    last = vec["expected"][-1]["sigma"]
    final = {t["verifier"]: t["sigma"] for t in res.trace if t["event_seq"] == len(order) - 1}
    for v in vec["verifiers"]:
        assert final[v] == pytest.approx(last[v], rel=1e-4)


def test_missing_reward_makes_candidate_ineligible_and_keeps_it_out_of_history():
    order = ["a"]
    scores = {"a": {"x": [0.1, 0.9, 0.5], "y": [0.2, None, 0.1]}}
    cands, rewards = _tables(scores, order)
    spec = SelectionSpec(verifiers=["x", "y"], weights=[1, 1], aggregator="weighted")
    res = replay(spec, cands, rewards, {"x": True, "y": True}, order)
    assert res.selections[0]["candidate_id"] == candidate_id("a", 0, 2)  # c1 has no y reward
    assert candidate_id("a", 0, 1) not in res.aggregates


def test_prompt_without_eligible_candidates_gets_null_selection():
    order = ["a", "b"]
    scores = {"a": {"x": [None, None]}, "b": {"x": [0.3, 0.4]}}
    cands, rewards = _tables(scores, order)
    res = replay(SelectionSpec(verifiers=["x"], weights=[1]), cands, rewards, {"x": True}, order)
    assert res.selections[0]["candidate_id"] is None and res.selections[0]["score"] is None
    assert res.selections[1]["candidate_id"] == candidate_id("b", 0, 1)


def test_ties_go_to_lowest_candidate_and_direction_is_respected():
    order = ["a"]
    cands, rewards = _tables({"a": {"x": [0.5, 0.7, 0.7]}}, order)
    res = replay(SelectionSpec(verifiers=["x"], weights=[1], aggregator="weighted"), cands, rewards, {"x": True}, order)
    assert res.selections[0]["candidate_id"] == candidate_id("a", 0, 1)
    res = replay(SelectionSpec(verifiers=["x"], weights=[1], aggregator="weighted"), cands, rewards, {"x": False}, order)
    assert res.selections[0]["candidate_id"] == candidate_id("a", 0, 0)


def test_budget_uses_only_the_first_k_candidates():
    order = ["a"]
    cands, rewards = _tables({"a": {"x": [0.1, 0.3, 0.9, 0.2]}}, order)
    spec = SelectionSpec(verifiers=["x"], weights=[1], aggregator="weighted", budget=2)
    res = replay(spec, cands, rewards, {"x": True}, order)
    assert res.selections[0]["candidate_id"] == candidate_id("a", 0, 1)
    assert spec.selection_id != SelectionSpec(verifiers=["x"], weights=[1], aggregator="weighted").selection_id


def test_arw_history_spans_prompts_in_event_order():
    """The replay's ARW must equal feeding the events to ARW directly in prompt order."""
    rng = np.random.default_rng(1)
    order = [f"p{i}" for i in range(5)]
    scores = {p: {"x": list(rng.normal(0, 3, 6)), "y": list(rng.normal(0, 0.1, 6))} for p in order}
    cands, rewards = _tables(scores, order)
    spec = SelectionSpec(verifiers=["x", "y"], weights=[1, 1])
    res = replay(spec, cands, rewards, {"x": True, "y": True}, order)
    agg = get_aggregator("arw", ["x", "y"], {"x": 0.5, "y": 0.5})
    for p, sel in zip(order, res.selections):
        s = {k: np.array(v) for k, v in scores[p].items()}
        agg.observe(s)
        assert sel["candidate_id"] == candidate_id(p, 0, int(np.argmax(agg.combine(s))))


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(verifiers=[], weights=[]), "at least one verifier"),
        (dict(verifiers=["x"], weights=[1, 2]), "2 weights for 1 verifiers"),
        (dict(verifiers=["x", "x"], weights=[1, 1]), "twice"),
        (dict(verifiers=["x"], weights=[-1]), "weights"),
        (dict(verifiers=["x"], weights=[1], budget=0), "budget"),
    ],
)
def test_bad_specs(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        SelectionSpec(**kw)
