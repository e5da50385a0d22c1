"""Tasks of the ``its``, ``rerank`` and ``benchmark`` flows."""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from avits_core import runner
from avits_core.config import VerifierSpec


def _timed(run_path: str, stage: str, fn, *args, **kw):
    ctx = runner.open_run(run_path)
    t0 = time.perf_counter()
    out = fn(ctx, *args, **kw)
    runner.record_timing(ctx, stage, time.perf_counter() - t0)
    return out


@task(name="generate", tags=["gpu"], cache_policy=NO_CACHE, retries=0)
def generate(run_path: str, prompt_ids: list[str]) -> int:
    """Generate the candidates of a shard of prompts (GPU work stays in this task)."""
    ctx = runner.open_run(run_path)
    by_id = ctx.prompt_by_id
    t0 = time.perf_counter()
    n = runner.generate_shard(ctx, [by_id[p] for p in prompt_ids])
    runner.record_timing(ctx, "generate", time.perf_counter() - t0)
    return n


@task(name="score", cache_policy=NO_CACHE, task_run_name="score-{spec[name]}")
def score(run_path: str, spec: dict[str, Any]) -> dict[str, int]:
    """Score every stored candidate that has no reward row for this verifier (cached by the table)."""
    return _timed(run_path, f"score:{spec['name']}", runner.score_verifier, VerifierSpec(**spec))


@task(name="select", cache_policy=NO_CACHE)
def select(run_path: str, spec: dict[str, Any] | None = None) -> str:
    """Replay rewards in event_seq order through the aggregator; write arw_trace and selections."""
    from avits_core.selection import SelectionSpec

    s = SelectionSpec(**spec) if spec else None
    return _timed(run_path, "select", runner.select, s)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(run_path: str, selection_id: str) -> list[dict[str, Any]]:
    """Write metrics for the baseline and the selection; return the results table."""
    ctx = runner.open_run(run_path)
    runner.evaluate(ctx, selection_id)
    return runner.results_table(ctx, selection_id)


@task(name="report", cache_policy=NO_CACHE)
def report(run_path: str, selection_id: str) -> str:
    """Markdown + PNG plots + HTML page in the run folder, mirrored as Prefect artifacts."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from avits_core.report import write_report

    ctx = runner.open_run(run_path)
    rep = write_report(ctx, selection_id)
    key = "".join(ch if ch.isalnum() else "-" for ch in ctx.run_id.lower())[:60]
    create_table_artifact(key=f"{key}-results", table=rep.results, description=f"avits results {ctx.run_id}")
    create_markdown_artifact(key=f"{key}-report", markdown=rep.markdown, description=f"avits report {ctx.run_id}")
    return str(rep.markdown_path)
