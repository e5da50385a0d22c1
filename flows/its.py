"""The ``its`` flow: one loop over (prompt, event) for every search method, then selection,
evaluation and report. Only wiring: every step is a function of avits_core.runner.

The config is validated once (by the caller, or here from a path/dict) and the run's context is
built once; tasks receive it. The loop follows :func:`avits_core.runner.schedule`: per wave,
generation tasks (one per shard), then one scoring task per verifier over the wave's candidates.
When the method plans from rewards (several events per prompt), the guided verifiers' tasks are
awaited before the next wave is planned; held-out evaluation verifiers run alongside and are
awaited at the end (each task scores only its own wave's candidates, so no pair is scored twice).

Task runner: config ``runner: {kind: thread | dask, workers: N, processes: false}``; when it asks for
a runner other than Prefect's default pool the flow runs its body as a subflow on it
(:mod:`flows.task_runner`), so every caller (CLI, deployment, tests) gets it.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger

from avits_core import runner
from avits_core.config import RunConfig
from avits_core.threads import apply_run_limits
from flows.task_runner import needs_runner, run_on_runner
from flows.waves import resolve_config, run_waves, select_evaluate_report


@flow(name="its", log_prints=False, validate_parameters=False)
def its(config_path: str | None = None, overrides: list[str] | None = None,
        config: RunConfig | dict[str, Any] | None = None, shards: int = 1,
        shard_deployment: str = "its-shard/gpu") -> dict[str, Any]:
    """Run one ITS config end to end; re-running the same config resumes the same run folder.
    ``shards`` > 1: the prompts are split over that many flow runs of ``shard_deployment`` on a work pool
    (flows/shards.py), then this run selects, evaluates and reports."""
    logger = get_run_logger()
    cfg = resolve_config(config_path, overrides, config)
    if shards != 1:
        from flows.shards import its_sharded

        return its_sharded(config=cfg, shards=shards, shard_deployment=shard_deployment)
    if needs_runner(cfg):  # the flow again, as a subflow on the configured runner
        return run_on_runner(its, cfg, f"its-{cfg.runner.kind}", config=cfg)
    apply_run_limits(cfg)  # numeric threads and compute slots; a deployment's worker process: set here too
    ctx = runner.prepare_run(cfg)
    run_path = str(ctx.store.path)
    logger.info("run %s: %d prompts, %s, verifiers %s", ctx.run_id, len(ctx.prompts), cfg.search.method,
                [v.name for v in cfg.verifiers])
    try:
        run_waves(ctx)
        sel_id, results, report_path = select_evaluate_report(ctx, cfg)
    except BaseException:
        runner.finish_run(ctx, status="failed")
        raise
    runner.finish_run(ctx, status="completed", selection_id=sel_id)
    return {"run_id": ctx.run_id, "run_path": run_path, "selection_id": sel_id, "results": results,
            "report": report_path}


if __name__ == "__main__":  # pragma: no cover
    import sys

    logging.basicConfig(level=logging.INFO)
    its(sys.argv[1])
