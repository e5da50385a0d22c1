"""The run loop over (prompt, event): the schedule every driver follows, and a plain-Python driver.

:func:`schedule` cuts a run into waves of (prompt, event) pairs. A one-event method (Best-of-N) is
one wave of every prompt: nothing it plans depends on a reward, so generation shards run side by
side and each verifier then scores the whole wave. A method with several events plans each event
from the rewards of every earlier event (the aggregator's state is global, in event_seq order), so
its waves are single (prompt, event) pairs in event_seq order, and the guided verifiers must finish
a wave before the next is planned; held-out evaluation verifiers need not.

:func:`run_search` drives a run with plain calls (library level: tests, scripts); the ``its`` flow
(``flows/its.py``) drives the same schedule with one Prefect task per step. :func:`run` is the
whole pipeline: prepare, search, compute accounting, select, evaluate, finish.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from avits_core.runner.accounting import record_compute
from avits_core.runner.context import RunContext, finish_run, prepare_run, record_timing
from avits_core.runner.evaluate import evaluate, results_table
from avits_core.runner.generate import generate_events, start_search
from avits_core.runner.score import score_rows
from avits_core.runner.select import default_spec, select

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.config import RunConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wave:
    """(prompt, event) pairs generated side by side (in ``shards``), then scored together.
    ``feedback``: the guided verifiers must finish this wave before the next one is planned."""

    shards: tuple[tuple[tuple[str, int], ...], ...]
    feedback: bool

    @property
    def items(self) -> list[tuple[str, int]]:
        return [it for s in self.shards for it in s]


def schedule(ctx: RunContext) -> list[Wave]:
    E = ctx.n_generations
    pids = [p.prompt_id for p in ctx.prompts]
    if E == 1:
        size = ctx.cfg.search.prompts_per_task
        shards = tuple(tuple((pid, 0) for pid in pids[i:i + size]) for i in range(0, len(pids), size))
        return [Wave(shards, feedback=False)] if shards else []
    return [Wave((((pid, e),),), feedback=e < E - 1 or i < len(pids) - 1)
            for i, pid in enumerate(pids) for e in range(E)]


def timed(ctx: RunContext, stage: str, fn: Any, *args: Any, **kw: Any) -> Any:
    """``fn(*args, **kw)``, adding its wall time to run.json ``timings[stage]``."""
    t0 = time.perf_counter()
    try:
        return fn(*args, **kw)
    finally:
        record_timing(ctx, stage, time.perf_counter() - t0)


def run_search(ctx: RunContext) -> dict[str, Any]:
    """Generate and score every wave of the run (resuming what is stored); returns the compute summary."""
    timed(ctx, "plan", start_search, ctx)
    specs = ctx.all_verifier_specs()
    for wave in schedule(ctx):
        rows = [r for shard in wave.shards for r in timed(ctx, "generate", generate_events, ctx, list(shard))]
        for spec in specs:
            timed(ctx, f"score:{spec.name}", score_rows, ctx, spec, rows)
    return record_compute(ctx)


def run(cfg: "RunConfig", *, check_models: bool = True) -> dict[str, Any]:
    """The whole pipeline without Prefect: the ``its`` flow's result dict (no report)."""
    ctx = prepare_run(cfg, check_models=check_models)
    try:
        run_search(ctx)
        sel_id = timed(ctx, "select", select, ctx, default_spec(cfg))
        timed(ctx, "evaluate", evaluate, ctx, sel_id)
        results = results_table(ctx, sel_id)
    except BaseException:
        finish_run(ctx, status="failed")
        raise
    finish_run(ctx, status="completed", selection_id=sel_id)
    return {"run_id": ctx.run_id, "run_path": str(ctx.store.path), "selection_id": sel_id, "results": results,
            "ctx": ctx}
