"""Issue 11 leftovers: model loading in one module (avits_core.loading), pre-flight checks run once per
command (the CLI's check stands in for the flow's), and the search method, not a string compare, states
its budget and its one-line label."""

from __future__ import annotations

from pathlib import Path

import pytest

from avits_core import loading, preflight, runner
from avits_core.checks.models import device_line
from avits_core.config import load_config
from avits_core.errors import ConfigError, MissingWeightsError
from avits_core.search.base import MethodParams, SearchMethod, search_from_config
from avits_core.verifiers import hf
from helpers import tiny_config_file

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ loading
def test_dtype_and_device_parsing():
    import torch

    assert loading.parse_dtype("bf16") is torch.bfloat16
    assert loading.parse_dtype("torch.float16") is torch.float16
    assert loading.parse_dtype(torch.float64) is torch.float64
    with pytest.raises(ConfigError, match=r"ltx2: dtype must be one of \['bfloat16', 'float16', 'float32'\]"):
        loading.parse_dtype("float64", allowed=("float32", "bfloat16", "float16"), what="ltx2")
    with pytest.raises(ConfigError, match="dtype"):
        loading.parse_dtype(torch.float64, allowed=("float32",))
    with pytest.raises(ConfigError, match="float8"):
        loading.parse_dtype("float8")
    assert loading.parse_device("cuda:1") == "cuda:1"  # parsing does not ask for the device
    with pytest.raises(ConfigError, match="not a valid torch device"):
        loading.parse_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            loading.check_device("cuda")
        # the pre-flight's device finding is the same check
        assert device_line("generator synth", "cuda:1") == (
            "ERROR: generator synth: device 'cuda:1' requested but CUDA is not available on this machine")
    assert device_line("generator synth", "cpu") is None


def test_hub_ids_and_local_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not loading.looks_like_local_path("laion/clap-htsat-unfused")
    assert loading.looks_like_local_path("./laion/clap") and loading.looks_like_local_path("a/b/c")
    with pytest.raises(MissingWeightsError, match="has no config.json"):
        loading.resolve_model_dir(tmp_path, what="X")
    with pytest.raises(MissingWeightsError, match="not in the local Hugging Face cache"):
        loading.resolve_model_dir("nobody-here/no-such-model", what="X", cache_dir=tmp_path / "hub")
    with pytest.raises(MissingWeightsError, match="X: folder .* does not exist; get it"):
        loading.resolve_folder(tmp_path / "nope", what="X", hint="get it")
    assert loading.resolve_folder(tmp_path, what="X", hint="") == tmp_path


def test_one_process_wide_cache_for_models_and_instances():
    # the verifier helpers are the loading module's functions, not copies
    assert hf.cached is loading.cached and hf.parse_device is loading.parse_device
    calls = []
    a = loading.cached("T-model", "/x", "cpu", "float32", lambda: calls.append(1) or object())
    b = loading.cached("T-model", "/x", "cpu", "float32", lambda: calls.append(1) or object())
    assert a is b and calls == [1]
    g1 = runner.get_generator("synth", {"num_steps": 5})
    assert runner.get_generator("synth", {"num_steps": 5}) is g1
    assert runner.get_generator("synth", {"num_steps": 6}) is not g1
    assert ("generator", "synth", '{"num_steps": 5}') in loading.cache_keys("generator")
    # a generator whose constructor loads through the cache does not deadlock (no lock held while loading)
    nested = loading.cached_instance("T-outer", "n", {}, lambda: loading.cached("T-inner", "/y", "cpu", "-", object))
    assert loading.cache_keys("T-inner") and nested is loading.cached_instance("T-outer", "n", {}, object)
    loading.clear_cache("T-model")
    assert not loading.cache_keys("T-model") and loading.cache_keys("T-inner")
    assert loading.cached("T-model", "/x", "cpu", "float32", object) is not a
    for kind in ("T-model", "T-inner", "T-outer"):
        loading.clear_cache(kind)


