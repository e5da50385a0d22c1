"""How many threads each numeric library (torch, OpenBLAS/MKL, OpenMP, OpenCV) may use during a run.

A run executes several tasks at once (generation shards, one scoring task per verifier), and each
numeric library starts, by default, one thread per core *in every task*. On a machine with fewer
cores than parallel tasks that oversubscribes the cores: OpenMP and BLAS worker threads spin while
they wait for a core, which costs CPU time and gives no speed (measured in bench/bench_overhead.py:
the demo's ``avits run`` on 2 cores spent 4.3 CPU-s, 12 %, more with the libraries' defaults than
with one thread each, and the same selections).

Decision: per run, ``threads = runner.threads`` when set, else ``max(1, cores // parallel tasks)``,
where the parallel tasks are the widest fan-out of the flow (the verifier scoring tasks, or the
runner's ``workers`` when that is smaller) and ``cores`` the CPUs this process may run on. A user
who set ``OMP_NUM_THREADS`` keeps it: then nothing is changed. GPU work is not affected (it is
bounded by the device, not by these threads).

:func:`apply_numeric_threads` sets the limit process-wide: the standard environment variables (read
by libraries imported later, also by child processes) and, for libraries already loaded, torch's
intra-op threads, threadpoolctl's BLAS/OpenMP limits and OpenCV's pool.

Compute slots (issue 17). One thread per library does not stop the *tasks* from oversubscribing the
cores: Prefect's default pool runs the demo's 3 generation tasks, then its 4 scoring tasks, at once on 2
cores, and the same model, media and verifier calls then took 4-6 % more CPU than in a serial loop (time
slices and GIL hand-offs between more busy threads than cores; bench/bench_overhead.py, per kind: score
+9-14 %, generate +2-9 %, decode +3-11 %). A bounded pool (``runner.workers: 2``) saves that CPU but
packs badly (3 generation tasks on 2 workers; one long scoring task last) and cost ~30 % wall.
Decision: the pool stays wide and the *work* is bounded instead. :func:`compute_slot` wraps each unit of
work (a chunk of candidates generated and encoded; a chunk of clips read and scored) and lets at most
``runner.compute_slots`` threads of the process inside at once (default ``cores // numeric threads``;
0: no bound), so tasks take turns chunk by chunk. A thread that waits for another's result (a shared
feature, a model being loaded: :class:`avits_core.cache.SingleFlightCache`) gives its slot back while it
waits (:func:`slot_released`), so a wait never idles a slot and never deadlocks on one. Measured on the
demo (bench/bench_workers.py, slots vs Prefect's default pool, alternated rounds): see the README.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.config import RunConfig

log = logging.getLogger(__name__)

#: environment variables read by the numeric libraries at load time
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS")

_applied: int | None = None


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def parallel_tasks(cfg: "RunConfig", tasks: int | None = None) -> int:
    """The widest fan-out of a run's flow: its scoring tasks (guided + held-out verifiers) run at once, or
    ``tasks`` when a flow fans out otherwise (a rerank); bounded by ``runner.workers`` when set."""
    if tasks is None:
        guided = {v.name for v in cfg.verifiers}
        n = len(cfg.verifiers) + sum(1 for name, _ in cfg.evaluation.specs() if name not in guided)
    else:
        n = tasks
    if cfg.runner.workers:
        n = min(n, cfg.runner.workers)
    return max(1, n)


def numeric_threads_for(cfg: "RunConfig", cores: int | None = None, tasks: int | None = None) -> int | None:
    """Threads per numeric library for ``cfg``: ``runner.threads``, else ``max(1, cores // parallel tasks)``;
    None when the user set ``OMP_NUM_THREADS`` (their setting stands) and the config does not say.
    ``tasks``: the flow's widest fan-out when it is not the run's (a rerank scores only the verifiers
    with pairs left); bounded by ``runner.workers`` as the run's is."""
    explicit = getattr(cfg.runner, "threads", None)
    if explicit:
        return int(explicit)
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, (cores or available_cores()) // parallel_tasks(cfg, tasks))


def apply_numeric_threads(n: int | None) -> int | None:
    """Limit torch, BLAS, OpenMP and OpenCV to ``n`` threads each, process-wide (None: leave them).
    The environment variables are set for libraries loaded later (and child processes); libraries
    already loaded are limited now. Returns ``n``."""
    global _applied
    if n is None or n < 1:
        return None
    for var in THREAD_ENV:
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(n)
    if "numpy" in sys.modules or "scipy" in sys.modules or "torch" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=n)  # BLAS and OpenMP pools already loaded, until changed again
        except ImportError:  # pragma: no cover - threadpoolctl is a core dependency
            pass
    if _applied != n:
        log.info("numeric threads: %d per library (runner.threads or cores // parallel tasks; "
                 "OMP_NUM_THREADS set by you is kept)", n)
    _applied = n
    return n


# ---------------------------------------------------------------------------- a scoped limit

#: Threads BLAS and OpenCV may use inside one feature computation (see :func:`numeric_threads`).
NUMERIC_THREADS = 1

_threads_lock = threading.Lock()
_threads_depth = 0
_threads_restore: list[Callable[[], None]] = []


