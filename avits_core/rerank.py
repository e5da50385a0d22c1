"""Re-ranking a stored run: the selection spec of a rerank and its checks (no Prefect here).

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

from dataclasses import dataclass

from typing import Any

from avits_core import runner
from avits_core.config import VerifierSpec
from avits_core.errors import ConfigError
from avits_core.selection import SelectionSpec


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
    spec = SelectionSpec(verifiers=names, weights=weights, aggregator=agg, params=p, budget=budget,
                         arw_shards=base.arw_shards)  # a sharded multi-event run keeps its per-shard ARW scope
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
        mask = pc.and_(pc.equal(t["verifier"], v.name), pc.equal(t["verifier_version"], v.cache_version))
        out[spec.name] = len(cands - set(t.filter(mask)["candidate_id"].to_pylist()))
    return out


@dataclass(frozen=True)
class RerankPlan:
    """A validated rerank: the run, the selection spec, the scoring specs and, per verifier, how many
    stored candidates lack an ok reward at its current version (0 everywhere: nothing to score)."""

    ctx: runner.RunContext
    spec: SelectionSpec
    vspecs: list[VerifierSpec]
    missing: dict[str, int]


def plan_rerank(run_path: str, verifiers: list[str] | str | None = None, aggregator: str | None = None,
                params: dict[str, Any] | None = None, budget: int | None = None) -> RerankPlan:
    """Open the run and validate the whole rerank before any work; count the pairs left to score
    (one read of the rewards table). A verifier with pairs left to score must have its weights on
    disk (``check_ready``)."""
    ctx = runner.open_run(run_path)
    if not ctx.store.candidate_ids():
        raise ConfigError(f"run {run_path} has no candidates: nothing to re-rank")
    spec = rerank_spec(ctx, verifiers, aggregator, params, budget)
    vspecs = verifier_specs(ctx, spec.verifiers)
    missing = missing_pairs(ctx, vspecs)
    for vs in vspecs:
        if missing[vs.name]:
            runner.get_verifier(vs.name, vs.params).check_ready()
    return RerankPlan(ctx, spec, vspecs, missing)


def prepare_rerank(run_path: str, verifiers: list[str] | str | None = None, aggregator: str | None = None,
                   params: dict[str, Any] | None = None, budget: int | None = None
                   ) -> tuple[runner.RunContext, SelectionSpec, list[VerifierSpec]]:
    """:func:`plan_rerank` as (ctx, spec, scoring specs)."""
    p = plan_rerank(run_path, verifiers, aggregator, params, budget)
    return p.ctx, p.spec, p.vspecs