def test_cache_loads_a_key_once_across_threads_and_keys_side_by_side():
    import threading
    import time

    started, release, calls = threading.Event(), threading.Event(), []

    def slow():
        calls.append("slow")
        started.set()
        release.wait(10)
        return "slow-model"

    out = []
    threads = [threading.Thread(target=lambda: out.append(loading.cached("T-slow", "/s", "cpu", "f", slow)))
               for _ in range(3)]
    for t in threads:
        t.start()
    assert started.wait(10)
    t0 = time.perf_counter()  # another key is not held up by the slow load
    assert loading.cached("T-fast", "/f", "cpu", "f", lambda: "fast") == "fast"
    assert time.perf_counter() - t0 < 5 and not release.is_set()
    release.set()
    for t in threads:
        t.join(10)
    assert out == ["slow-model"] * 3 and calls == ["slow"]
    loading.clear_cache("T-slow")
    loading.clear_cache("T-fast")


# ------------------------------------------------------------------------------- checks run once
def test_prepare_run_reuses_the_commands_check_once(tmp_path, monkeypatch):
    cfg = load_config(tiny_config_file(tmp_path))
    preflight.check_run(cfg)  # what `avits run` does before it starts the flow

    def again(*a, **k):
        raise AssertionError("pre-flight ran a second time")

    monkeypatch.setattr(preflight, "check_run", again)
    ctx = runner.prepare_run(cfg)
    assert [p.text for p in ctx.prompts] == cfg.prompts.source
    with pytest.raises(AssertionError, match="second time"):  # one check serves one run
        runner.prepare_run(cfg)


def test_a_partial_or_different_check_does_not_count(tmp_path, monkeypatch):
    cfg = load_config(tiny_config_file(tmp_path))
    preflight.check_run(cfg, skip=("generator",))  # a finished run's check: the generator is left out
    assert preflight.take_passed(cfg) is None
    preflight.check_run(cfg, only=("generator",))  # ... checked later: now every step has passed
    assert preflight.take_passed(load_config(tiny_config_file(tmp_path))) is not None
    other = load_config(tiny_config_file(tmp_path), ["search.n=3"])
    preflight.check_run(cfg)
    assert preflight.take_passed(other) is None
    assert preflight.take_passed(cfg) is not None and preflight.take_passed(cfg) is None


def test_prepare_run_alone_still_refuses_missing_weights(tmp_path):
    verifiers = [{"name": "clap", "params": {"model_path": str(tmp_path / "no-clap")}}]
    cfg = load_config(tiny_config_file(tmp_path, verifiers=verifiers))
    with pytest.raises(MissingWeightsError, match="no-clap"):
        runner.prepare_run(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --------------------------------------------------------------------- the method states its budget
class _Fixed(SearchMethod):
    name = "fixed_three"
    Params = MethodParams

    def plan(self, event, view):  # pragma: no cover - not run
        raise NotImplementedError


def test_search_methods_state_budget_and_label(tmp_path):
    bon = search_from_config(load_config(tiny_config_file(tmp_path), ["search.n=5"]).search)
    assert bon.budget() == (5, "search.n=5") and bon.label() == "Best-of-5"
    evo_cfg = load_config(REPO / "data/configs/evosearch-demo.yaml")
    evo = search_from_config(evo_cfg.search)
    pops = list(evo.cfg.population_size_schedule)
    assert evo.budget() == (sum(pops), f"EvoSearch population schedule {pops}") and evo.label() == "EvoSearch"
    assert _Fixed().budget() == (None, "search fixed_three") and _Fixed().label() == "fixed_three"


def test_preflight_budget_limit_comes_from_the_method(tmp_path, monkeypatch):
    cfg = load_config(REPO / "data/configs/evosearch-demo.yaml", [f"output_root={tmp_path}/runs"])
    line = [ln for ln in preflight.collect(cfg, models=False) if "search" in ln and "candidates per prompt" in ln]
    total = sum(search_from_config(cfg.search).cfg.population_size_schedule)
    assert line == [f"ok: search evosearch ({total} candidates per prompt)"]
    monkeypatch.setattr(preflight, "MAX_N_PER_PROMPT", total - 1)
    with pytest.raises(preflight.PreflightError, match=r"EvoSearch population schedule \[.*\] asks for"):
        preflight.check_run(cfg, models=False)
