"""Wiring shared by the ``its`` flow and the sharded flows (flows/shards.py): the config a flow was
given, and the wave loop of a run (generation and scoring tasks), optionally for one shard's prompts."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from avits_core import runner
from avits_core.config import RunConfig, config_from_dict, load_config
from tasks import its as t


def resolve_config(config_path: str | None, overrides: list[str] | None,
                   config: RunConfig | dict[str, Any] | None) -> RunConfig:
    """The validated config: as given (a RunConfig), from a dict, or from a YAML path."""
    if isinstance(config, RunConfig):
        if overrides:
            from avits_core.config import apply_overrides

            return config_from_dict(apply_overrides(config.model_dump(mode="json"), overrides), source="config parameter")
        return config
    if config is not None:
        from avits_core.config import apply_overrides

        return config_from_dict(apply_overrides(config, overrides or []), source="config parameter")
    if not config_path:
        raise ValueError("give config_path (a YAML file) or config (a RunConfig or a dict)")
    return load_config(config_path, overrides)


def run_waves(ctx: runner.RunContext, only: set[str] | None = None) -> dict[str, Any]:
    """Generate and score every wave of the run through tasks; returns the compute summary.
    ``only``: the prompt ids of one shard of a sharded run (flows/shards.py); other prompts are skipped."""
    logger = get_run_logger()
    t.start(ctx)
    specs = ctx.all_verifier_specs()
    guided = {v.name for v in ctx.cfg.verifiers}
    later = []
    for wave in runner.schedule(ctx):
        parts = wave.shards if only is None else [s2 for s2 in ([it for it in s if it[0] in only] for s in wave.shards) if s2]
        if not parts:
            continue
        gens = [t.generate.submit(ctx, list(shard)) for shard in parts]
        items = [it for shard in parts for it in shard]  # the wave's (prompt, event) pairs, not its rows
        now = []
        for spec in specs:
            fut = t.score.submit(ctx, spec.model_dump(), items, wait_for=gens)
            (now if spec.name in guided else later).append(fut)
        if wave.feedback:
            for f in now:
                f.result()
        else:
            later += now
    for f in later:
        logger.debug("scored %s", f.result())
    summary = t.record_compute(ctx)
    logger.info("%s: NFE %d over %d prompts, %d decodes", ctx.cfg.search.method, summary["nfe_total"],
                len(ctx.prompts), summary["decodes"])
    return summary


def select_evaluate_report(ctx: runner.RunContext, cfg: RunConfig) -> tuple[str, Any, str]:
    """The run's default selection (the replay), its evaluation and its report, through tasks:
    (selection id, evaluation results, report path). Shared by the ``its`` and ``its-sharded`` flows."""
    sel_id = t.select(ctx, runner.default_spec(cfg).to_dict())
    return sel_id, t.evaluate(ctx, sel_id), t.report(ctx, sel_id)
