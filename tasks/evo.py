"""Tasks of EvoSearch inside the ``its`` flow: thin wrappers around :mod:`avits_core.evo_runner`.

Scoring is not here: EvoSearch uses the same cached ``tasks.its.score`` task as Best-of-N.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from avits_core import evo_runner, runner


@task(name="evo-check", cache_policy=NO_CACHE)
def check(run_path: str) -> dict[str, Any]:
    """Validate the EvoSearch schedule against the generator before anything is generated."""
    ctx = runner.open_run(run_path)
    return evo_runner.check_ready(ctx).to_dict()


@task(name="evo-generate", tags=["gpu"], cache_policy=NO_CACHE, retries=0,
      task_run_name="evo-generate-{prompt_id}-g{generation}")
def generate(run_path: str, prompt_id: str, generation: int) -> int:
    """Generate one generation of one prompt (skipped when already stored)."""
    ctx = runner.open_run(run_path)
    t0 = time.perf_counter()
    n = evo_runner.generate_generation(ctx, prompt_id, generation)
    runner.record_timing(ctx, "generate", time.perf_counter() - t0)
    return n


@task(name="evo-parents", cache_policy=NO_CACHE, task_run_name="evo-parents-{prompt_id}-g{generation}")
def choose_parents(run_path: str, prompt_id: str, generation: int) -> dict[str, Any]:
    """Replay the stored rewards so far and plan generation ``generation`` (elites, parents)."""
    ctx = runner.open_run(run_path)
    t0 = time.perf_counter()
    plan = evo_runner.choose_parents(ctx, prompt_id, generation)
    runner.record_timing(ctx, "select_parents", time.perf_counter() - t0)
    return plan.to_dict()


@task(name="evo-compute", cache_policy=NO_CACHE)
def record_compute(run_path: str) -> dict[str, Any]:
    """Write the run's compute accounting (NFE, decodes, verifier calls, wall time) into run.json."""
    return evo_runner.record_compute(runner.open_run(run_path))
