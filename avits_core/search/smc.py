"""Feynman-Kac steering / sequential Monte Carlo (Singhal et al. 2025) - registered as ``smc``.

``particles`` (K) trajectories are sampled with the generator's *stochastic* sampler
(:func:`avits_core.generators.base.denoise_sde`, ``noise_scale`` > 0: same marginals as the ODE, so
copies of one particle diverge after resampling). At every step of ``resample_steps`` (r_1 < ... <
r_m) each particle's clean estimate (``predict_x0``, or a ``lookahead``-step ODE estimate) is decoded
and scored by the run's verifiers; the run's aggregator turns the rewards into one number r per
particle (for ARW: under the sigma fitted after this event), and

    potential      log G_e = lambda * ( r_e - r_{e-1} )          "diff" (r_0 = 0)
                             lambda * max(r_1, ..., r_e)          "max"
                             lambda * (r_1 + ... + r_e)           "add"
    weights        log W  += log G_e      (W carried over events without resampling)
    ESS            (sum W)^2 / sum W^2
    resampling     when ESS < ess_threshold * K: systematic resampling of K parents by W
                   (one uniform u ~ U[0, 1/K), positions u + j/K), then W = 1; otherwise each
                   particle continues itself with its weight.

The r's of a particle's ancestors (for diff, max, add) are the ancestors' aggregates under the
*current* aggregator state, so every term of a potential is on one scale even while ARW's sigmas
move. A particle a verifier failed on has G = 0 (it cannot be resampled); when no particle has a
weight left, all are kept with equal weights (logged). After r_m the particles are continued to the
end: the K final candidates; the answer is the best final candidate under the aggregate (as the
replay selects), the usual read-out of FK steering.

Events: ``len(resample_steps) + 1`` per prompt.

* event 0: K fresh noises (the seeds of Best-of-N), sampled 0 -> r_1, intermediate, scored;
* event e (1..m-1): K children of the resampled parents, sampled r_e -> r_{e+1} from the parent's
  latent kept at r_e (``{"rule": "continue"}``; the child's ``seed`` draws its SDE noise:
  ``derive_seed(run_seed, prompt_id, i, salt="smc-e<e>")``), intermediate, scored;
* event m: the same, sampled r_m -> S: final candidates.

The plan of event e (stored in ``plans/``) records the rewards, potentials, weights, ESS, whether it
resampled and the ancestor indices (``info``), so a resumed run continues the same lineage.

NFE per prompt (c = the generator's NFE per step): ``K S c`` for the trajectories plus
``K m L c`` for the clean estimates (``L = min(lookahead, S - r)``); ``nfe_budget`` (optional, in
denoiser steps) caps it before anything is generated, the error naming ``search.params.particles``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, Sequence

import numpy as np
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
    strictly_increasing,
)
from avits_core.search.routing import RoutedParams
from avits_core.seeding import candidate_seeds, derive_seed

log = logging.getLogger(__name__)

CONTINUE = {"rule": "continue"}


def systematic_resample(weights: Sequence[float], u0: float) -> list[int]:
    """Systematic resampling: K = len(weights) indices (ascending) whose counts follow ``weights``.

    ``u0`` in [0, 1): the one uniform draw, scaled to [0, 1/K); particle i is picked once for every
    position u0/K + j/K (j = 0..K-1) in its slice of the cumulative normalised weights. Each index
    appears floor(K w_i) or ceil(K w_i) times (lower variance than multinomial resampling).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not w.size or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"resampling needs finite non-negative weights with a positive sum, got {w.tolist()}")
    if not 0.0 <= u0 < 1.0:
        raise ValueError(f"u0 must be in [0, 1), got {u0}")
    K = w.size
    cum = np.cumsum(w / w.sum())
    cum[-1] = 1.0
    pos = (u0 + np.arange(K)) / K
    return [int(i) for i in np.searchsorted(cum, pos, side="right")]


def effective_sample_size(log_w: Sequence[float]) -> float:
    """(sum W)^2 / sum W^2 of weights given as logs (-inf = 0); 0 when every weight is 0."""
    lw = np.asarray(log_w, dtype=np.float64)
    if not np.any(np.isfinite(lw)):
        return 0.0
    w = np.exp(lw - lw[np.isfinite(lw)].max())
    return float(w.sum() ** 2 / np.sum(w * w))


def log_potential(kind: str, lam: float, lineage: Sequence[float | None]) -> float:
    """log G of a particle whose rewards along its lineage are ``lineage`` (oldest first, the particle's
    own last; None = not eligible). -inf when the particle's own reward is missing."""
    if not lineage or lineage[-1] is None:
        return -math.inf
    r = float(lineage[-1])
    if kind == "diff":
        prev = lineage[-2] if len(lineage) > 1 and lineage[-2] is not None else 0.0
        return lam * (r - float(prev))
    seen = [float(x) for x in lineage if x is not None]
    if kind == "max":
        return lam * max(seen)
    if kind == "add":
        return lam * sum(seen)
    raise ValueError(f"unknown potential {kind!r}")


