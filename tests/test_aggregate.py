"""Aggregators other than ARW, the registry, select_best and the Pareto front."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avits_core.aggregate import AGGREGATORS, get_aggregator, pareto_front, select_best
from avits_core.aggregate.base import Aggregator
from avits_core.aggregate.simple import RunningMoments, average_rank
from avits_core.errors import ConfigError, ScoreError, UnknownNameError

STATS = {"a": {"mean": 1.0, "std": 2.0}, "b": {"mean": 0.0, "std": 0.5}}
VER = ["a", "b"]


def make(name: str, weights=None, **params) -> Aggregator:
    if name == "zscore" and "stats" not in params:
        params["stats"] = STATS
    return get_aggregator(name, VER, weights, **params)


ALL_NAMES = ["weighted", "rank", "minmax", "zscore", "zscore_candidate", "zscore_history", "arw"]


# ---------------------------------------------------------------- registry


def test_registry_lists_every_builtin():
    assert set(ALL_NAMES) <= set(AGGREGATORS.names())


@pytest.mark.parametrize("name", ALL_NAMES)
def test_each_builtin_builds_and_returns_float64(name):
    agg = make(name)
    assert isinstance(agg, Aggregator) and agg.name == name
    out = agg.combine({"a": [1.0, 2.0, 0.5], "b": [0.0, 1.0, 1.0]})
    assert out.dtype == np.float64 and out.shape == (3,)


def test_unknown_aggregator_name_lists_known_ones():
    with pytest.raises(UnknownNameError) as exc:
        get_aggregator("bogus", VER)
    msg = str(exc.value)
    assert "bogus" in msg and "arw" in msg and "zscore_history" in msg


@pytest.mark.parametrize("name", ["weighted", "rank", "arw", "zscore"])
def test_unknown_parameter_is_a_config_error(name):
    with pytest.raises(ConfigError, match="frobnicate"):
        make(name, frobnicate=3)


def test_weights_naming_unknown_verifier():
    with pytest.raises(ScoreError, match="nope"):
        get_aggregator("weighted", VER, {"a": 1.0, "nope": 2.0})


# ---------------------------------------------------------------- known answers


def test_weighted_sum_known_answer():
    agg = make("weighted", {"a": 0.5, "b": 2.0})
    out = agg.combine({"a": [1, 2, 3], "b": [3, 0, 1]})
    np.testing.assert_allclose(out, [6.5, 1.0, 3.5])


def test_weighted_default_weights_are_equal():
    out = make("weighted").combine({"a": [2.0, 0.0], "b": [0.0, 4.0]})
    np.testing.assert_allclose(out, [1.0, 2.0])


def test_average_rank_ties_get_mean_rank():
    np.testing.assert_allclose(average_rank(np.array([10.0, 20.0, 20.0, 5.0])), [2.0, 3.5, 3.5, 1.0])
    np.testing.assert_allclose(average_rank(np.array([7.0, 7.0, 7.0])), [2.0, 2.0, 2.0])


def test_rank_known_answer_with_ties():
    agg = make("rank")
    out = agg.combine({"a": [10, 20, 20, 5], "b": [1, 2, 3, 4]})
    ra = np.array([1.0, 2.5, 2.5, 0.0]) / 3
    rb = np.array([0.0, 1.0, 2.0, 3.0]) / 3
    np.testing.assert_allclose(out, 0.5 * ra + 0.5 * rb)
    assert out.min() >= 0 and out.max() <= 1


def test_rank_weights_are_normalised():
    out = make("rank", {"a": 3.0, "b": 1.0}).combine({"a": [0, 1], "b": [1, 0]})
    np.testing.assert_allclose(out, [0.25, 0.75])


def test_rank_rejects_negative_or_zero_weights():
    with pytest.raises(ScoreError, match=">= 0"):
        make("rank", {"a": -1.0, "b": 1.0})
    with pytest.raises(ScoreError, match="positive sum"):
        make("rank", {"a": 0.0, "b": 0.0})


def test_minmax_known_answer_and_constant():
    out = make("minmax").combine({"a": [1, 3, 5], "b": [2, 2, 2]})
    np.testing.assert_allclose(out, 0.5 * np.array([0.0, 0.5, 1.0]) + 0.5 * 0.5)


def test_zscore_prior_known_answer():
    out = make("zscore", {"a": 1.0, "b": 1.0}).combine({"a": [1.0, 3.0], "b": [0.5, -0.5]})
    np.testing.assert_allclose(out, [0.0 + 1.0, 1.0 - 1.0])


def test_zscore_missing_stats_names_the_verifier():
    with pytest.raises(ConfigError, match="'b'"):
        make("zscore", stats={"a": {"mean": 0.0, "std": 1.0}})
    with pytest.raises(ConfigError, match="stats"):
        get_aggregator("zscore", VER)


@pytest.mark.parametrize("std", [0.0, -1.0, float("nan")])
def test_zscore_bad_std_names_the_verifier(std):
    with pytest.raises(ConfigError, match="'a'.*std"):
        make("zscore", stats={"a": {"mean": 0.0, "std": std}, "b": {"mean": 0.0, "std": 1.0}})


def test_zscore_candidate_known_answer_and_constant():
    out = make("zscore_candidate", {"a": 1.0, "b": 1.0}).combine({"a": [1.0, 3.0], "b": [4.0, 4.0]})
    np.testing.assert_allclose(out, [-1.0, 1.0])


def test_zscore_history_uses_running_stats():
    agg = make("zscore_history", {"a": 1.0, "b": 0.0})
    # no observation: mean 0, std 1 -> raw scores
    np.testing.assert_allclose(agg.combine({"a": [2.0, 4.0], "b": [0, 0]}), [2.0, 4.0])
    agg.observe({"a": [5.0], "b": [0.0]})  # one value: mean 5, std 1
    np.testing.assert_allclose(agg.combine({"a": [5.0, 7.0], "b": [0, 0]}), [0.0, 2.0])
    agg.observe({"a": [1.0, 3.0], "b": [0.0, 0.0]})  # history 5, 1, 3: mean 3, sample std 2
    np.testing.assert_allclose(agg.combine({"a": [3.0, 7.0], "b": [0, 0]}), [0.0, 2.0])
    # combine never changes state
    np.testing.assert_allclose(agg.combine({"a": [3.0, 7.0], "b": [0, 0]}), [0.0, 2.0])
    agg.reset()
    np.testing.assert_allclose(agg.combine({"a": [2.0, 4.0], "b": [0, 0]}), [2.0, 4.0])


def test_zscore_history_constant_history_uses_std_one():
    agg = make("zscore_history", {"a": 1.0, "b": 0.0})
    agg.observe({"a": [2.0, 2.0], "b": [0.0, 0.0]})
    np.testing.assert_allclose(agg.combine({"a": [2.0, 3.0], "b": [0, 0]}), [0.0, 1.0])


def test_stateless_aggregators_ignore_observe():
    agg = make("minmax")
    before = agg.combine({"a": [1, 3, 5], "b": [0, 1, 0]})
    agg.observe({"a": [100, -100, 7], "b": [1, 2, 3]}, event_seq=0)
    np.testing.assert_array_equal(agg.combine({"a": [1, 3, 5], "b": [0, 1, 0]}), before)


def test_running_moments_match_numpy():
    rng = np.random.default_rng(3)
    batches = [rng.normal(5.0, 2.0, size=int(n)) for n in rng.integers(1, 20, size=30)]
    m = RunningMoments()
    for b in batches:
        m.update(b)
    allv = np.concatenate(batches)
    assert m.n == allv.size
    assert math.isclose(m.mean, allv.mean(), rel_tol=1e-12)
    assert math.isclose(m.var_pop, allv.var(), rel_tol=1e-10)
    assert math.isclose(m.std_sample, allv.std(ddof=1), rel_tol=1e-10)


# ---------------------------------------------------------------- single candidate


@pytest.mark.parametrize("name", ALL_NAMES)
def test_single_candidate(name):
    agg = make(name)
    agg.observe({"a": [0.3], "b": [0.7]})
    out = agg.combine({"a": [0.3], "b": [0.7]})
    assert out.shape == (1,) and np.isfinite(out).all()
    assert select_best(out) == 0


def test_rank_and_minmax_single_candidate_values():
    np.testing.assert_allclose(make("rank").combine({"a": [0.3], "b": [0.7]}), [1.0])
    np.testing.assert_allclose(make("minmax").combine({"a": [0.3], "b": [0.7]}), [0.5])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_score_names_verifier_and_index(name, bad):
    agg = make(name)
    with pytest.raises(ScoreError, match=r"'b'.*index 1"):
        agg.combine({"a": [1.0, 2.0], "b": [0.0, bad]})
    with pytest.raises(ScoreError, match=r"'b'.*index 1"):
        agg.observe({"a": [1.0, 2.0], "b": [0.0, bad]})


@pytest.mark.parametrize("name", ALL_NAMES)
def test_missing_verifier_is_named(name):
    with pytest.raises(ScoreError, match=r"\['b'\]"):
        make(name).combine({"a": [1.0, 2.0]})


@pytest.mark.parametrize("name", ALL_NAMES)
def test_length_mismatch_is_named(name):
    with pytest.raises(ScoreError, match=r"'b' has 3 scores, expected 2"):
        make(name).combine({"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]})


def test_empty_and_2d_scores():
    with pytest.raises(ScoreError, match="no candidates"):
        make("weighted").combine({"a": [], "b": []})
    with pytest.raises(ScoreError, match="1-D"):
        make("weighted").combine({"a": [[1.0, 2.0]], "b": [[1.0, 2.0]]})


# ---------------------------------------------------------------- selection and pareto


def test_select_best_tie_break_is_lowest_index():
    assert select_best([1.0, 3.0, 3.0, 2.0]) == 1
    assert select_best(np.array([5.0, 5.0, 5.0])) == 0
    assert select_best([0.0, -1.0, 2.0]) == 2


def test_select_best_rejects_bad_input():
    with pytest.raises(ScoreError, match="index 1"):
        select_best([1.0, float("nan")])
    with pytest.raises(ScoreError, match="empty"):
        select_best([])
    with pytest.raises(ScoreError, match="1-D"):
        select_best([[1.0]])


def test_pareto_front_small_example():
    scores = {"x": [1.0, 2.0, 0.0, 0.5, 2.0, 1.0], "y": [1.0, 0.0, 2.0, 0.5, 0.0, 0.5]}
    front = pareto_front(scores)
    assert front.dtype == bool
    # (0.5, 0.5) is dominated by (1, 1); (1, 0.5) too; the duplicate (2, 0) stays on the front
    np.testing.assert_array_equal(front, [True, True, True, False, True, False])


def test_pareto_front_single_verifier_is_the_argmax_set():
    np.testing.assert_array_equal(pareto_front({"x": [1.0, 3.0, 3.0, 2.0]}), [False, True, True, False])


def test_pareto_front_bad_input():
    with pytest.raises(ScoreError, match="'y' has 1 scores"):
        pareto_front({"x": [1.0, 2.0], "y": [1.0]})
    with pytest.raises(ScoreError, match="'x'.*index 0"):
        pareto_front({"x": [float("nan"), 2.0]})
    with pytest.raises(ScoreError, match="no verifiers"):
        pareto_front({})
