"""The ``rerank`` flow: a finished run + a new verifier set / weights / aggregator / budget.

No generator is loaded. Everything that can fail cheaply is checked first, before any scoring
(:func:`prepare_rerank`: the run folder, verifier names and weights, aggregator name and
parameters, budget, and the weights on disk of every verifier that still has pairs to score).
Then only the (candidate, verifier) pairs with no ok reward are scored (a new verifier scores the
stored mp4 files; one task per verifier, the rewards table is the cache), the rewards are replayed
through the aggregator (:func:`avits_core.runner.select`: the very code the online run used, so
re-ranking with the run's own spec gives the run's own selections and selection_id, and writes
nothing new), and the new selection is evaluated and reported. Candidates and rewards are never
rewritten: scoring only appends rows for missing pairs.

Decisions:
- Unspecified parts of the spec default to the run's config: ``--verifiers`` to the run's guided
  verifiers and weights; ``--aggregator`` to the run's aggregator, whose parameters are kept when
  the aggregator is the run's own and no ``params`` are given (another aggregator starts from its
  defaults); ``budget`` to all candidates.
- A verifier the run already knows (guided or held-out evaluation verifier) is scored with the
  run's parameters for it; a new one with its defaults.
- Verifier weights are relative (``a:2,b`` = 2/3 and 1/3) and must be finite and >= 0 with a
  positive sum; a budget must be >= 1 (a budget above the number of candidates means all of them).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from avits_core import runner
from avits_core.config import VerifierSpec
from avits_core.errors import ConfigError
from avits_core.selection import SelectionSpec
from tasks import its as t


def parse_verifiers(items: list[str] | str) -> tuple[list[str], list[float]]:
    """``["a", "b:2"]`` or ``"a,b:2"`` -> (names, weights); a missing weight is 1."""
    if isinstance(items, str):
        items = items.split(",")
    names, weights = [], []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        name, _, w = item.partition(":")
        name = name.strip()
        if not name:
            raise ConfigError(f"--verifiers: {item!r} has a weight but no verifier name")
        try:
            weights.append(float(w) if w.strip() else 1.0)
        except ValueError:
            raise ConfigError(f"--verifiers: weight of {name!r} in {item!r} is not a number") from None
        names.append(name)
    if not names:
        raise ConfigError("--verifiers is empty")
    return names, weights


def rerank_spec(ctx: runner.RunContext, verifiers: list[str] | str | None, aggregator: str | None,
                params: dict[str, Any] | None, budget: int | None) -> SelectionSpec:
    """The selection spec of a rerank: unspecified parts default to the run's own config.

    Raises ConfigError / UnknownNameError naming the bad verifier, weight, aggregator, parameter
    or budget; nothing is read from the tables or scored.
    """
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
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"aggregator params must be a mapping, got {params!r}")
    p = dict(params if params is not None else (base.params if agg == base.aggregator else {}))
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
        raise ConfigError(f"budget must be an integer >= 1, got {budget!r}")
    spec = SelectionSpec(verifiers=names, weights=weights, aggregator=agg, params=p, budget=budget)
    get_aggregator(spec.aggregator, spec.verifiers, spec.weight_map, **spec.params)  # validate early
    return spec


def verifier_specs(ctx: runner.RunContext, names: list[str]) -> list[VerifierSpec]:
    """Scoring specs for ``names``: the run's own params for a verifier it knows, defaults otherwise."""
    known = {s.name: s for s in ctx.all_verifier_specs()}
    return [known.get(n) or VerifierSpec(name=n) for n in names]


def missing_pairs(ctx: runner.RunContext, specs: list[VerifierSpec]) -> dict[str, int]:
    """Per verifier: how many stored candidates have no ok reward for it (at its current version).
    Reads the rewards table once."""
    import pyarrow.compute as pc

    cands = ctx.store.candidate_ids()
    t = ctx.store.read("rewards", ["candidate_id", "verifier", "verifier_version", "status"])
    t = t.filter(pc.equal(t["status"], "ok"))
    out = {}
    for spec in specs:
        v = runner.get_verifier(spec.name, spec.params)
        mask = pc.and_(pc.equal(t["verifier"], v.name), pc.equal(t["verifier_version"], str(v.version)))
        out[spec.name] = len(cands - set(t.filter(mask)["candidate_id"].to_pylist()))
    return out


def prepare_rerank(run_path: str, verifiers: list[str] | str | None = None, aggregator: str | None = None,
                   params: dict[str, Any] | None = None, budget: int | None = None
                   ) -> tuple[runner.RunContext, SelectionSpec, list[VerifierSpec]]:
    """Open the run and validate the whole rerank before any work: (ctx, spec, scoring specs).

    A verifier with pairs left to score must have its weights on disk (``check_ready``).
    """
    ctx = runner.open_run(run_path)
    if not ctx.store.candidate_ids():
        raise ConfigError(f"run {run_path} has no candidates: nothing to re-rank")
    spec = rerank_spec(ctx, verifiers, aggregator, params, budget)
    vspecs = verifier_specs(ctx, spec.verifiers)
    missing = missing_pairs(ctx, vspecs)
    for vs in vspecs:
        if missing[vs.name]:
            runner.get_verifier(vs.name, vs.params).check_ready()
    return ctx, spec, vspecs


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
    logger = get_run_logger()
    ctx, spec, vspecs = prepare_rerank(run_path, verifiers, aggregator, params, budget)
    futures = {vs.name: t.score.submit(run_path, vs.model_dump()) for vs in vspecs}
    scored = {name: f.result() for name, f in futures.items()}
    for name, counts in scored.items():
        logger.info("%s: %s", name, counts)
    sel_id = t.select(run_path, spec.to_dict())
    results = t.evaluate(run_path, sel_id)
    report_path = t.report(run_path, sel_id)
    logger.info("selection %s (%s over %s, budget %s)", sel_id, spec.aggregator, spec.verifiers, spec.budget)
    return {"run_path": run_path, "selection_id": sel_id, "spec": spec.to_dict(), "scored": scored,
            "results": results, "report": report_path}
