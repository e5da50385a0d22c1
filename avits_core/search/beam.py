"""Latent beam search (Oshima et al. 2025, "diffusion latent beam search") - registered as ``beam``.

``beams`` (B) partial trajectories are kept; at every step of ``beam_steps`` (s_1 < ... < s_m) each
beam is extended by ``candidates_per_beam`` (K) stochastic continuations (the generator's stochastic
sampler, :func:`avits_core.generators.base.denoise_sde`, ``noise_scale`` > 0: same marginals as the
ODE), every extension is judged on a *look-ahead* estimate of its clean sample - ``lookahead`` (L)
coarse ODE steps from its latent to data (:func:`avits_core.generators.base.lookahead_x0`; L = 1 is
the one-step ``predict_x0``) - decoded and scored by the run's verifiers, and the B extensions with
the best aggregate become the next beams. After s_m each beam is extended K times to the end: the
B K final candidates; the answer is the best of them under the aggregate (the replay's rule).

Events: ``len(beam_steps) + 1`` per prompt.

* event 0: B K fresh noises (the seeds of Best-of-N) sampled 0 -> s_1, intermediate, scored;
* event e (1..m-1): the B best candidates of event e - 1 (eligible ones by aggregate, exact ties to the
  lowest id; ones a verifier failed on only when fewer than B are eligible), each continued K times
  from its latent kept at s_e (``{"rule": "continue"}``; child seeds ``derive_seed(run_seed,
  prompt_id, i, salt="beam-e<e>")`` draw the SDE noise) to s_{e+1}, intermediate, scored;
* event m: the same to S: final candidates.

NFE per prompt (c = the generator's NFE per step; the look-ahead counts):
``B K (s_1 + L_1) c + sum_e B K (s_{e+1} - s_e + L_{e+1}) c + B K (S - s_m) c`` with ``L_e = min(L,
S - s_e)``. The look-ahead's NFE is part of each intermediate candidate's ``nfe`` / ``nfe_own``; the
latent kept at s_e (what children continue) does not include it. ``nfe_budget`` (optional, in
denoiser steps) caps the plan before anything is generated, the error naming ``search.params.beams``.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field, field_validator

from avits_core.errors import ConfigError
from avits_core.search.base import (
    CandidatePlan,
    EventPlan,
    PromptView,
    SearchMethod,
    check_nfe_budget,
    check_step_list,
    lookahead_cost,
    rank_by_aggregate,
    strictly_increasing,
)
from avits_core.search.routing import RoutedParams
from avits_core.seeding import candidate_seeds, derive_seed

log = logging.getLogger(__name__)

CONTINUE = {"rule": "continue"}


class BeamParams(RoutedParams):
    beams: int = Field(default=2, ge=1, description="B, beams kept after every scored step")
    candidates_per_beam: int = Field(default=2, ge=1, description="K, continuations of each beam per step")
    beam_steps: list[int] = Field(default_factory=lambda: [5, 10, 15], min_length=1,
                                  description="steps at which extensions are scored and the beams chosen")
    lookahead: int = Field(default=2, ge=1, description="coarse ODE steps of the look-ahead clean estimate")
    noise_scale: float = Field(default=1.0, ge=0, le=1, description="stochastic sampler's noise scale (0 = ODE)")
    nfe_budget: int | None = Field(default=None, ge=1, description="optional cap on denoiser steps per prompt")

    @field_validator("beam_steps")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        return strictly_increasing("beam_steps", v)


class BeamSearch(SearchMethod):
    """Latent beam search with look-ahead scoring (see the module docstring)."""

    name = "beam"
    Params = BeamParams

    def __init__(self, params: Any = None):
        super().__init__(params)
        if self.params.noise_scale == 0.0 and self.params.candidates_per_beam > 1:
            raise ConfigError("search.params.noise_scale: with candidates_per_beam > 1 the continuations of a beam "
                              "need stochastic transitions (> 0); with the ODE they would all be identical")
        self.router = self.params.router()

    @property
    def n_events(self) -> int:
        return len(self.params.beam_steps) + 1

    def planned_steps(self, num_steps: int) -> int:
        p = self.params
        BK = p.beams * p.candidates_per_beam  # B K rows in every event segment, 0 -> S in all
        return int(BK * num_steps + BK * sum(lookahead_cost(p.lookahead, s, num_steps) for s in p.beam_steps))

    def check_generator(self, num_steps: int) -> None:
        p = self.params
        check_step_list("search.params.beam_steps", p.beam_steps, num_steps)
        check_nfe_budget(self.planned_steps(num_steps), p.nfe_budget, "beams",
                         f"{p.beams} beams x {p.candidates_per_beam} candidates")

    def plan(self, event: int, view: PromptView) -> EventPlan:
        p = self.params
        steps = list(p.beam_steps)
        pid = view.prompt_id
        BK = p.beams * p.candidates_per_beam
        if event == 0:
            seeds = candidate_seeds(view.run_seed, pid, BK)
            return EventPlan(pid, 0, [CandidatePlan(seed=int(s), stop=steps[0], lookahead=p.lookahead,
                                                    noise_scale=p.noise_scale, noise_modality=p.modality)
                                      for s in seeds])
        pool = view.made_at(event - 1)
        agg = view.aggregates()
        ranked = rank_by_aggregate(pool, agg)
        beams = ranked[: p.beams]
        if not any(c in agg for c in pool):
            log.warning("%s e%d: no candidate of event %d has all its rewards; beams by id", pid, event, event - 1)
        step = steps[event - 1]
        stop = steps[event] if event < len(steps) else None
        kids = []
        mods = self.router.for_parents(view, beams)
        for b, mod in zip(beams, mods):
            for _ in range(p.candidates_per_beam):
                i = len(kids)
                kids.append(CandidatePlan(seed=derive_seed(view.run_seed, pid, i, salt=f"beam-e{event}"), parent=b,
                                          step=step, mutation=CONTINUE, stop=stop,
                                          lookahead=p.lookahead if stop is not None else 1,
                                          noise_scale=p.noise_scale, noise_modality=mod))
        info = {"step": step, "ranked": ranked, "scores": [agg.get(c) for c in ranked], "beams": beams,
                "modalities": mods}
        log.info("%s e%d: beams %s", pid, event, beams)
        return EventPlan(pid, event, kids, info=info)