class SMCParams(RoutedParams):
    particles: int = Field(default=8, ge=1, description="K, the number of particles")
    resample_steps: list[int] = Field(default_factory=lambda: [5, 10, 15], min_length=1,
                                      description="steps at which particles are scored and may be resampled")
    potential: Literal["max", "diff", "add"] = Field(default="max", description="potential type")
    lmbda: float = Field(default=2.0, gt=0, description="lambda: the potential's inverse temperature")
    ess_threshold: float = Field(default=0.5, ge=0, le=1, description="resample when ESS < ess_threshold * K")
    noise_scale: float = Field(default=1.0, ge=0, le=1, description="stochastic sampler's noise scale (0 = ODE)")
    lookahead: int = Field(default=1, ge=1, description="model evaluations of each clean estimate")
    nfe_budget: int | None = Field(default=None, ge=1, description="optional cap on denoiser steps per prompt")

    @field_validator("resample_steps")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        return strictly_increasing("resample_steps", v)


class SMC(SearchMethod):
    """Feynman-Kac steering with systematic resampling (see the module docstring)."""

    name = "smc"
    Params = SMCParams

    def __init__(self, params: Any = None):
        super().__init__(params)
        if self.params.noise_scale == 0.0 and self.params.particles > 1:
            raise ConfigError("search.params.noise_scale: SMC needs stochastic transitions (> 0); with the ODE the "
                              "copies of a resampled particle would stay identical")
        self.router = self.params.router()

    @property
    def n_events(self) -> int:
        return len(self.params.resample_steps) + 1

    def planned_steps(self, num_steps: int) -> int:
        K, L = self.params.particles, self.params.lookahead
        return int(K * num_steps + K * sum(lookahead_cost(L, r, num_steps) for r in self.params.resample_steps))

    def check_generator(self, num_steps: int) -> None:
        check_step_list("search.params.resample_steps", self.params.resample_steps, num_steps)
        check_nfe_budget(self.planned_steps(num_steps), self.params.nfe_budget, "particles",
                         f"{self.params.particles} particles")

    # -- plans ------------------------------------------------------------------------------------
    def plan(self, event: int, view: PromptView) -> EventPlan:
        p = self.params
        steps = list(p.resample_steps)
        pid = view.prompt_id
        if event == 0:
            seeds = candidate_seeds(view.run_seed, pid, p.particles)
            return EventPlan(pid, 0, [CandidatePlan(seed=int(s), stop=steps[0], lookahead=p.lookahead,
                                                    noise_scale=p.noise_scale, noise_modality=p.modality)
                                      for s in seeds])
        particles = view.made_at(event - 1)  # batch order = plan order of event - 1
        agg = view.aggregates()
        carried = [0.0] * len(particles)
        if event >= 2:
            prev = view.plans[event - 1].info.get("child_log_w")
            if prev is not None and len(prev) == len(particles):
                carried = [(-math.inf if x is None else float(x)) for x in prev]
        rewards, log_g = [], []
        for cid in particles:
            lineage = self._lineage(view, cid, agg)
            rewards.append(lineage[-1])
            log_g.append(log_potential(p.potential, p.lmbda, lineage))
        log_w = [c + g for c, g in zip(carried, log_g)]
        K = len(particles)
        ess = effective_sample_size(log_w)
        if ess == 0.0:
            log.warning("%s e%d: no particle has a weight left (all rewards missing); keeping all", pid, event)
            log_w = [0.0] * K
            ess = float(K)
        resampled = ess < p.ess_threshold * K
        if resampled:
            rng = np.random.default_rng(derive_seed(view.run_seed, pid, event, salt="smc-resample"))
            u0 = float(rng.random())
            top = max(x for x in log_w if math.isfinite(x))
            weights = [math.exp(x - top) if math.isfinite(x) else 0.0 for x in log_w]
            ancestors = systematic_resample(weights, u0)
            child_log_w: list[float | None] = [0.0] * K
        else:
            u0 = None
            ancestors = list(range(K))
            finite = [x for x in log_w if math.isfinite(x)]
            top = max(finite) if finite else 0.0
            child_log_w = [x - top if math.isfinite(x) else None for x in log_w]
        step = steps[event - 1]
        stop = steps[event] if event < len(steps) else None
        mods = self.router.for_parents(view, [particles[a] for a in ancestors])
        kids = [CandidatePlan(seed=derive_seed(view.run_seed, pid, i, salt=f"smc-e{event}"), parent=particles[a],
                              step=step, mutation=CONTINUE, stop=stop,
                              lookahead=p.lookahead if stop is not None else 1, noise_scale=p.noise_scale,
                              noise_modality=m)
                for i, (a, m) in enumerate(zip(ancestors, mods))]
        info = {"step": step, "particles": particles, "rewards": rewards,
                "log_potential": [x if math.isfinite(x) else None for x in log_g],
                "log_weight": [x if math.isfinite(x) else None for x in log_w], "ess": ess,
                "resampled": bool(resampled), "u0": u0, "ancestors": ancestors, "child_log_w": child_log_w,
                "modalities": mods}
        log.info("%s e%d: ESS %.2f of %d, %s", pid, event, ess, K,
                 f"resampled -> {ancestors}" if resampled else "no resampling")
        return EventPlan(pid, event, kids, info=info)

    @staticmethod
    def _lineage(view: PromptView, cid: str, agg: dict[str, float]) -> list[float | None]:
        """Aggregates of ``cid``'s ancestors (intermediate candidates, oldest first) and of ``cid``."""
        chain = []
        cur: str | None = cid
        while cur is not None:
            chain.append(agg.get(cur))
            rec = view.record(cur)
            cur = rec.parent_ids[0] if rec.parent_ids else None
        return chain[::-1]
