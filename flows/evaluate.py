"""The ``evaluate`` flow: a folder of mp4 files + a prompt CSV -> metrics (no generation).

Wiring only: everything is :mod:`avits_core.evaluate_folder`. The request is validated first (in
the flow, before any task); then one scoring task per batch of clips (cached per clip in the
rewards table, so a rerun scores only what is missing), then one task for the set-level metrics and
the summaries.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from avits_core import evaluate_folder as ef
from tasks import evaluate as t


@flow(name="evaluate", log_prints=False)
def evaluate(spec: dict[str, Any]) -> dict[str, Any]:
    """Evaluate ``spec`` (see :func:`avits_core.evaluate_folder.spec_to_dict`); returns summary,
    evaluation (provenance and errors) and categories, and the output folder."""
    logger = get_run_logger()
    plan = ef.refresh_plan(spec)  # the folder as it is now; the tasks share this plan
    logger.info("evaluate %s: %d prompts, protocol %s, metrics %s -> %s", plan.spec.folder, len(plan.prompts),
                plan.spec.protocol, sorted(plan.spec.metrics), plan.out)
    futures = [t.score_clips.submit(spec, [e.prompt.prompt_id for e in b], first=b[0].prompt.prompt_id)
               for b in ef.batches(plan)]
    logger.info("wrote %d reward rows", sum(f.result() for f in futures))
    out = t.finish(spec)
    out["out"] = str(plan.out)
    return out
