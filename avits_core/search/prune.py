"""Best-of-N with early pruning (the TTSnap / LatSearch idea) - registered as ``prune``.

``n`` candidates start from the very noises of Best-of-N (seed ``i`` = ``derive_seed(run_seed,
prompt_id, i)``) and are denoised with the ODE. At each step of ``prune_steps`` the survivors' clean
estimates (``predict_x0``, or a ``lookahead``-step ODE estimate) are decoded and scored by the run's
verifiers like any candidate; the run's aggregator ranks them and only the best ``keep`` fraction
(``ceil(keep * alive)``, at least one) is denoised further. The survivors of the last prune step are
denoised to the end: they are the only *final* candidates, and the answer is the best of them under
the aggregate after the last event (the replay's rule).

Events: ``len(prune_steps) + 1`` per prompt.

* event 0: ``n`` fresh candidates denoised 0 -> p_1, *intermediate* (``candidates.kind``), scored;
* event e (1..m-1): the survivors of event e-1 continued p_e -> p_{e+1} (the latent kept at p_e, not
  changed: ``{"rule": "continue"}``), intermediate, scored;
* event m: the survivors continued p_m -> S: final candidates, scored.

Because the ODE is deterministic and the kept latent is exact, a final candidate is bit for bit the
Best-of-N candidate with the same seed (``tests/test_search_smc_beam_prune.py`` checks it): pruning
only decides which of Best-of-N's candidates are finished.

Ranking (decision): eligible candidates (every guided reward present) by descending aggregate, exact
ties to the lowest id; candidates a verifier failed on rank after them (id order) - they survive only
when fewer eligible candidates than the keep count exist, so the compute per prompt does not depend
on verifier failures.

NFE (``nfe_own`` summed over a prompt, c = the generator's NFE per step): ``n (p_1 + L) c`` for event 0,
``k_e (p_{e+1} - p_e + L) c`` for each later intermediate event and ``k_m (S - p_m) c`` for the finals,
with ``L = min(lookahead, S - p)`` the clean estimate's evaluations and ``k_e`` the survivors. A final
candidate's ``nfe`` is its own trajectory's S c (the estimates' evaluations are spent beside it).
Counting the estimate separately is conservative: for a flow model the ``predict_x0`` at p is the same
forward pass as the next Euler step's, which a fused implementation could reuse.

``nfe_budget`` (optional, in denoiser steps = NFE at one pass per step): the planned cost per prompt must
not exceed it, checked against the generator's ``num_steps`` before anything is generated; the error
names ``search.params.n``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pydantic import Field, field_validator

from avits_core.errors import ConfigError
from avits_core.search.base import (
    CandidatePlan,
    EventPlan,
    MethodParams,
    PromptView,
    SearchMethod,
    check_nfe_budget,
    check_step_list,
    lookahead_cost,
    rank_by_aggregate,
    strictly_increasing,
)
from avits_core.seeding import candidate_seeds

log = logging.getLogger(__name__)

CONTINUE = {"rule": "continue"}


class PruneParams(MethodParams):
    n: int = Field(default=8, ge=1, description="candidates started (search.n when not set here)")
    prune_steps: list[int] = Field(default_factory=lambda: [5], min_length=1,
                                   description="steps at which the survivors' clean estimates are scored and pruned")
    keep: float | list[float] = Field(default=0.5, description="fraction kept at each prune step (one value or one "
                                                               "per step), in (0, 1]")
    lookahead: int = Field(default=1, ge=1, description="model evaluations of each clean estimate (1 = predict_x0)")
    nfe_budget: int | None = Field(default=None, ge=1, description="optional cap on the planned denoiser steps "
                                                                   "per prompt")

    @field_validator("prune_steps")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        return strictly_increasing("prune_steps", v)

    @field_validator("keep")
    @classmethod
    def _fraction(cls, v: float | list[float]) -> float | list[float]:
        for i, x in enumerate(v if isinstance(v, list) else [v]):
            if not (math.isfinite(x) and 0.0 < x <= 1.0):
                where = f"search.params.keep[{i}]" if isinstance(v, list) else "search.params.keep"
                raise ConfigError(f"{where}: a kept fraction must be in (0, 1], got {x!r}")
        return v


class PrunedBestOfN(SearchMethod):
    """Best-of-N whose candidates are scored at ``prune_steps`` and pruned (see the module docstring)."""

    name = "prune"
    Params = PruneParams

    def __init__(self, params: Any = None):
        super().__init__(params)
        p = self.params
        if isinstance(p.keep, list) and len(p.keep) != len(p.prune_steps):
            raise ConfigError(f"search.params.keep: {len(p.keep)} fractions for {len(p.prune_steps)} prune steps "
                              "(give one value, or one per step)")

    # -- declarations -----------------------------------------------------------------------------
    @property
    def n_events(self) -> int:
        return len(self.params.prune_steps) + 1

    def keep_fraction(self, i: int) -> float:
        k = self.params.keep
        return float(k[i] if isinstance(k, list) else k)

    def survivors(self) -> list[int]:
        """Candidates alive in each event: [n, k_1, ..., k_m]."""
        alive = [self.params.n]
        for i in range(len(self.params.prune_steps)):
            alive.append(max(1, math.ceil(self.keep_fraction(i) * alive[-1] - 1e-9)))
        return alive

    def planned_steps(self, num_steps: int) -> int:
        """Denoiser steps per prompt (multiply by the generator's NFE per step for NFE)."""
        steps = list(self.params.prune_steps) + [num_steps]
        alive = self.survivors()
        L = self.params.lookahead
        total = alive[0] * (steps[0] + lookahead_cost(L, steps[0], num_steps))
        for e in range(1, len(steps)):
            seg = steps[e] - steps[e - 1]
            total += alive[e] * (seg + (lookahead_cost(L, steps[e], num_steps) if e < len(steps) - 1 else 0))
        return int(total)

    def check_generator(self, num_steps: int) -> None:
        check_step_list("search.params.prune_steps", self.params.prune_steps, num_steps)
        check_nfe_budget(self.planned_steps(num_steps), self.params.nfe_budget, "n",
                         f"{self.params.n} candidates pruned at {self.params.prune_steps}")

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), survivors=self.survivors())

    # -- plans ------------------------------------------------------------------------------------
    def plan(self, event: int, view: PromptView) -> EventPlan:
        p = self.params
        steps = list(p.prune_steps)
        pid = view.prompt_id
        if event == 0:
            seeds = candidate_seeds(view.run_seed, pid, p.n)
            return EventPlan(pid, 0, [CandidatePlan(seed=int(s), stop=steps[0], lookahead=p.lookahead)
                                      for s in seeds])
        alive = view.made_at(event - 1)
        agg = view.aggregates()
        ranked = rank_by_aggregate(alive, agg)
        k = self.survivors()[event]
        kept = sorted(ranked[:k])
        if not any(c in agg for c in alive):
            log.warning("%s e%d: no candidate of event %d has all its rewards; keeping the first %d by id",
                        pid, event, event - 1, k)
        step = steps[event - 1]
        stop = steps[event] if event < len(steps) else None
        kids = [CandidatePlan(seed=view.record(c).seed, parent=c, step=step, mutation=CONTINUE, stop=stop,
                              lookahead=p.lookahead if stop is not None else 1)
                for c in kept]
        info = {"step": step, "ranked": ranked, "scores": [agg.get(c) for c in ranked], "kept": kept,
                "pruned": sorted(set(alive) - set(kept))}
        log.info("%s e%d: kept %d of %d at step %d", pid, event, len(kept), len(alive), step)
        return EventPlan(pid, event, kids, info=info)
