"""Tasks of the ``its``, ``rerank`` and ``benchmark`` flows: one-line wrappers around avits_core.runner.

Every task receives the run's :class:`~avits_core.runner.RunContext` (built once by the flow from the
validated config) and what it needs (prompt/event pairs, a verifier spec), never a path to parse
again and never a run's rows (Prefect walks every parameter of every task run: rows are read from the
run state instead). The tables on disk are the real cache, so Prefect's own result caching is off
(NO_CACHE).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from avits_core import runner
from avits_core.config import VerifierSpec
from avits_core.runner import RunContext


@task(name="search-check", cache_policy=NO_CACHE)
def start(ctx: RunContext) -> dict[str, Any]:
    """Check the search method against the generator before generating; record its parameters."""
    return runner.timed(ctx, "plan", runner.start_search, ctx)


@task(name="generate", tags=["gpu"], cache_policy=NO_CACHE, retries=0)
def generate(ctx: RunContext, items: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Plan, generate and store (prompt, event) pairs (GPU work stays in this task); their candidate rows."""
    return runner.timed(ctx, "generate", runner.generate_events, ctx, items)


@task(name="score", cache_policy=NO_CACHE, task_run_name="score-{spec[name]}")
def score(ctx: RunContext, spec: dict[str, Any], items: list[tuple[str, int]] | None = None) -> dict[str, int]:
    """Score the candidates of the (prompt, event) pairs ``items`` that lack a reward for this verifier;
    every stored candidate when ``items`` is None (rerank).

    The candidate rows come from the run state (this process's, kept current by the generation tasks;
    rebuilt from the tables in another process), not through Prefect: a task's parameters are walked
    by Prefect on every submit and run (~0.25 ms per row and scoring task; issue 17). Submit it with
    ``wait_for=`` the generation futures of those pairs."""
    vs = VerifierSpec(**spec)
    if items is None:
        return runner.timed(ctx, f"score:{vs.name}", runner.score_verifier, ctx, vs)
    st = ctx.state
    missing = [(pid, e) for pid, e in items if not st.has_event(pid, e)]
    if missing:  # the generation it waited for stored nothing: say so rather than score nothing
        raise RuntimeError(f"score {vs.name}: no stored candidates for (prompt, event) {missing[:5]} "
                           f"({len(missing)} of {len(items)}) in run {ctx.run_id}")
    flat = [r for pid, e in items for r in st.event_rows(pid, e)]
    return runner.timed(ctx, f"score:{vs.name}", runner.score_rows, ctx, vs, flat)


@task(name="compute", cache_policy=NO_CACHE)
def record_compute(ctx: RunContext) -> dict[str, Any]:
    """Write the run's compute accounting (NFE, decodes, verifier calls, wall time) into run.json."""
    return runner.record_compute(ctx)


@task(name="select", cache_policy=NO_CACHE)
def select(ctx: RunContext, spec: dict[str, Any] | None = None) -> str:
    """Replay rewards in event_seq order through the aggregator; write arw_trace and selections."""
    from avits_core.selection import SelectionSpec

    return runner.timed(ctx, "select", runner.select, ctx, SelectionSpec(**spec) if spec else None)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(ctx: RunContext, selection_id: str) -> list[dict[str, Any]]:
    """Write metrics for the baseline and the selection; return the results table."""
    runner.timed(ctx, "evaluate", runner.evaluate, ctx, selection_id)
    return runner.results_table(ctx, selection_id)


@task(name="report", cache_policy=NO_CACHE)
def report(ctx: RunContext, selection_id: str) -> str:
    """Markdown + SVG plots + HTML page in the run folder, mirrored as Prefect artifacts."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from avits_core.report import write_report

    rep = runner.timed(ctx, "report", write_report, ctx, selection_id)
    key = "".join(ch if ch.isalnum() else "-" for ch in ctx.run_id.lower())[:60]
    create_table_artifact(key=f"{key}-results", table=rep.results, description=f"avits results {ctx.run_id}")
    create_markdown_artifact(key=f"{key}-report", markdown=rep.markdown, description=f"avits report {ctx.run_id}")
    return str(rep.markdown_path)
