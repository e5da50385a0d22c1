"""Selection: replay a run's rewards through an aggregator, event by event, and pick winners.

This is the one place where stored rewards become selections, for the online run and for every
re-ranking alike, so re-ranking a run with the spec it ran with reproduces its selections.

Replay rule. Scoring events are visited in ``event_seq`` order (prompt order, then generation).
For each event the aggregator observes the oriented rewards (higher is better) of that event's
eligible candidates; after the *last* event of a prompt, ``combine`` ranks every eligible candidate
of that prompt seen so far (all generations) with the aggregator's state at that moment (for ARW:
the sigma fitted after this event), and the argmax is selected.

Policies (documented decisions):
- Missing rewards: a candidate lacking an ``ok`` reward for any verifier of the spec is not eligible:
  none of its rewards enters the aggregator's history and it cannot be selected. A prompt with no
  eligible candidate gets a selection row with a null candidate_id and a null score.
- Ties: exact ties go to the lowest candidate_id (ids sort in (generation, index) order).
- Budget k: only the first k candidates of each prompt (in candidate_id order) exist for the replay.
- Intermediate candidates (``candidates.kind = 'intermediate'``: clean estimates decoded mid-way by
  SMC, beam search or pruning) are observed by the aggregator in their events like any candidate,
  but the final ``combine`` pools only the prompt's final candidates, so an answer is always a fully
  denoised clip.
- Weights are normalised to sum 1 before use; orientation flips lower-is-better verifiers.
- ARW scope (``arw_shards``): 1 (default, "run scope") = one aggregator state fed by every event of
  the run. K > 1 ("shard scope") = one aggregator state per shard of prompts, shard of a prompt =
  its position in the run's prompt order mod K (:func:`prompt_shards`; the split ``avits run
  --shards K`` gives its shard flow runs). Each state observes only its own shard's events, in
  event_seq order, and a prompt's winner is ranked by its shard's state. This is how a multi-event
  search (EvoSearch, ...) run in K shards planned (each shard process held its own online state),
  so the replay reproduces the choices the search made. K enters the spec (and so the selection
  id) only when K > 1: the ids of run-scope selections are those stored before this field existed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from avits_core.aggregate import get_aggregator
from avits_core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class SelectionSpec:
    verifiers: list[str]
    weights: list[float]
    aggregator: str = "arw"
    params: dict[str, Any] = field(default_factory=dict)
    budget: int | None = None
    arw_shards: int = 1  # 1: one aggregator state for the run; K > 1: one per shard of prompts (see above)

    def __post_init__(self) -> None:
        if not self.verifiers:
            raise ConfigError("a selection needs at least one verifier")
        if len(self.weights) != len(self.verifiers):
            raise ConfigError(f"{len(self.weights)} weights for {len(self.verifiers)} verifiers")
        if len(set(self.verifiers)) != len(self.verifiers):
            raise ConfigError(f"verifier listed twice in {self.verifiers}")
        w = np.asarray(self.weights, dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ConfigError(f"weights must be finite, >= 0 and not all 0; got {self.weights}")
        self.weights = [float(x) for x in w / w.sum()]
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"budget must be >= 1, got {self.budget}")
        if isinstance(self.arw_shards, bool) or not isinstance(self.arw_shards, int) or self.arw_shards < 1:
            raise ConfigError(f"arw_shards must be an integer >= 1, got {self.arw_shards!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weights"] = [round(x, 12) for x in self.weights]
        if self.arw_shards == 1:  # run scope: the spec (and its selection id) as before the field existed
            del d["arw_shards"]
        return d

    @property
    def selection_id(self) -> str:
        from avits_core.store import make_selection_id

        return make_selection_id(self.to_dict())

    @property
    def weight_map(self) -> dict[str, float]:
        return dict(zip(self.verifiers, self.weights))


@dataclass
class ReplayResult:
    selections: list[dict[str, Any]]
    trace: list[dict[str, Any]]
    aggregates: dict[str, float]  # candidate_id -> final aggregate (for diagnostics)


def _columns(rows: Any, names: Sequence[str], defaults: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Column lists from a pyarrow Table, a mapping of columns, or a sequence of row mappings.
    A key missing from a row (or a column missing from a table) gives ``defaults[name]``."""
    if isinstance(rows, pa.Table):
        return {n: rows.column(n).to_pylist() if n in rows.column_names else [defaults.get(n)] * rows.num_rows
                for n in names}
    if isinstance(rows, Mapping):
        size = len(next(iter(rows.values()))) if rows else 0
        return {n: list(rows[n]) if n in rows else [defaults.get(n)] * size for n in names}
    out: dict[str, list[Any]] = {}
    for n in names:
        try:
            out[n] = [r[n] for r in rows]
        except KeyError:  # some row lacks the key: its default
            d = defaults.get(n)
            out[n] = [r.get(n, d) for r in rows]
    return out


