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
- Weights are normalised to sum 1 before use; orientation flips lower-is-better verifiers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weights"] = [round(x, 12) for x in self.weights]
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


def replay(
    spec: SelectionSpec,
    candidates: Sequence[Mapping[str, Any]],
    rewards: Sequence[Mapping[str, Any]],
    higher_is_better: Mapping[str, bool],
    prompt_order: Sequence[str],
) -> ReplayResult:
    """Run the aggregator over stored rewards. ``candidates``: rows with prompt_id, candidate_id,
    generation; ``rewards``: ok rows with candidate_id, verifier, value, event_seq."""
    sel_id = spec.selection_id
    V = spec.verifiers
    vidx = {v: j for j, v in enumerate(V)}
    by_prompt: dict[str, list[str]] = {}
    gen_of: dict[str, int] = {}
    for c in sorted(candidates, key=lambda c: c["candidate_id"]):
        by_prompt.setdefault(c["prompt_id"], []).append(c["candidate_id"])
        gen_of[c["candidate_id"]] = int(c.get("generation") or 0)
    allowed: dict[str, str] = {}
    for pid, ids in by_prompt.items():
        for cid in ids[: spec.budget] if spec.budget else ids:
            allowed[cid] = pid
    # values[cid] = vector over V (NaN = missing); event of each candidate
    values: dict[str, np.ndarray] = {}
    event_of: dict[str, int] = {}
    for r in rewards:
        cid = r["candidate_id"]
        j = vidx.get(r["verifier"])
        if j is None or cid not in allowed or r.get("value") is None:
            continue
        vec = values.setdefault(cid, np.full(len(V), np.nan))
        val = float(r["value"])
        vec[j] = val if higher_is_better.get(r["verifier"], True) else -val
        event_of[cid] = int(r["event_seq"])
    eligible = {cid for cid, vec in values.items() if np.all(np.isfinite(vec))}
    missing = len(allowed) - len(eligible)
    if missing:
        log.warning("selection %s: %d candidate(s) lack a reward for some verifier and are not eligible", sel_id, missing)
    events: dict[int, list[str]] = {}
    for cid in sorted(eligible):
        events.setdefault(event_of[cid], []).append(cid)
    last_event: dict[str, int] = {}
    for e, ids in events.items():
        pid = allowed[ids[0]]
        last_event[pid] = max(last_event.get(pid, e), e)
    agg = get_aggregator(spec.aggregator, V, spec.weight_map, **spec.params)
    seen: dict[str, list[str]] = {}
    selections: dict[str, dict[str, Any]] = {}
    aggregates: dict[str, float] = {}
    for e in sorted(events):
        ids = events[e]
        pid = allowed[ids[0]]
        scores = {v: np.array([values[cid][j] for cid in ids]) for v, j in vidx.items()}
        agg.observe(scores, event_seq=e, prompt_id=pid, generation=min(gen_of[cid] for cid in ids))
        seen.setdefault(pid, []).extend(ids)
        if last_event[pid] == e:
            pool = sorted(seen[pid])
            pscores = {v: np.array([values[cid][j] for cid in pool]) for v, j in vidx.items()}
            a = agg.combine(pscores)
            best = int(np.flatnonzero(a == a.max())[0])
            for cid, x in zip(pool, a):
                aggregates[cid] = float(x)
            selections[pid] = dict(prompt_id=pid, candidate_id=pool[best], score=float(a[best]))
    rows = []
    for pid in prompt_order:
        if pid not in by_prompt:
            continue
        s = selections.get(pid, dict(prompt_id=pid, candidate_id=None, score=None))
        rows.append(
            dict(
                selection_id=sel_id,
                prompt_id=pid,
                candidate_id=s["candidate_id"],
                score=s["score"],
                aggregator=spec.aggregator,
                verifiers=list(V),
                weights=list(spec.weights),
                budget=spec.budget,
                spec=json.dumps(spec.to_dict(), sort_keys=True),
            )
        )
    trace = [dict(selection_id=sel_id, **t) for t in agg.trace]
    return ReplayResult(selections=rows, trace=trace, aggregates=aggregates)
