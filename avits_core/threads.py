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
