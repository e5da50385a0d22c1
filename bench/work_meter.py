"""Meters the model, media and verifier work of a process by thread CPU time (bench_overhead.py).

The framework overhead of a run is small next to its model and verifier work, and this VM's CPU speed
drifts by ~25 % between minutes, so "avits run CPU - bare loop CPU" measured in two processes a minute
apart is mostly noise. Metering the work *inside* each process gives a figure whose error scales with
the overhead itself: framework CPU = process CPU - metered work CPU, in the same run.

Metered (each call's ``time.thread_time()``, so calls in parallel threads add up; a metered call
inside a metered call counts once):

  generate   ``search.generation._generate_rows``: init noise, denoise, decode of a chunk of candidates
  encode     ``media.write_mp4``
  decode     ``media.read_mp4``
  score      ``score`` of every verifier class the process creates (four in the demo)
  arw        ``observe`` and ``combine`` of the ARW aggregator

A module's first import inside a metered call is taken out of it (see ``_watch_imports``).

These are the calls the bare loop of bench_overhead.py makes; the rest of a run (tables, run.json,
caches, Prefect, CLI, evaluation, report) is framework. x264 runs one thread per encode and the
numeric libraries are limited to one thread (both as in ``avits run`` of the demo), so the work's CPU
stays in the calling thread, which the bare loop checks (its metered sum against its process CPU).
The garbage collector's CPU is recorded beside it (``gc_cpu`` per generation; ``gc_in_work``: the part
that ran inside metered calls, which the metered figures count as work although a bigger heap, the
framework's, makes each full collection dearer).

    python bench/work_meter.py OUT.json avits run data/configs/demo.yaml ...   # the avits CLI, metered
"""

from __future__ import annotations

import atexit
import functools
import json
import sys
import threading
import time
from collections import defaultdict

KINDS = ("generate", "encode", "decode", "score", "arw")
_local = threading.local()
_lock = threading.Lock()
totals: dict[str, float] = defaultdict(float)
calls: dict[str, int] = defaultdict(int)
each: dict[str, list[float]] = defaultdict(list)  # every call's CPU seconds, in call order
gc_in_work: dict[str, float] = defaultdict(float)  # garbage collection that ran inside metered calls
imports_in_work: dict[str, float] = defaultdict(float)  # first imports inside metered calls (not work)


def _metered(kind: str, fn):
    if getattr(fn, "_avits_metered", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*a, **k):
        if getattr(_local, "inside", False):
            return fn(*a, **k)
        _local.inside = True
        _local.gc_in_call = 0.0
        _local.import_in_call = 0.0
        t0 = time.thread_time()
        try:
            return fn(*a, **k)
        finally:
            dt = time.thread_time() - t0 - _local.import_in_call
            _local.inside = False
            with _lock:
                totals[kind] += dt
                calls[kind] += 1
                each[kind].append(round(dt, 5))
                gc_in_work[kind] += _local.gc_in_call
                imports_in_work[kind] += _local.import_in_call

    wrapper._avits_metered = True
    return wrapper


def _watch_imports() -> None:
    """A module imported for the first time inside a metered call (scipy.signal on the first windy scene,
    a verifier's libraries on its first clip) is not work: which process pays an import inside which call
    depends on import order (the bare loop builds its verifiers before generating, a run builds them in its
    scoring tasks). Its CPU is taken out of the call and counted beside it."""
    import _frozen_importlib as bootstrap

    real = bootstrap._find_and_load

    def find_and_load(name, import_):
        if not getattr(_local, "inside", False) or getattr(_local, "importing", False):
            return real(name, import_)
        _local.importing = True
        t0 = time.thread_time()
        try:
            return real(name, import_)
        finally:
            _local.importing = False
            _local.import_in_call += time.thread_time() - t0

    bootstrap._find_and_load = find_and_load


def install() -> None:
    """Wrap the work functions (before the modules that call them bind their names); watch imports and
    the garbage collector."""
    _watch_imports()
    _watch_gc()
    import avits_core.media as media
    import avits_core.media.mp4 as mp4
    from avits_core.aggregate import arw
    from avits_core.registry import VERIFIERS
    from avits_core.search import generation

    for mod in (media, mp4):
        mod.write_mp4 = _metered("encode", mp4.write_mp4)
        mod.read_mp4 = _metered("decode", mp4.read_mp4)
    generation._generate_rows = _metered("generate", generation._generate_rows)
    for m in ("observe", "combine"):
        setattr(arw.AdaptiveRewardWeighting, m, _metered("arw", getattr(arw.AdaptiveRewardWeighting, m)))
    real_get_class = type(VERIFIERS).get_class

    def get_class(self, name):
        cls = real_get_class(self, name)
        if self is VERIFIERS:
            cls.score = _metered("score", cls.score)
        return cls

    type(VERIFIERS).get_class = get_class


_gc_start: dict[int, float] = {}
gc_cpu: dict[int, float] = defaultdict(float)  # CPU seconds in the garbage collector, per generation
gc_runs: dict[int, int] = defaultdict(int)


def _gc_callback(phase: str, info: dict) -> None:
    tid = threading.get_ident()
    if phase == "start":
        _gc_start[tid] = time.thread_time()
    elif tid in _gc_start:
        gen = int(info.get("generation", -1))
        dt = time.thread_time() - _gc_start.pop(tid)
        gc_cpu[gen] += dt
        gc_runs[gen] += 1
        if getattr(_local, "inside", False):
            _local.gc_in_call = getattr(_local, "gc_in_call", 0.0) + dt


def _watch_gc() -> None:
    """Record the CPU the garbage collector spends (printed beside the work: not part of it)."""
    import gc

    gc.callbacks.append(_gc_callback)


def snapshot() -> dict:
    with _lock:
        return {"work_cpu": {k: totals.get(k, 0.0) for k in KINDS}, "calls": {k: calls.get(k, 0) for k in KINDS},
                "each": {k: list(each.get(k, ())) for k in KINDS},
                "gc_in_work": {k: round(gc_in_work.get(k, 0.0), 4) for k in KINDS},
                "imports_in_work": {k: round(imports_in_work.get(k, 0.0), 4) for k in KINDS},
                "process_cpu": time.process_time(),
                "gc_cpu": {str(g): round(v, 4) for g, v in gc_cpu.items()}, "gc_runs": {str(g): n for g, n in gc_runs.items()}}


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    install()
    atexit.register(lambda: open(out, "w").write(json.dumps(snapshot())))
    if argv[0] != "avits":
        raise SystemExit("work_meter runs the avits CLI: work_meter.py OUT.json avits ARGS...")
    sys.argv = argv
    from avits.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
