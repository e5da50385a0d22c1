"""Selection step: replay the stored rewards through the run's (or a rerank's) selection spec.

The replay itself is :func:`avits_core.selection.replay` (the one place where stored rewards
become selections, for the online run and every rerank alike).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from avits_core.config import RunConfig
from avits_core.registry import VERIFIERS
from avits_core.selection import SelectionSpec, replay

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.runner.context import RunContext

log = logging.getLogger(__name__)


def default_spec(cfg: RunConfig) -> SelectionSpec:
    """The run's own selection spec: guided verifiers, their weights, the configured aggregator, and
    the ARW scope the search ran with (``search.arw_shards``: 1 = one state for the run; K = one per
    shard of prompts, as a multi-event search run with ``--shards K`` planned)."""
    w = cfg.weights
    return SelectionSpec(
        verifiers=[v.name for v in cfg.verifiers],
        weights=[w[v.name] for v in cfg.verifiers],
        aggregator=cfg.aggregator.name,
        params=dict(cfg.aggregator.params),
        budget=None,
        arw_shards=int(getattr(cfg.search, "arw_shards", 1)),
    )


def higher_is_better(names: Iterable[str]) -> dict[str, bool]:
    return {n: bool(VERIFIERS.get_class(n).higher_is_better) for n in names}


def ok_rewards(ctx: "RunContext", verifiers: Sequence[str]) -> list[dict[str, Any]]:
    """Current ok reward rows (deduplicated view) of the given verifiers."""
    from avits_core.store.duck import connect

    if not verifiers:
        return []
    con = connect(ctx.store.path)
    names = ", ".join("'" + v.replace("'", "''") + "'" for v in verifiers)
    t = con.sql(
        f"SELECT candidate_id, verifier, value, event_seq FROM rewards "
        f"WHERE status = 'ok' AND verifier IN ({names})"
    ).to_arrow_table()
    con.close()
    return t.to_pylist()


def select(ctx: "RunContext", spec: SelectionSpec | None = None) -> str:
    """Replay the rewards for ``spec`` (default: the run's config) and store trace + selections.

    Idempotent: a selection_id that already has selection rows is not written again, and trace rows
    are not duplicated if a previous attempt died between the two writes. Returns the selection_id.
    """
    spec = spec or default_spec(ctx.cfg)
    sel_id = spec.selection_id
    existing = ctx.store.read("selections", ["selection_id"])
    if existing.num_rows and sel_id in set(existing.column("selection_id").to_pylist()):
        log.info("selection %s already stored", sel_id)
        return sel_id
    cands = ctx.store.read("candidates", ["prompt_id", "candidate_id", "generation", "kind"]).to_pylist()
    rewards = ok_rewards(ctx, spec.verifiers)
    res = replay(spec, cands, rewards, higher_is_better(spec.verifiers), [p.prompt_id for p in ctx.prompts])
    trace = ctx.store.read("arw_trace", ["selection_id"])
    if res.trace and not (trace.num_rows and sel_id in set(trace.column("selection_id").to_pylist())):
        ctx.store.append("arw_trace", res.trace)
    ctx.store.append("selections", [dict(run_id=ctx.run_id, **r) for r in res.selections])
    return sel_id
