"""The ``rerank`` flow: a finished run + a new verifier set / weights / aggregator / budget.

No generator is loaded. Only (candidate, verifier) pairs with no reward row are scored (a new
verifier scores the stored mp4 files), then the rewards are replayed, a new selection is written
under a new selection_id, evaluated and reported. Candidates and rewards are never rewritten.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from avits_core import runner
from avits_core.config import VerifierSpec
from avits_core.selection import SelectionSpec
from tasks import its as t


def parse_verifiers(items: list[str] | str) -> tuple[list[str], list[float]]:
    """``["a", "b:2"]`` or ``"a,b:2"`` -> (names, weights); a missing weight is 1."""
    from avits_core.errors import ConfigError

    if isinstance(items, str):
        items = [x for x in items.split(",")]
    names, weights = [], []
    for item in items:
        item = item.strip()
        if not item:
            continue
        name, _, w = item.partition(":")
        try:
            weights.append(float(w) if w else 1.0)
        except ValueError:
            raise ConfigError(f"verifier weight in {item!r} is not a number") from None
        names.append(name.strip())
    if not names:
        raise ConfigError("--verifiers is empty")
    return names, weights


@flow(name="rerank", log_prints=False)
def rerank(
    run_path: str,
    verifiers: list[str] | str | None = None,
    aggregator: str | None = None,
    params: dict[str, Any] | None = None,
    budget: int | None = None,
) -> dict[str, Any]:
    """Re-rank a stored run; returns selection_id and the results table."""
    logger = get_run_logger()
    ctx = runner.open_run(run_path)
    spec = rerank_spec(ctx, verifiers, aggregator, params, budget)
    futures = [t.score.submit(run_path, VerifierSpec(name=v).model_dump()) for v in spec.verifiers]
    for f in futures:
        logger.info("scored %s", f.result())
    sel_id = t.select(run_path, spec.to_dict())
    results = t.evaluate(run_path, sel_id)
    report_path = t.report(run_path, sel_id)
    return {"run_path": run_path, "selection_id": sel_id, "results": results, "report": report_path}


def rerank_spec(ctx, verifiers, aggregator, params, budget) -> SelectionSpec:
    """The selection spec of a rerank: unspecified parts default to the run's own config."""
    from avits_core.aggregate import get_aggregator
    from avits_core.registry import VERIFIERS

    base = runner.default_spec(ctx.cfg)
    if verifiers:
        names, weights = parse_verifiers(verifiers)
    else:
        names, weights = base.verifiers, base.weights
    for n in names:
        VERIFIERS.get_class(n)
    agg = aggregator or base.aggregator
    p = dict(params if params is not None else (base.params if agg == base.aggregator else {}))
    spec = SelectionSpec(verifiers=names, weights=weights, aggregator=agg, params=p, budget=budget)
    get_aggregator(spec.aggregator, spec.verifiers, spec.weight_map, **spec.params)  # validate early
    return spec