def prompt_shards(prompt_order: Sequence[str], shards: int) -> dict[str, int]:
    """prompt id -> its shard (0-based) of ``shards``: position in ``prompt_order`` mod ``shards``.
    Shard i is prompts i, i+K, i+2K, ... (balanced whatever the prompt count); K = 1: all in shard 0."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"shards must be an integer >= 1, got {shards!r}")
    return {pid: i % shards for i, pid in enumerate(prompt_order)}


def _last_per_key(key: np.ndarray) -> np.ndarray:
    """Positions of the last occurrence of each distinct value of ``key`` (ascending positions)."""
    rev = key[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    return np.sort(key.size - 1 - first_in_rev)


def replay(
    spec: SelectionSpec,
    candidates: Any,
    rewards: Any,
    higher_is_better: Mapping[str, bool],
    prompt_order: Sequence[str],
) -> ReplayResult:
    """Run the aggregator over stored rewards. ``candidates``: rows with prompt_id, candidate_id,
    generation; ``rewards``: ok rows with candidate_id, verifier, value, event_seq. Both may be a
    sequence of row mappings, a mapping of equal-length columns, or a ``pyarrow.Table``.

    When a (candidate, verifier) pair appears in several reward rows, the last row wins; a row with a
    null value is ignored (the pair stays missing); a NaN or infinite value makes the candidate
    ineligible. The implementation groups with numpy (no per-row Python objects beyond reading the
    columns), so 1,000 prompts x 64 candidates x 6 verifiers replay in about a second, dominated by
    the aggregator's own per-event work.
    """
    sel_id = spec.selection_id
    V = spec.verifiers
    nv = len(V)
    vidx = {v: j for j, v in enumerate(V)}

    # candidates, sorted by candidate_id (the tie-break and budget order)
    cc = _columns(candidates, ("prompt_id", "candidate_id", "generation", "kind"), {"generation": 0, "kind": None})
    order = sorted(range(len(cc["candidate_id"])), key=cc["candidate_id"].__getitem__)
    cids = [cc["candidate_id"][i] for i in order]
    cpid = [cc["prompt_id"][i] for i in order]
    gens = np.array([int(cc["generation"][i] or 0) for i in order], dtype=np.int64)
    final = np.array([(cc["kind"][i] or "final") == "final" for i in order], dtype=bool)  # only these can win
    n = len(cids)
    by_prompt: dict[str, list[int]] = {}
    for i, pid in enumerate(cpid):
        by_prompt.setdefault(pid, []).append(i)
    allowed = np.zeros(n, dtype=bool)
    for ix in by_prompt.values():
        allowed[ix[: spec.budget] if spec.budget else ix] = True
    cindex = {c: i for i, c in enumerate(cids)}  # a duplicated id maps to its last row, as the dict did

    # rewards -> (candidate index, verifier index, oriented value, event), filtered as the policy says
    rc = _columns(rewards, ("candidate_id", "verifier", "value", "event_seq"), {})
    ci = np.fromiter((cindex.get(c, -1) for c in rc["candidate_id"]), dtype=np.int64, count=len(rc["candidate_id"]))
    vj = np.fromiter((vidx.get(v, -1) for v in rc["verifier"]), dtype=np.int64, count=len(rc["verifier"]))
    has_value = np.fromiter((x is not None for x in rc["value"]), dtype=bool, count=len(rc["value"]))
    keep = (ci >= 0) & (vj >= 0) & has_value
    keep[keep] = allowed[ci[keep]]
    rows = np.flatnonzero(keep)
    ci, vj = ci[rows], vj[rows]
    raw = np.array([rc["value"][r] for r in rows], dtype=np.float64)
    ev = np.array([rc["event_seq"][r] for r in rows], dtype=np.int64)
    sign = np.array([1.0 if higher_is_better.get(v, True) else -1.0 for v in V])
    oriented = np.where(sign[vj] > 0, raw, -raw)

    values = np.full((n, nv), np.nan)
    last = _last_per_key(ci * nv + vj)  # the last row of each (candidate, verifier) pair wins
    values[ci[last], vj[last]] = oriented[last]
    event_of = np.full(n, -1, dtype=np.int64)
    has_rows = np.zeros(n, dtype=bool)
    last_c = _last_per_key(ci)  # a candidate's event: that of its last row
    event_of[ci[last_c]] = ev[last_c]
    has_rows[ci[last_c]] = True

    eligible = has_rows & np.all(np.isfinite(values), axis=1)
    missing = int(allowed.sum() - eligible.sum())
    if missing:
        log.warning("selection %s: %d candidate(s) lack a reward for some verifier and are not eligible", sel_id, missing)

    # events in event_seq order; within an event, candidates in candidate_id order
    el = np.flatnonzero(eligible)
    el = el[np.lexsort((el, event_of[el]))]
    ev_el = event_of[el]
    bounds = np.flatnonzero(np.r_[True, ev_el[1:] != ev_el[:-1], True]) if el.size else np.array([0])
    groups = [(int(ev_el[a]), el[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    last_event: dict[str, int] = {}
    for e, ids in groups:
        pid = cpid[ids[0]]
        last_event[pid] = max(last_event.get(pid, e), e)

    shard_of = prompt_shards(prompt_order, spec.arw_shards) if spec.arw_shards > 1 else {}
    if spec.arw_shards > 1:
        unknown = sorted({cpid[ids[0]] for _, ids in groups} - set(shard_of))
        if unknown:
            raise ConfigError(f"selection {sel_id}: arw_shards={spec.arw_shards} needs every prompt in the prompt "
                              f"order; {len(unknown)} are not (first: {unknown[0]!r})")
    aggs: dict[int, Any] = {}  # shard -> its aggregator (run scope: one, shard 0)
    trace_rows: list[dict[str, Any]] = []  # every state's trace rows, in the order they were made
    cols = [np.ascontiguousarray(values[:, j]) for j in range(nv)]
    seen: dict[str, list[np.ndarray]] = {}
    selections: dict[str, dict[str, Any]] = {}
    aggregates: dict[str, float] = {}
    for e, ids in groups:
        pid = cpid[ids[0]]
        shard = shard_of.get(pid, 0)
        agg = aggs.get(shard)
        if agg is None:
            agg = aggs[shard] = get_aggregator(spec.aggregator, V, spec.weight_map, **spec.params)
        n_trace = len(agg.trace)
        agg.observe({v: cols[j][ids] for v, j in vidx.items()}, event_seq=e, prompt_id=pid,
                    generation=int(gens[ids].min()))
        trace_rows.extend(dict(t, arw_shard=shard) for t in agg.trace[n_trace:])
        seen.setdefault(pid, []).append(ids)
        if last_event[pid] == e:
            pool = np.sort(np.concatenate(seen[pid]))
            pool = pool[final[pool]]  # intermediate candidates fed the aggregator but are never answers
            if not pool.size:
                continue
            n_trace = len(agg.trace)
            a = agg.combine({v: cols[j][pool] for v, j in vidx.items()})
            trace_rows.extend(dict(t, arw_shard=shard) for t in agg.trace[n_trace:])
            best = int(np.flatnonzero(a == a.max())[0])
            for i, x in zip(pool.tolist(), a.tolist()):
                aggregates[cids[i]] = float(x)
            selections[pid] = dict(prompt_id=pid, candidate_id=cids[pool[best]], score=float(a[best]))
    out = []
    spec_json = json.dumps(spec.to_dict(), sort_keys=True)
    for pid in prompt_order:
        if pid not in by_prompt:
            continue
        s = selections.get(pid, dict(prompt_id=pid, candidate_id=None, score=None))
        out.append(
            dict(
                selection_id=sel_id,
                prompt_id=pid,
                candidate_id=s["candidate_id"],
                score=s["score"],
                aggregator=spec.aggregator,
                verifiers=list(V),
                weights=list(spec.weights),
                budget=spec.budget,
                spec=spec_json,
            )
        )
    trace = [dict(selection_id=sel_id, **t) for t in trace_rows]
    return ReplayResult(selections=out, trace=trace, aggregates=aggregates)
