"""Search over paths (Ma et al. 2025, "Inference-time scaling for diffusion models beyond scaling
denoising steps", section on search algorithms) - a plan-only method, registered as
``search_over_paths``.

The paper: sample N noises and run the sampler to an intermediate noise level; re-noise each sample
*forward* into M branches, denoise them again, score, keep the best N paths; repeat until the
sampler reaches the clean end.

Rounds as scoring events (``schedule = [k_1, ..., k_R]``, non-decreasing steps of the generator's
schedule; ``R + 1`` events):

* event 0: ``paths`` (N) fresh noises with Best-of-N's seeds (its first candidate is the run's
  baseline), denoised to the end; each keeps its latent at step ``k_1``; scored.
* event r >= 1 (round r, at step ``k_r``): the kept paths are the ``paths`` best eligible
  candidates of event r-1 under the aggregates after it (all of them when fewer are eligible; ties
  to the lower candidate id); each kept path's latent at ``k_r`` is re-noised into ``branches`` (M)
  children, which are denoised to the end (keeping their latent at ``k_{r+1}``) and scored.
* The answer is the prompt's best candidate over all events under the final aggregate.

Re-noising (decision; the protocol's branches stay at the parent's step): the paper noises
``x_{k}`` forward to a higher level and runs the sampler back down. Our engine branches a parent's
latent *at* its step, so a branch is the variance-preserving re-noising at the same level
(:func:`~avits_core.search.mutation.mutate_latent_vp`): ``x_k = (1 - s) x0_hat + s n_hat`` with
``x0_hat`` from ``predict_x0`` (one evaluation), and ``n_hat`` replaced by
``sqrt(1 - beta^2) n_hat + beta eps``. Forward noising from ``s`` to ``s' > s`` keeps a fraction
``c = (1 - s') s / ((1 - s) s')`` of the old noise; ``beta = sqrt(1 - c^2)`` is the matching
strength (``beta`` is a parameter; 0.5 keeps 87 % of the noise's direction). When ``k_r = 0`` the
branch is the plain noise mutation (no ``predict_x0``).

``modality``/``route_by_modality`` (:mod:`avits_core.search.routing`): which of the video and audio
latents a branch re-noises; routed per kept path.

NFE accounting: a branch at ``k > 0`` spends ``1 + (S - k)`` step evaluations (predict_x0, then the
rest of the schedule; at ``k = 0`` only ``S``), times the generator's evaluations per step; its
``nfe`` adds the parent's NFE up to ``k`` (the cost of this one sample), its ``nfe_own`` is what it
spent itself. A prompt spends at most ``N S + sum_r N M (1 + S - k_r)`` step evaluations (fewer when
some candidates are not eligible); ``budget`` (optional, in full samples of S steps, like
Best-of-N's ``n``) caps it: a plan that could exceed it is a ConfigError before anything is
generated. Lineage: a branch's ``parent_ids`` is its path, ``step`` is ``k_r``.

Edge cases: ``paths > budget`` is a ConfigError naming ``search.params.paths``; a schedule step >= S
(no noise left) names ``search.params.schedule[i]``; an empty schedule is Best-of-N (one event);
``paths = 1, schedule = []`` is a budget of one candidate; a round whose previous event has no
eligible candidate raises :class:`~avits_core.errors.EvoSearchError`.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field, model_validator

from avits_core.errors import ConfigError, EvoSearchError
from avits_core.search.base import (
    CandidatePlan,
    EventPlan,
    PromptView,
    SearchMethod,
    rank_by_aggregate,
)
from avits_core.search.routing import RoutedParams
from avits_core.seeding import candidate_seeds, derive_seed

log = logging.getLogger(__name__)


class SearchOverPathsParams(RoutedParams):
    """``search.params`` of ``search_over_paths``."""

    paths: int = Field(default=4, ge=1, description="N: fresh noises, and paths kept after every round")
    branches: int = Field(default=2, ge=1, description="M: children of every kept path per round")
    schedule: list[int] = Field(default_factory=lambda: [8, 14],
                                description="branch step of each round (non-decreasing; one round each)")
    beta: float = Field(default=0.5, gt=0.0, le=1.0, description="re-noising strength of a branch")
    budget: int | None = Field(default=None, ge=1, description="optional cap in full samples per prompt")

    @model_validator(mode="after")
    def _valid(self) -> "SearchOverPathsParams":
        for i, k in enumerate(self.schedule):
            if k < 0:
                raise ConfigError(f"search.params.schedule[{i}]: a step must be >= 0, got {k}")
            if i and k < self.schedule[i - 1]:
                raise ConfigError(
                    f"search.params.schedule[{i}]: step {k} comes before step {self.schedule[i - 1]}; the schedule "
                    "must be non-decreasing (a branch has no latent before its own branch step)")
        if self.budget is not None and self.paths > self.budget:
            raise ConfigError(f"search.params.paths: {self.paths} paths exceed the budget of {self.budget} "
                              "candidates per prompt")
        return self


class SearchOverPaths(SearchMethod):
    """Search over paths: N paths, M re-noised branches per path and round, best N kept."""

    name = "search_over_paths"
    Params = SearchOverPathsParams

    def __init__(self, params=None):
        super().__init__(params)
        self.router = self.params.router()

    @property
    def n_events(self) -> int:
        return 1 + len(self.params.schedule)

    def capture_steps(self, event: int) -> list[int]:
        s = self.params.schedule
        return [s[event]] if event < len(s) else []

    def budget(self) -> tuple[int | None, str]:
        """Most candidates one prompt can create (N fresh + N M per round), for the pre-flight limits."""
        p = self.params
        n = p.paths + len(p.schedule) * p.paths * p.branches
        return n, f"search.params paths={p.paths} x branches={p.branches} over {len(p.schedule)} round(s)"

    def max_step_evals(self, num_steps: int) -> int:
        """Most step evaluations one prompt can spend with a generator of ``num_steps`` steps."""
        p = self.params
        total = p.paths * num_steps
        for k in p.schedule:
            total += p.paths * p.branches * ((1 if k > 0 else 0) + num_steps - k)
        return total

    def check_generator(self, num_steps: int) -> None:
        for i, k in enumerate(self.params.schedule):
            if k >= num_steps:
                raise ConfigError(
                    f"search.params.schedule[{i}]: step {k} is beyond the generator's schedule; with "
                    f"num_steps={num_steps} a branch step must be in [0, {num_steps - 1}]")
        b = self.params.budget
        if b is not None:
            need = self.max_step_evals(num_steps)
            if need > b * num_steps:
                raise ConfigError(
                    f"search.params.budget: {self.params.paths} paths x {self.params.branches} branches over "
                    f"schedule {self.params.schedule} can spend {need} step evaluations = {need / num_steps:.2f} "
                    f"full samples of {num_steps} steps, over the budget of {b}")

    def plan(self, event: int, view: PromptView) -> EventPlan:
        p = self.params
        pid = view.prompt_id
        if event == 0:
            seeds = candidate_seeds(view.run_seed, pid, p.paths)
            return EventPlan(pid, 0, [CandidatePlan(seed=int(s)) for s in seeds])
        agg = view.aggregates()
        prev = [c for c in view.made_at(event - 1) if c in agg]
        if not prev:
            raise EvoSearchError(f"{pid}: no candidate of event {event - 1} has all its rewards; "
                                 f"cannot choose the paths of round {event}")
        kept = rank_by_aggregate(prev, agg)[: p.paths]  # best first, ties to the lower id
        step = p.schedule[event - 1]
        mods = self.router.for_parents(view, kept)
        kids = []
        for i, (path, mod) in enumerate(zip(kept, mods)):
            mutation = {"rule": "vp", "beta": float(p.beta), "modality": mod}
            for j in range(p.branches):
                seed = derive_seed(view.run_seed, pid, i * p.branches + j, salt=f"paths-r{event}")
                kids.append(CandidatePlan(seed=seed, parent=path, step=step, mutation=mutation))
        info: dict[str, Any] = {"step": step, "kept": kept, "kept_aggregates": [agg[c] for c in kept],
                                "modalities": mods}
        log.info("%s round %d at step %d: paths %s", pid, event, step, kept)
        return EventPlan(pid, event, kids, info=info)
