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
