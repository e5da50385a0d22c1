"""The ``its`` flow: prompts -> generation tasks -> one scoring task per verifier -> ARW selection
-> evaluation -> report. Only wiring: every step is a function of avits_core.runner."""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger

from avits_core import runner
from avits_core.config import RunConfig, config_from_dict, load_config
from tasks import its as t


def resolve_config(config_path: str | None, overrides: list[str] | None, config: dict[str, Any] | None) -> RunConfig:
    if config is not None:
        from avits_core.config import apply_overrides

        return config_from_dict(apply_overrides(config, overrides or []), source="config parameter")
    if not config_path:
        raise ValueError("give config_path (a YAML file) or config (a dict)")
    return load_config(config_path, overrides)


@flow(name="its", log_prints=False)
def its(config_path: str | None = None, overrides: list[str] | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one ITS config end to end; re-running the same config resumes the same run folder."""
    logger = get_run_logger()
    cfg = resolve_config(config_path, overrides, config)
    ctx = runner.prepare_run(cfg)
    run_path = str(ctx.store.path)
    logger.info("run %s: %d prompts, %s, verifiers %s", ctx.run_id, len(ctx.prompts), cfg.search.method,
                [v.name for v in cfg.verifiers])
    try:
        if cfg.search.method == "evosearch":
            from flows.evo import run_evosearch

            run_evosearch(ctx)
        else:
            gens = [t.generate.submit(run_path, [p.prompt_id for p in shard])
                    for shard in runner.shards(ctx.prompts, cfg.search.prompts_per_task)]
            scores = [t.score.submit(run_path, spec.model_dump(), wait_for=gens) for spec in ctx.all_verifier_specs()]
            for f in scores:
                logger.info("scored %s", f.result())
            runner.record_compute(ctx)
        spec = runner.default_spec(cfg)
        sel_id = t.select(run_path, spec.to_dict())
        results = t.evaluate(run_path, sel_id)
        report_path = t.report(run_path, sel_id)
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
