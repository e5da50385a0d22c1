"""The ``rerank`` flow: a finished run + a new verifier set / weights / aggregator / budget.

No generator is loaded. Everything that can fail cheaply is checked first, before any scoring
(:func:`avits_core.rerank.prepare_rerank`: the run folder, verifier names and weights, aggregator name and
parameters, budget, and the weights on disk of every verifier that still has pairs to score).
Then only the (candidate, verifier) pairs with no ok reward are scored (a new verifier scores the
stored mp4 files; one task per verifier, the rewards table is the cache), the rewards are replayed
through the aggregator (:func:`avits_core.runner.select`: the very code the online run used, so
re-ranking with the run's own spec gives the run's own selections and selection_id, and writes
nothing new), and the new selection is evaluated and reported. Candidates and rewards are never
rewritten: scoring only appends rows for missing pairs.

The spec defaults and the checks are in :mod:`avits_core.rerank`. The scoring tasks run on the run's
own ``runner`` (:mod:`flows.task_runner`), with the numeric-thread limit and compute slots for the
verifiers that have pairs left to score (:func:`avits_core.threads.apply_run_limits`), as in the run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from tasks import its as t


@flow(name="rerank", log_prints=False)
def rerank(
    run_path: str,
    verifiers: list[str] | str | None = None,
    aggregator: str | None = None,
    params: dict[str, Any] | None = None,
    budget: int | None = None,
) -> dict[str, Any]:
    """Re-rank a stored run; returns run_path, selection_id, scored (per verifier: scored / errors /
    cached counts), results (the results table) and report (path of the Markdown report)."""
    from avits_core.rerank import plan_rerank
    from avits_core.threads import apply_run_limits
    from flows.task_runner import needs_runner, run_on_runner

    logger = get_run_logger()
    plan = plan_rerank(run_path, verifiers, aggregator, params, budget)
    ctx, spec, vspecs = plan.ctx, plan.spec, plan.vspecs
    if needs_runner(ctx.cfg):  # the run's runner: the flow again, as a subflow on it
        return run_on_runner(rerank, ctx.cfg, f"rerank-{ctx.cfg.runner.kind}", run_path=run_path,
                             verifiers=verifiers, aggregator=aggregator, params=params, budget=budget)
    # the scoring tasks that have pairs to score run at once: the limits for that fan-out
    apply_run_limits(ctx.cfg, tasks=sum(1 for n in plan.missing.values() if n) or 1)
    futures = {vs.name: t.score.submit(ctx, vs.model_dump()) for vs in vspecs}
    scored = {name: f.result() for name, f in futures.items()}
    for name, counts in scored.items():
        logger.info("%s: %s", name, counts)
    sel_id = t.select(ctx, spec.to_dict())
    results = t.evaluate(ctx, sel_id)
    report_path = t.report(ctx, sel_id)
    logger.info("selection %s (%s over %s, budget %s)", sel_id, spec.aggregator, spec.verifiers, spec.budget)
    return {"run_path": run_path, "selection_id": sel_id, "spec": spec.to_dict(), "scored": scored,
            "results": results, "report": report_path}
