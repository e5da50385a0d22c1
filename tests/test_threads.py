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


# ------------------------------------------------------------------------------ compute slots

@pytest.fixture
def slots():
    """set_compute_slots for the test; the process's bound is restored after it."""
    from avits_core import threads

    before = threads.compute_slots()
    yield threads.set_compute_slots
    threads.set_compute_slots(before)


def test_compute_slots_rule(monkeypatch):
    from avits_core.threads import compute_slots_for

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert compute_slots_for(_cfg(), cores=2) == 2  # 1 numeric thread each: one task per core
    assert compute_slots_for(_cfg(), cores=16) == 4  # 4 threads each (16 cores // 4 scoring tasks)
    assert compute_slots_for(_cfg(threads=2), cores=16) == 8
    assert compute_slots_for(_cfg(threads=32), cores=16) == 1
    assert compute_slots_for(_cfg(compute_slots=3), cores=2) == 3
    assert compute_slots_for(_cfg(compute_slots=0), cores=2) is None  # 0: no bound
    assert compute_slots_for(_cfg(), cores=16, threads=1) == 16  # the threads a flow applied
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's setting stands: slots follow it
    assert compute_slots_for(_cfg(), cores=16) == 4
    assert _cfg(compute_slots=1).config_hash() == _cfg().config_hash()  # a scheduling knob


def _most_at_once(n_threads: int, nested: bool = True) -> int:
    import threading
    import time

    from avits_core.threads import compute_slot

    lock, now, most = threading.Lock(), [0], [0]

    def work():
        with compute_slot():
            with lock:
                now[0] += 1
                most[0] = max(most[0], now[0])
            if nested:
                with compute_slot():  # a thread that holds a slot enters again without waiting
                    time.sleep(0.05)
            time.sleep(0.05)
            with lock:
                now[0] -= 1

    ts = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert not any(t.is_alive() for t in ts), "a thread is stuck in compute_slot"
    return most[0]


def test_compute_slot_bounds_the_threads_computing_at_once(slots):
    slots(2)
    assert _most_at_once(6) == 2
    slots(1)
    assert _most_at_once(4) == 1
    slots(None)  # no bound: every thread at once
    assert _most_at_once(6) == 6


def test_a_thread_waiting_for_another_threads_result_gives_its_slot_back(slots):
    """One slot. Thread A holds it and asks a cache for a key that thread B is computing; B's computation
    started outside a slot and needs one to finish. A waiting with the slot in hand would deadlock both:
    the cache lends A's slot while A waits, B finishes, A gets B's value and its slot back."""
    import threading
    import time

    from avits_core.cache import SingleFlightCache
    from avits_core.threads import compute_slot

    slots(1)
    cache = SingleFlightCache()
    b_started, got, order = threading.Event(), {}, []

    def b_compute():
        b_started.set()
        deadline = time.monotonic() + 10
        while cache.totals()["waited"] < 1 and time.monotonic() < deadline:  # until A waits for it
            time.sleep(0.01)
        with compute_slot():
            order.append("B computes in the slot")
            return 42

    def a():
        b_started.wait(10)
        with compute_slot():
            got["a"] = cache.get_or_compute("flow", lambda: -1)
            order.append("A has its slot again")
            with compute_slot():  # nested after the wait: still its own slot, no second one taken
                pass

    tb = threading.Thread(target=lambda: got.setdefault("b", cache.get_or_compute("flow", b_compute)))
    ta = threading.Thread(target=a)
    tb.start()
    ta.start()
    ta.join(15)
    tb.join(15)
    assert not ta.is_alive() and not tb.is_alive(), "deadlock: A kept its slot while waiting for B"
    assert got == {"a": 42, "b": 42}
    assert order == ["B computes in the slot", "A has its slot again"]
    assert _most_at_once(3) == 1  # the slot was given back once, not twice
