"""The task runner a flow runs its tasks on, from the run config's ``runner`` block (Prefect wiring).

Every flow that runs tasks of a run (``its``, ``its-shard``, ``rerank``; ``its-benchmark`` runs ``its``
subflows) starts with :func:`needs_runner`: when the config asks for a runner this flow run is not on, the
flow runs itself again as a subflow on it (:func:`run_on_runner`), so every caller (CLI, deployment, a
worker's shard, tests) gets the same runner. A flow cannot change its own task runner once it runs.

- ``kind: thread`` with ``workers`` unset: Prefect's default thread pool (no subflow).
- ``kind: thread`` with ``workers: K``: a ``ThreadPoolTaskRunner(max_workers=K)``.
- ``kind: dask``: prefect-dask's ``DaskTaskRunner`` over a local cluster (``workers`` workers, default the
  CPU count; one thread each; processes when ``processes``; no dashboard).

Whether a flow run is on the configured runner is known from a context variable that
:func:`run_on_runner` sets around the subflow (the subflow's body runs in that context), not from the
runner object's private fields.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any

from avits_core.config import RunConfig

#: the runner key of the subflow run_on_runner started (None: none; a flow started any other way)
_ACTIVE: ContextVar[tuple[Any, ...] | None] = ContextVar("avits_task_runner", default=None)


def runner_key(cfg: RunConfig) -> tuple[Any, ...] | None:
    """What identifies the runner ``cfg.runner`` asks for; None when it is Prefect's default pool."""
    r = cfg.runner
    if r.kind == "thread":
        return None if r.workers is None else ("thread", r.workers)
    return ("dask", r.workers, r.processes)


def task_runner_for(cfg: RunConfig) -> Any:
    """The Prefect task runner of ``cfg.runner``: a thread pool, or a DaskTaskRunner on a local cluster."""
    r = cfg.runner
    if r.kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=r.workers)
    from prefect_dask import DaskTaskRunner

    n = r.workers or os.cpu_count() or 1
    return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": r.processes,
                                          "dashboard_address": None})


def needs_runner(cfg: RunConfig) -> bool:
    """Whether the calling flow must run again on the runner ``cfg`` asks for (see the module text)."""
    key = runner_key(cfg)
    return key is not None and _ACTIVE.get() != key


def describe(cfg: RunConfig) -> str:
    r = cfg.runner
    if r.kind == "dask":
        return f"dask ({r.workers or 'cpu count'} workers, {'processes' if r.processes else 'threads'})"
    return f"a thread pool of {r.workers}" if r.workers else "Prefect's default thread pool"


def run_on_runner(flow_obj: Any, cfg: RunConfig, flow_run_name: str, **params: Any) -> Any:
    """Call ``flow_obj(**params)`` as a subflow on the task runner of ``cfg.runner``, saying so in the
    calling flow run's log."""
    from prefect import get_run_logger

    get_run_logger().info("runner: %s", describe(cfg))
    token = _ACTIVE.set(runner_key(cfg))
    try:
        return flow_obj.with_options(task_runner=task_runner_for(cfg), flow_run_name=flow_run_name)(**params)
    finally:
        _ACTIVE.reset(token)
