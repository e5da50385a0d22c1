"""Tasks of the ``evaluate`` flow: thin wrappers around :mod:`avits_core.evaluate_folder`."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from avits_core import evaluate_folder as ef


@task(name="evaluate-score", cache_policy=NO_CACHE, task_run_name="score-clips-{first}")
def score_clips(spec: dict[str, Any], prompt_ids: list[str], first: str = "") -> int:
    """Score one batch of clips with every metric still missing for them (the rewards table is the cache)."""
    plan = ef.cached_plan(spec)
    want = set(prompt_ids)
    return ef.score_entries(plan, plan.store(), [e for e in plan.entries if e.prompt.prompt_id in want])


@task(name="evaluate-finish", cache_policy=NO_CACHE)
def finish(spec: dict[str, Any]) -> dict[str, Any]:
    """Set-level metrics, metrics rows, summary.json / categories.json / evaluation.json."""
    plan = ef.cached_plan(spec)
    return ef.finish(plan, plan.store())