@contextmanager
def numeric_threads(n: int = NUMERIC_THREADS):
    """Run the block with BLAS (OpenBLAS/MKL through threadpoolctl) and OpenCV limited to ``n`` threads.

    Decision (measured, bench/bench_verifiers.py): per-clip features are small (a 24x64x64 clip's
    mel spectrogram, 64x64 Farneback flow); a second BLAS thread doubles the CPU time with no gain in
    wall time, and when scoring tasks run in parallel threads it halves throughput on 2 cores.
    Parallelism comes from the scoring tasks, so each feature computation runs single-threaded.
    The limit is process-wide (that is what the libraries offer) but reference-counted: it is set
    when the first feature computation starts and restored when the last one in flight ends, so
    other numeric work (e.g. a Frechet distance) is not limited outside that window.
    """
    global _threads_depth
    with _threads_lock:
        if _threads_depth == 0:
            _threads_restore.clear()
            _threads_restore.extend(_limit_threads(n))
        _threads_depth += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_depth -= 1
            if _threads_depth == 0:
                for undo in _threads_restore:
                    undo()
                _threads_restore.clear()


_controller: Any = None


def _limit_threads(n: int) -> list[Callable[[], None]]:
    global _controller
    undo: list[Callable[[], None]] = []
    try:
        import cv2

        before = cv2.getNumThreads()
        if before != n:
            cv2.setNumThreads(n)
            undo.append(lambda: cv2.setNumThreads(before))
    except ImportError:  # pragma: no cover - opencv is a core dependency
        pass
    try:
        from threadpoolctl import ThreadpoolController

        # the controller lists the BLAS libraries loaded when it was made; importing a module may
        # load another one (scipy brings its own OpenBLAS), so it is rebuilt when modules were added
        n_modules = len(sys.modules)
        if _controller is None or _controller[0] != n_modules:
            _controller = (n_modules, ThreadpoolController())
        lim = _controller[1].limit(limits=n, user_api="blas")
        undo.append(lim.restore_original_limits)
    except ImportError:  # pragma: no cover
        log.debug("threadpoolctl not installed: BLAS threads not limited")
    return undo


# ---------------------------------------------------------------------------- compute slots

class _Slots:
    """A process-wide bound on the threads doing model, media or verifier work at one moment."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.sem = threading.Semaphore(n) if n else None


_slots = _Slots(None)
_held = threading.local()  # .slots: the _Slots this thread holds one of (None: none)


def compute_slots_for(cfg: "RunConfig", cores: int | None = None, threads: int | None = None) -> int | None:
    """How many threads of one process may compute at once for ``cfg``: ``runner.compute_slots`` when set
    (0: no bound, returned as None), else ``max(1, cores // threads)`` with ``threads`` the numeric threads
    each computation uses (given, else :func:`numeric_threads_for`, else ``OMP_NUM_THREADS``, else 1)."""
    if cfg.runner.compute_slots is not None:
        return cfg.runner.compute_slots or None
    threads = threads or numeric_threads_for(cfg, cores) or _env_threads()
    return max(1, (cores or available_cores()) // threads)


def _env_threads() -> int:
    """The user's OMP_NUM_THREADS as a positive int (1 when unset or not a positive number)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))
    except ValueError:
        return 1


def set_compute_slots(n: int | None) -> int | None:
    """Bound this process's computing threads to ``n`` (None or 0: no bound). A thread inside a slot of
    the bound it replaces gives that slot back as it leaves. Returns ``n`` (None for no bound)."""
    global _slots
    n = int(n) if n else None
    if n != _slots.n:
        _slots = _Slots(n)
        log.info("compute slots: %s (threads computing at once in this process)", n or "no bound")
    return n


def compute_slots() -> int | None:
    """The bound set by :func:`set_compute_slots` (None: none)."""
    return _slots.n


@contextmanager
def compute_slot():
    """Hold one of the process's compute slots for the block (waiting for one when all are taken).

    Nests: a thread that holds a slot enters again without waiting. Wrap whole units of work (a chunk
    of candidates generated and encoded, a chunk of clips read and scored), not the bookkeeping around
    them (table writes, Prefect), which then runs beside the slots' work."""
    if getattr(_held, "slots", None) is not None:  # nested: the outer block holds the slot
        yield
        return
    slots = _slots
    if slots.sem is None:
        yield
        return
    slots.sem.acquire()
    _held.slots = slots
    try:
        yield
    finally:
        _held.slots = None
        slots.sem.release()


@contextmanager
def slot_released():
    """Give this thread's compute slot (if any) to others for the block: wrap a wait for another
    thread's result (a shared feature, a model being loaded), which may need a slot to finish it."""
    slots = getattr(_held, "slots", None)
    if slots is None:
        yield
        return
    _held.slots = None
    slots.sem.release()
    try:
        yield
    finally:
        slots.sem.acquire()
        _held.slots = slots


def apply_run_limits(cfg: "RunConfig", tasks: int | None = None) -> tuple[int | None, int | None]:
    """The numeric-thread limit and the compute slots of a flow that runs ``cfg``'s tasks in this process
    (``tasks``: its fan-out when not the run's, see :func:`numeric_threads_for`); returns both."""
    threads = apply_numeric_threads(numeric_threads_for(cfg, tasks=tasks))
    return threads, set_compute_slots(compute_slots_for(cfg, threads=threads))
