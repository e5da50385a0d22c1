"""Numeric thread limits of a run (avits_core/threads.py): the rule, the user's setting, and the limit
really reaching torch, BLAS/OpenMP and OpenCV in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avits_core.config import config_from_dict
from avits_core.threads import numeric_threads_for, parallel_tasks

REPO = Path(__file__).resolve().parents[1]


def _cfg(**runner):
    return config_from_dict({
        "prompts": {"source": ["a dog barks"]},
        "verifiers": [{"name": "av_align"}, {"name": "av_sync"}, {"name": "synth_text"}],
        "evaluation": {"verifiers": ["quality", "av_sync"]},
        "runner": runner,
    }, source="test")


def test_parallel_tasks_counts_guided_and_held_out_verifiers_once():
    assert parallel_tasks(_cfg()) == 4  # av_sync is guided and held out: one scoring task
    assert parallel_tasks(_cfg(workers=2)) == 2


def test_default_is_cores_over_parallel_tasks(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert numeric_threads_for(_cfg(), cores=2) == 1
    assert numeric_threads_for(_cfg(), cores=16) == 4
    assert numeric_threads_for(_cfg(workers=2), cores=16) == 8


def test_a_flow_with_another_fan_out_gives_its_task_count(monkeypatch):
    """A rerank scores only the verifiers with pairs left: its fan-out, bounded by runner.workers."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert numeric_threads_for(_cfg(), cores=16, tasks=1) == 16
    assert numeric_threads_for(_cfg(), cores=16, tasks=3) == 5
    assert numeric_threads_for(_cfg(workers=2), cores=16, tasks=8) == 8
    assert numeric_threads_for(_cfg(), cores=2, tasks=0) == 2  # nothing to score: one task's worth
    assert numeric_threads_for(_cfg(threads=3), cores=16, tasks=1) == 3


def test_user_environment_stands_and_config_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert numeric_threads_for(_cfg(), cores=16) is None
    assert numeric_threads_for(_cfg(threads=5), cores=16) == 5


def test_runner_threads_is_not_part_of_the_run_identity():
    assert _cfg(threads=2).config_hash() == _cfg().config_hash()


def test_apply_limits_loaded_libraries_in_a_fresh_process():
    code = """
import json, numpy, torch, cv2
from threadpoolctl import threadpool_info
from avits_core.threads import apply_numeric_threads
apply_numeric_threads(1)
print(json.dumps({"torch": torch.get_num_threads(), "cv2": cv2.getNumThreads(),
                  "pools": sorted({p["num_threads"] for p in threadpool_info()}),
                  "env": __import__("os").environ["OMP_NUM_THREADS"]}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"torch": 1, "cv2": 1, "pools": [1], "env": "1"}


def test_making_a_verifier_for_its_cache_version_imports_no_torch():
    """`avits rerank` / a finished `avits run` make every verifier only for its cache_version: the
    device and dtype checks must not import torch (1.6 CPU-s) for the plain spellings."""
    code = """
import sys
from avits_core.registry import VERIFIERS
from avits_core.runner import get_verifier
versions = {n: get_verifier(n, {}).cache_version for n in VERIFIERS.names()}
print("torch" in sys.modules, len(versions))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                         capture_output=True, text=True, check=True)
    loaded, n = out.stdout.split()
    assert loaded == "False" and int(n) >= 15


def test_device_and_dtype_checks_match_torch_without_importing_it():
    import torch

    from avits_core.errors import ConfigError
    from avits_core.loading import dtype_name, parse_device

    for d in ("cpu", "cuda", "cuda:0", "cuda:3", "mps", "meta"):
        assert parse_device(d) == str(torch.device(d))
    for spelling, name in (("fp16", "float16"), ("BF16", "bfloat16"), ("torch.float32", "float32"), ("half", "float16")):
        assert dtype_name(spelling) == name == str(getattr(torch, name)).removeprefix("torch.")
    assert dtype_name(torch.bfloat16) == "bfloat16"
    with pytest.raises(ConfigError, match="dtype must be one of .* got 'int8'"):
        dtype_name("int8")
    with pytest.raises(ConfigError, match="not a valid torch device"):
        parse_device("cuda:x")
