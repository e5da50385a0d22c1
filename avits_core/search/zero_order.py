"""Zero-order search over the initial noise (Ma et al. 2025, "Inference-time scaling for diffusion
models beyond scaling denoising steps", section on search algorithms) - a plan-only method.

A *pivot* noise is kept per prompt. Each scoring event after the first draws ``neighbours`` (K)
noises in the pivot's neighbourhood, denoises them over the whole schedule and scores them; the
pivot then moves to the best neighbour if that neighbour's aggregate beats the pivot's. When no
neighbour beats the pivot, the search has reached a (local) fixed point - users of existing
implementations report it stalling there - so the next event *restarts*: K fresh noises, and the
best of them becomes the new pivot.

Events (``n`` = the budget in candidates per prompt, K = ``neighbours``; ``ceil(n / K)`` events,
every one K candidates except a smaller last one when K does not divide n):

* event 0 is a restart: K fresh noises with Best-of-N's seeds (``derive_seed(run_seed, prompt,
  i)``, i = 0..K-1), so its first candidate is Best-of-N's first (the run's baseline);
* event e >= 1 looks at event e-1 under the aggregates after it (the aggregator's current state, so
  for ARW the pivot is re-ranked as the weights move):
    - event e-1 was a restart: the pivot is its best eligible candidate (none eligible: restart again);
    - event e-1 drew neighbours of pivot p: the best eligible neighbour b becomes the pivot when
      ``agg(b) > agg(p)`` (strictly; exact ties keep p); otherwise restart;
  a neighbourhood event makes K children of the pivot at step 0, neighbour i mixed as
  ``z' = sqrt(1 - radius^2) z + radius eps_i`` (the variance-preserving noise mutation of
  :mod:`avits_core.search.mutation`; eps_i seeded by ``derive_seed(run_seed, prompt, i,
  salt="zo-e<e>")``); a restart event makes K fresh noises with Best-of-N's seeds ``e*K .. e*K+K-1``.
* Neighbourhood: the paper samples candidates on a sphere of radius lambda around the pivot; here
  ``radius`` (in (0, 1]) is the mutation strength beta. For a d-dimensional standard normal pivot the
  expected squared distance of a neighbour is ``2 d (1 - sqrt(1 - radius^2))`` (radius 0.3: 0.046 d),
  and each neighbour stays a standard normal draw, i.e. on the noise prior (a plain additive step
  would leave it).
* ``modality``/``route_by_modality`` (:mod:`avits_core.search.routing`): which of the video and audio
  noises a neighbour changes; routed per pivot.

The answer is the prompt's best candidate over all events under the final aggregate (the replay
selection's rule), not necessarily the last pivot.

NFE accounting: every candidate starts from noise at step 0 and is denoised over the full schedule
(no predict_x0 is needed at step 0), so each costs one full sample (``nfe = nfe_own = S x`` the
generator's evaluations per step) and a prompt costs exactly ``n`` full samples, restarts or not -
the budget of a Best-of-n. Lineage: a neighbour's ``parent_ids`` is its pivot and ``step`` 0; a restart
candidate has no parent. The plan of each event >= 1 records ``kind`` ("restart" / "neighbours"),
``pivot`` and the comparison that decided it (``info``).

Edge cases: ``neighbours > n`` is a ConfigError naming ``search.params.neighbours``; ``n = 1`` (a
budget of one candidate) is one event of one fresh noise (Best-of-1); when every score is equal no
neighbour beats the pivot, so events alternate neighbourhood / restart.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pydantic import Field, model_validator

from avits_core.errors import ConfigError
from avits_core.search.base import CandidatePlan, EventPlan, PromptView, SearchMethod
from avits_core.search.engine import best_of
from avits_core.search.routing import RoutedParams
from avits_core.seeding import candidate_seeds, derive_seed

log = logging.getLogger(__name__)


class ZeroOrderParams(RoutedParams):
    """``search.params`` of ``zero_order`` (``n`` defaults to the config's ``search.n``)."""

    n: int = Field(default=8, ge=1, description="budget: candidates (full samples) per prompt")
    neighbours: int = Field(default=4, ge=1, description="K: candidates per event (neighbours of the pivot, "
                                                        "or fresh noises at a restart)")
    radius: float = Field(default=0.3, gt=0.0, le=1.0, description="neighbourhood size: the mutation "
                                                                    "strength beta of the noise (1 = fresh noise)")

    @model_validator(mode="after")
    def _valid(self) -> "ZeroOrderParams":
        if self.neighbours > self.n:
            raise ConfigError(
                f"search.params.neighbours: {self.neighbours} candidates per event exceed the budget of "
                f"n={self.n} candidates per prompt (set neighbours <= n, or raise search.n)"
            )
        return self


class ZeroOrder(SearchMethod):
    """Zero-order search over initial noises with restarts (see the module docstring)."""

    name = "zero_order"
    Params = ZeroOrderParams

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self.router = p.router()

    @property
    def n_events(self) -> int:
        return math.ceil(self.params.n / self.params.neighbours)

    def event_size(self, event: int) -> int:
        k = self.params.neighbours
        return min(k, self.params.n - event * k)

    def capture_steps(self, event: int) -> list[int]:
        return [0] if event < self.n_events - 1 else []  # every candidate may become a pivot

    def _restart(self, view: PromptView, event: int, info: dict[str, Any]) -> EventPlan:
        k = self.params.neighbours
        seeds = candidate_seeds(view.run_seed, view.prompt_id, self.event_size(event), start=event * k)
        return EventPlan(view.prompt_id, event, [CandidatePlan(seed=int(s)) for s in seeds],
                         info=dict(info, kind="restart", pivot=None))

    @staticmethod
    def _kind(view: PromptView, event: int) -> tuple[str, str | None]:
        if event == 0:
            return "restart", None
        info = view.plans[event].info
        return str(info["kind"]), info.get("pivot")

    def plan(self, event: int, view: PromptView) -> EventPlan:
        if event == 0:
            return self._restart(view, 0, {})
        agg = view.aggregates()
        prev = view.made_at(event - 1)
        prev_kind, pivot = self._kind(view, event - 1)
        best = best_of({c: agg[c] for c in prev if c in agg})
        info: dict[str, Any] = {"previous": prev_kind, "best_previous": best,
                                "best_previous_aggregate": agg.get(best) if best else None}
        if prev_kind == "restart":
            if best is None:
                log.warning("%s e%d: no candidate of the restart is eligible; restarting again", view.prompt_id, event)
                return self._restart(view, event, dict(info, reason="no eligible candidate"))
            new_pivot = best
            info["reason"] = "best of the restart"
        else:
            old = agg.get(pivot, -math.inf) if pivot is not None else -math.inf
            info["pivot_aggregate"] = None if old == -math.inf else old
            if best is None or not agg[best] > old:
                log.info("%s e%d: no neighbour beats pivot %s; restarting", view.prompt_id, event, pivot)
                return self._restart(view, event, dict(info, reason="no neighbour beats the pivot",
                                                       previous_pivot=pivot))
            new_pivot = best
            info["reason"] = "a neighbour beats the pivot"
        size = self.event_size(event)
        modality = self.router.for_parents(view, [new_pivot])[0]
        mutation = {"rule": "vp", "beta": float(self.params.radius), "modality": modality}
        kids = [CandidatePlan(seed=derive_seed(view.run_seed, view.prompt_id, i, salt=f"zo-e{event}"),
                              parent=new_pivot, step=0, mutation=mutation) for i in range(size)]
        return EventPlan(view.prompt_id, event, kids,
                         info=dict(info, kind="neighbours", pivot=new_pivot, modality=modality))
