"""A prompt's family tree as text (``avits lineage RUN PROMPT``), for every search method."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from avits_core.errors import ConfigError
from avits_core.runner.select import default_spec, higher_is_better, ok_rewards
from avits_core.runner.state import read_plan
from avits_core.selection import replay

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.runner.context import RunContext


def _run_replay(ctx: "RunContext", spec: Any, candidates: list[dict[str, Any]], ids: set[str],
                prompt_id: str) -> tuple[dict[str, float], str | None, list[dict[str, Any]]]:
    """(aggregates, selected candidate, the prompt's ok reward rows) of ``prompt_id`` in the run's replay.

    A stateful aggregator (ARW: one variance per verifier fitted over the raw scores of *every* prompt
    seen so far) ranks a prompt's candidates with the state reached after that prompt's last event, so
    the replay is the run's: every prompt's candidates, every ok reward up to that event (later events
    cannot change it), the run's prompt order. Replaying the prompt alone gave other aggregates."""
    rewards = ok_rewards(ctx, spec.verifiers)
    own = [r for r in rewards if r["candidate_id"] in ids]
    if own:
        last = max(r["event_seq"] for r in own)
        rewards = [r for r in rewards if r["event_seq"] <= last]
    res = replay(spec, candidates, rewards, higher_is_better(spec.verifiers), [p.prompt_id for p in ctx.prompts])
    selected = next((s["candidate_id"] for s in res.selections if s["prompt_id"] == prompt_id), None)
    return {c: a for c, a in res.aggregates.items() if c in ids}, selected, own


def lineage_tree(ctx: "RunContext", prompt_id: str) -> str:
    """One line per candidate, children under their parent.

    Each line: candidate id, generation, branch step, seed, nfe (own), the final aggregate under the
    run's selection spec, the raw guided rewards; ``*`` marks the selection of that spec,
    ``elite->g1,g2`` the generations a candidate was carried into (methods whose plans record
    ``elites``). A Best-of-N run gives a flat list of roots.

    The aggregates and the selection are those of the run's own replay (:func:`_run_replay`), so they
    equal what ``avits run`` / ``select`` stored, ARW included.
    """
    prompt = ctx.prompt_by_id.get(prompt_id)
    if prompt is None:
        raise ConfigError(f"unknown prompt_id {prompt_id!r} in run {ctx.run_id}")
    every = ctx.store.read("candidates").to_pylist()
    rows = sorted((r for r in every if r["prompt_id"] == prompt_id), key=lambda r: r["candidate_id"])
    if not rows:
        return f"{prompt_id}: no candidates stored yet"
    spec = default_spec(ctx.cfg)
    ids = {r["candidate_id"] for r in rows}
    agg, selected, rewards = _run_replay(ctx, spec, every, ids, prompt_id)
    raw: dict[str, dict[str, float]] = {}
    for r in rewards:
        raw.setdefault(r["candidate_id"], {})[r["verifier"]] = r["value"]
    carried: dict[str, list[int]] = {}
    n_gen = max(r["generation"] for r in rows) + 1
    for g in range(1, n_gen):
        plan = read_plan(ctx.store.path, prompt_id, g)
        for e in (plan.info.get("elites") or []) if plan else []:
            carried.setdefault(e, []).append(g)
    children: dict[str | None, list[dict[str, Any]]] = {}
    for r in rows:
        par = [p for p in (r["parent_ids"] or []) if p in ids]
        children.setdefault(par[0] if par else None, []).append(r)

    def own(r: dict[str, Any]) -> int:
        return r["nfe_own"] if r["nfe_own"] is not None else r["nfe"]

    def describe(r: dict[str, Any]) -> str:
        cid = r["candidate_id"]
        a = agg.get(cid)
        parts = [cid, f"g{r['generation']}", f"step {r['step']}", f"seed {r['seed']}",
                 f"nfe {r['nfe']} (own {own(r)})", "agg n/a" if a is None else f"agg {a:+.4f}"]
        vals = raw.get(cid, {})
        if vals:
            parts.append(" ".join(f"{v}={vals[v]:.3f}" for v in spec.verifiers if v in vals))
        if cid in carried:
            parts.append("elite->" + ",".join(f"g{g}" for g in carried[cid]))
        if cid == selected:
            parts.append("* selected")
        return "  ".join(parts)

    lines = [
        f"{prompt_id}: {prompt.text}",
        f"{ctx.cfg.search.method}: {n_gen} generation(s), {len(rows)} candidates, NFE spent {sum(own(r) for r in rows)}; "
        f"aggregate = {spec.aggregator} over {', '.join(spec.verifiers)} (final state); selected {selected}",
    ]

    def walk(node: dict[str, Any], prefix: str, last: bool, root: bool) -> None:
        lines.append((prefix + ("" if root else ("└── " if last else "├── "))) + describe(node))
        kids = children.get(node["candidate_id"], [])
        ext = prefix + ("" if root else ("    " if last else "│   "))
        for i, k in enumerate(kids):
            walk(k, ext, i == len(kids) - 1, False)

    for r in children.get(None, []):
        walk(r, "", True, True)
    return "\n".join(lines)
