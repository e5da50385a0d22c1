"""Adaptive Reward Weighting: shared test vectors, fast vs torch reference, trace and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from avits_core.aggregate import get_aggregator, select_best
from avits_core.aggregate.arw import OPTIMIZERS, AdaptiveRewardWeighting
from avits_core.errors import ConfigError, ScoreError

VECTOR_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "testvectors" / "arw"
VECTOR_FILES = sorted(VECTOR_DIR.glob("*.json")) if VECTOR_DIR.is_dir() else []
VECTOR_PARAMS = [pytest.param(p, id=p.stem) for p in VECTOR_FILES] or [
    pytest.param(None, marks=pytest.mark.skip(reason=f"ARW test vectors not found at {VECTOR_DIR}"))
]
REL = 1e-4  # tolerance the vectors' README sets for sigma and log_var


def _from_spec(spec: dict, verifiers: list[str], impl: str) -> AdaptiveRewardWeighting:
    assert spec["dtype"] == "float32"
    agg = get_aggregator(
        "arw",
        verifiers,
        spec["weights"],
        optimizer=spec["optimizer"],
        lr=spec["lr"],
        max_iter=spec["max_iter"],
        init_log_var=spec["init_log_var"],
        eps_sq=spec["eps_sq"],
        eps_sigma=spec["eps_sigma"],
        dtype=spec["dtype"],
        impl=impl,
    )
    assert isinstance(agg, AdaptiveRewardWeighting)
    return agg


@pytest.mark.parametrize("impl", ["fast", "torch"])
@pytest.mark.parametrize("path", VECTOR_PARAMS)
def test_arw_reproduces_shared_vectors(path: Path, impl: str):
    data = json.loads(path.read_text())
    verifiers = list(data["verifiers"])
    agg = _from_spec(data["spec"], verifiers, impl)
    assert len(data["events"]) == len(data["expected"]) > 0
    n_hist = 0
    for seq, (ev, ex) in enumerate(zip(data["events"], data["expected"])):
        agg.observe(ev["scores"], event_seq=seq, prompt_id=ev["prompt_id"], generation=0)
        n_hist += len(ev["scores"][verifiers[0]])
        for v in verifiers:
            assert agg.log_var[v] == pytest.approx(ex["log_var"][v], rel=REL), (seq, v)
            assert agg.sigma[v] == pytest.approx(ex["sigma"][v], rel=REL), (seq, v)
        rows = agg.trace[-len(verifiers) :]
        assert [r["verifier"] for r in rows] == verifiers
        for r in rows:
            assert (r["event_seq"], r["prompt_id"], r["generation"], r["history_n"]) == (seq, ev["prompt_id"], 0, n_hist)
            assert r["sigma"] == pytest.approx(ex["sigma"][r["verifier"]], rel=REL)
            for key in ("loss_before", "loss_after"):
                if ex[key] is None:
                    assert r[key] is None
                else:
                    assert r[key] == pytest.approx(ex[key], rel=REL, abs=1e-5), (seq, key)
        aggregate = agg.combine(ev["scores"])
        np.testing.assert_allclose(aggregate, ex["aggregate"], rtol=1e-4, atol=1e-5)
        assert select_best(aggregate) == ex["selected"], seq
    assert len(agg.trace) == len(verifiers) * len(data["events"])


def _stream(seed: int, n_events: int) -> list[dict[str, np.ndarray]]:
    """Events of varying size (1 to 8 candidates), verifiers on very different scales."""
    rng = np.random.default_rng(seed)
    spec = {"clap": (0.3, 0.05), "sync": (-2.0, 3.0), "text": (0.0, 1.0)}
    return [
        {v: rng.normal(m, s, size=int(n)) for v, (m, s) in spec.items()} for n in rng.integers(1, 9, size=n_events)
    ]


# float32: fast and torch round differently (a fused vs a two-step gradient, torch's SIMD sqrt);
# RMSprop at lr 0.05 ends each fit on a limit cycle of amplitude ~lr around the optimum, which
# amplifies those last-bit differences, so it gets a wider bound.
F32_REL = {"adam": 1e-5, "adamw": 1e-5, "rmsprop": 2e-4, "sgd": 1e-5, "adagrad": 1e-5}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_fast_agrees_with_torch_reference(optimizer: str, dtype: str):
    stream = _stream(7, 14)
    verifiers = list(stream[0])
    fast = get_aggregator("arw", verifiers, optimizer=optimizer, dtype=dtype, impl="fast")
    ref = get_aggregator("arw", verifiers, optimizer=optimizer, dtype=dtype, impl="torch")
    rel = 1e-9 if dtype == "float64" else F32_REL[optimizer]
    for seq, ev in enumerate(stream):
        fast.observe(ev, event_seq=seq)
        ref.observe(ev, event_seq=seq)
        for v in verifiers:
            assert fast.log_var[v] == pytest.approx(ref.log_var[v], rel=rel), (seq, v)
        rf, rr = fast.trace[-1], ref.trace[-1]
        assert rf["history_n"] == rr["history_n"]
        if rr["loss_before"] is None:
            assert rf["loss_before"] is None and rf["loss_after"] is None
        else:
            assert rf["loss_before"] == pytest.approx(rr["loss_before"], rel=max(rel, 1e-6), abs=1e-6)
            assert rf["loss_after"] == pytest.approx(rr["loss_after"], rel=max(rel, 1e-6), abs=1e-6)
        if dtype == "float64":
            assert select_best(fast.combine(ev)) == select_best(ref.combine(ev))


def test_fit_converges_to_log_variance_of_history():
    # the optimum of 1/2 e^{-s}(var + eps) + 1/2 s is s = log(var + eps): known closed form
    x = np.array([0.1, 0.5, 0.9, 1.4, -0.3])
    agg = get_aggregator("arw", ["a"], max_iter=3000, optimizer="adam", lr=0.05, dtype="float64")
    agg.observe({"a": x})
    assert agg.log_var["a"] == pytest.approx(math.log(x.var() + 1e-6), abs=1e-3)
    assert agg.sigma["a"] == pytest.approx(math.sqrt(x.var() + 1e-6), rel=1e-3)


def test_history_spans_prompts_and_noisier_verifier_gets_less_weight():
    rng = np.random.default_rng(0)
    agg = get_aggregator("arw", ["quiet", "loud"], max_iter=200)
    for p in range(10):
        agg.observe({"quiet": rng.normal(0, 0.1, 6), "loud": rng.normal(0, 10.0, 6)}, prompt_id=f"p{p}")
    assert agg.history_n == 60
    assert agg.sigma["loud"] > 20 * agg.sigma["quiet"]
    # the same raw gain counts far more on the quiet verifier
    out = agg.combine({"quiet": [0.0, 1.0], "loud": [1.0, 0.0]})
    assert select_best(out) == 1


def test_no_fit_while_history_holds_one_value():
    agg = get_aggregator("arw", ["a", "b"], init_log_var=0.5)
    agg.observe({"a": [1.0], "b": [2.0]}, prompt_id="p0")
    assert agg.log_var == {"a": 0.5, "b": 0.5}
    assert [r["loss_before"] for r in agg.trace] == [None, None]
    assert [r["loss_after"] for r in agg.trace] == [None, None]
    assert agg.trace[0]["event_seq"] == 0 and agg.trace[0]["generation"] is None
    assert agg.trace[0]["sigma"] == pytest.approx(math.exp(0.25))
    agg.observe({"a": [3.0], "b": [2.0]}, prompt_id="p1", generation=2)
    row = agg.trace[-1]
    assert row["event_seq"] == 1 and row["prompt_id"] == "p1" and row["generation"] == 2 and row["history_n"] == 2
    assert row["loss_before"] is not None and row["loss_after"] < row["loss_before"]
    assert agg.log_var["a"] != 0.5


def test_combine_formula_and_no_state_change():
    agg = get_aggregator("arw", ["a", "b"], {"a": 0.25, "b": 0.75})
    # before any fit: sigma = exp(0) = 1
    np.testing.assert_allclose(agg.combine({"a": [2.0, 0.0], "b": [0.0, 4.0]}), [0.5 / (1 + 1e-6), 3.0 / (1 + 1e-6)])
    agg.observe({"a": [0.0, 1.0, 2.0], "b": [5.0, 0.0, -5.0]})
    sig = agg.sigma
    trace_len = len(agg.trace)
    scores = {"a": [1.0, 2.0], "b": [3.0, -1.0]}
    expect = [0.25 * 1 / (sig["a"] + 1e-6) + 0.75 * 3 / (sig["b"] + 1e-6), 0.25 * 2 / (sig["a"] + 1e-6) - 0.75 / (sig["b"] + 1e-6)]
    np.testing.assert_allclose(agg.combine(scores), expect, rtol=1e-12)
    np.testing.assert_allclose(agg.combine(scores), expect, rtol=1e-12)
    assert agg.sigma == sig and len(agg.trace) == trace_len


def test_reset_restores_initial_state():
    agg = get_aggregator("arw", ["a"])
    agg.observe({"a": [0.0, 3.0]})
    agg.reset()
    assert agg.trace == [] and agg.history_n == 0 and agg.log_var == {"a": 0.0}


@pytest.mark.parametrize(
    "params, match",
    [
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"impl": "jax"}, "impl"),
        ({"dtype": "float16"}, "dtype"),
        ({"lr": 0.0}, "lr"),
        ({"lr": "fast"}, "lr"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"eps_sq": -1.0}, "eps_sq"),
        ({"init_log_var": float("nan")}, "init_log_var"),
        ({"betas": (0.9, 0.99)}, "betas"),
    ],
)
def test_bad_parameters_are_named(params, match):
    with pytest.raises(ConfigError, match=match):
        get_aggregator("arw", ["a"], **params)


@pytest.mark.parametrize("impl", ["fast", "torch"])
def test_diverging_fit_is_an_error_naming_the_verifier(impl):
    agg = get_aggregator("arw", ["a", "b"], optimizer="sgd", lr=1e6, impl=impl, max_iter=5)
    with pytest.raises(ScoreError, match="diverged.*'a'"):
        agg.observe({"a": [0.0, 1e-4], "b": [0.0, 1.0]})


def test_bad_scores_raise_before_state_changes():
    agg = get_aggregator("arw", ["a", "b"])
    with pytest.raises(ScoreError, match=r"'b'.*index 0"):
        agg.observe({"a": [1.0], "b": [float("nan")]})
    assert agg.history_n == 0 and agg.trace == []
