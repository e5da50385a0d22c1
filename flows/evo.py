"""EvoSearch wiring inside the ``its`` flow: per prompt (in order), per generation (in order):
plan the parents (g >= 1), generate, then the same cached scoring task of every verifier.

Prompts are visited strictly in order because the aggregator's state (ARW's sigma) at a prompt
depends on every earlier scoring event (``event_seq`` order); this is what makes the online run and
the replay of its rewards agree. Guided verifiers are awaited before the next parent choice;
held-out evaluation verifiers are not needed by the search, so their scoring tasks run alongside,
each chained after the previous task of the same verifier (two tasks of one verifier never overlap,
so no pair is scored twice), and are awaited at the end.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from avits_core.runner import RunContext
from tasks import evo as evo_t
from tasks import its as its_t


def run_evosearch(ctx: RunContext) -> dict[str, Any]:
    """Run every generation of every prompt of ``ctx``; returns the compute summary."""
    logger = get_run_logger()
    run_path = str(ctx.store.path)
    params = evo_t.check(run_path)
    G = len(params["population_size_schedule"])
    guided = {v.name for v in ctx.cfg.verifiers}
    specs = ctx.all_verifier_specs()
    last: dict[str, Any] = {}
    for p in ctx.prompts:
        for g in range(G):
            if g > 0:
                plan = evo_t.choose_parents(run_path, p.prompt_id, g)
                logger.info("%s g%d: elites %s, parents %s", p.prompt_id, g, plan["elites"], plan["parents"])
            gen = evo_t.generate.submit(run_path, p.prompt_id, g)
            waits = []
            for spec in specs:
                deps = [gen] + ([last[spec.name]] if spec.name in last else [])
                fut = its_t.score.submit(run_path, spec.model_dump(), wait_for=deps)
                last[spec.name] = fut
                if spec.name in guided:
                    waits.append(fut)
            gen.result()
            for f in waits:
                f.result()
    for f in last.values():
        f.result()
    summary = evo_t.record_compute(run_path)
    logger.info("evosearch: NFE %d over %d prompts, %d decodes", summary["nfe_total"], len(ctx.prompts),
                summary["decodes"])
    return summary
