"""EvoSearch: evolutionary search over initial noises and intermediate latents - a plan-only method.

This file only *plans* (:class:`EvoSearch`, registered as ``evosearch``): which pool members are
carried as elites, which parent each child has, the branch step and the mutation seeds. Making the
children (mutation, denoising, kept latents, NFE), scoring, the online aggregate the pool is ranked by,
storage and resume are the search engine's (:mod:`avits_core.search.engine`), shared by every method.

Generations (the interpretation this module implements)
    ``population_size_schedule = [P0, P1, ..., P_{G-1}]`` and ``evolution_schedule = [k1, ..., k_{G-1}]``
    (so ``len(population_size_schedule) == len(evolution_schedule) + 1`` and ``n_generations = G``).

    * Generation 0: ``P0`` fresh noises, seed ``i`` = ``derive_seed(run_seed, prompt_id, i)`` (the very
      seeds of Best-of-N, so generation 0 *is* a Best-of-P0 run), denoised from step 0 to S, decoded,
      scored. This is one scoring event.
    * Generation g >= 1 evolves at step ``k = evolution_schedule[g-1]``. The *pool* is the population
      of generation g-1 (the elites carried into g-1 plus the children made in g-1; for g-1 = 0 the
      P0 fresh candidates). Every candidate of the prompt seen so far is ranked with the aggregator's
      current state (for ARW: the sigma fitted after the newest event); then
        - the ``elite_size`` best of the pool are carried into generation g unchanged. They are not
          regenerated, re-stored or re-scored: they stay candidates of the generation that made them;
        - ``P_g - elite_size`` children are made: each child's parent is the winner of one tournament
          over the pool (``tournament_size`` distinct members drawn uniformly; the best aggregate
          wins, exact ties to the lowest candidate id); the parent's latent at step k is mutated with
          noise from ``derive_seed(run_seed, prompt_id, child_index, salt=f"mut-g{g}")`` and the
          child is denoised k -> S, decoded and scored (one scoring event per generation).
    * The answer is the best candidate over *all* generations under the final aggregate (the same
      rule the replay selection applies), not the best of the last population.

Mutation (``beta = mutation_rate``)
    * Step 0 (initial noise): ``z' = sqrt(1 - beta^2) z + beta eps`` (variance preserving: a standard
      normal z stays standard normal; beta = 0 is the identity, beta = 1 a fresh noise).
    * Intermediate step k > 0, ``latent_mutation = "vp"`` (default): rectified flow writes
      ``x_k = (1 - s) x0 + s n`` with ``s = timesteps[k]``. ``predict_x0`` (spends the generator's NFE
      for one evaluation; counted in the child's nfe) gives ``x0_hat``; the implied noise is
      ``n_hat = (x_k - (1 - s) x0_hat) / s``; it is mutated as above and mixed again:
      ``x_k' = (1 - s) x0_hat + s (sqrt(1 - beta^2) n_hat + beta eps)``. The child stays on the
      marginal of step k (beta = 0 gives x_k back up to rounding).
    * ``latent_mutation = "additive"`` (the reference rule): ``x_k' = x_k + (t/T) eps`` with
      ``t/T = timesteps[k]`` (the noise level in [0, 1]). As in the reference, beta does not enter;
      no NFE is spent; the noise variance of x_k grows (from s^2 to 2 s^2), which is why it is not
      the default.
    * ``modality = "joint"`` (default) mutates video and audio latents together (one draw of eps for
      both); ``"video"`` / ``"audio"`` mutate that modality only and copy the other from the parent.
    * ``route_by_modality = true`` chooses the modality per child from its parent's rewards: the video
      noise when the parent's video-side verifiers are weak, the audio noise when its audio-side ones
      are (rule and verifier sides: :mod:`avits_core.search.routing`; ``modality`` is the fallback when
      no verifier reads only one track). ``verifier_modalities`` names the tracks of verifiers that are
      not registered. The plan's ``info["modalities"]`` records the choice per child.
    * eps is ``generator.init_noise([mutation_seed])``: a standard normal of the generator's own
      latent shapes, dtype and device, deterministic per seed.

Compute accounting (decision): a child's ``nfe`` is its parent's nfe when the parent's latent was at
step k (inherited: what it costs to make this one sample alone) plus the NFE the child spent itself
(predict_x0 for the VP rule, then k -> S); ``nfe_own`` is the part it spent itself. Summing
``nfe_own`` over a prompt's candidates gives the compute the search actually spent on the prompt.

Edge cases (decisions, all raise :class:`~avits_core.errors.ConfigError` naming the field):
    * a population not larger than ``elite_size`` in a generation g >= 1 (it would have no child);
      ``population_size_schedule[0] < elite_size`` (the elites could not be filled);
    * ``evolution_schedule`` decreasing (a candidate branched at step k has no latent before k, so
      later generations cannot evolve at an earlier step); equal steps are allowed;
    * a schedule step >= the generator's ``num_steps`` (at step S the latent is clean: there is no
      noise left to mutate) - checked by :meth:`EvoSearchConfig.check_steps` before anything is
      generated;
    * an empty ``evolution_schedule`` is allowed: one generation, i.e. Best-of-P0 (documented
      behaviour); a one-entry schedule gives two generations; with a one-step generator (S = 1) only
      step 0 can be evolved.
    * At run time, when fewer pool members are eligible than ``elite_size`` (their scoring failed),
      all eligible ones are elites and the generation is filled up with children; an empty eligible
      pool raises :class:`EvoSearchError`.

Randomness: the tournaments of (prompt, generation g) draw from ``numpy.random.default_rng(
derive_seed(run_seed, prompt_id, g, salt="tournament"))``; together with the seeded noises the whole
search is a deterministic function of (config, run seed, prompts, rewards).

Tournament size (decision): ``min(pool, max(2, floor(tournament_ratio * pool)))`` - never fewer than
2 draws, or the whole pool when it is smaller than 2.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import model_validator

from avits_core.errors import EvoSearchError  # EvoSearchError: defined there, re-exported here
from avits_core.generators.base import JointGenerator, Latents
from avits_core.prompts import Prompt
from avits_core.search.base import CandidatePlan, EventPlan, MethodParams, PromptView, SearchMethod
from avits_core.search.evosearch_config import PRESETS, EvoSearchConfig  # noqa: F401 (PRESETS re-exported)
from avits_core.search.mutation import (  # noqa: F401 (the operators, re-exported for callers of this module)
    LATENT_MUTATIONS,
    MODALITIES,
    apply_mutation,
    mutate_latent_additive,
    mutate_latent_vp,
    mutate_noise,
    split_latent,
)
from avits_core.search.routing import Router
from avits_core.seeding import candidate_seeds, derive_seed

log = logging.getLogger(__name__)


def mutation_seeds(run_seed: int, prompt_id: str, generation: int, n: int) -> list[int]:
    """Seeds of the mutation noise of the ``n`` children of ``generation`` (>= 1)."""
    return [derive_seed(run_seed, prompt_id, i, salt=f"mut-g{generation}") for i in range(n)]


def _best_first(scores: np.ndarray) -> np.ndarray:
    """Indices sorted by descending score; exact ties keep the lower index first."""
    return np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))


def select_elites(scores: np.ndarray, elite_size: int) -> list[int]:
    """Indices of the ``elite_size`` best scores (best first; ties to the lower index)."""
    if elite_size < 0:
        raise ValueError(f"elite_size must be >= 0, got {elite_size}")
    return [int(i) for i in _best_first(scores)[:elite_size]]


def tournament_size(pool_size: int, ratio: float) -> int:
    """``min(pool, max(2, floor(ratio * pool)))``: never fewer than 2 draws, or the whole pool."""
    if pool_size < 1:
        raise ValueError("a tournament needs a non-empty pool")
    return min(pool_size, max(2, int(math.floor(ratio * pool_size + 1e-9))))


def tournament_select(scores: np.ndarray, n_parents: int, ratio: float, rng: np.random.Generator) -> list[int]:
    """``n_parents`` independent tournaments over the pool ``scores``; returns the winners' indices.

    Each tournament draws :func:`tournament_size` distinct members uniformly; the highest score wins,
    exact ties to the lower index.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    size = tournament_size(n, ratio)
    out = []
    for _ in range(n_parents):
        draw = np.sort(rng.choice(n, size=size, replace=False))
        out.append(int(draw[_best_first(scores[draw])[0]]))
    return out


@dataclass
class GenerationPlan:
    """What generation ``generation`` (>= 1) of a prompt does: which pool members are carried as
    elites, which parent each child has, the branch step and the mutation seeds."""

    prompt_id: str
    generation: int
    step: int
    pool: list[str]
    pool_scores: list[float]
    elites: list[str]
    parents: list[str]
    mutation_seeds: list[int]
    tournament_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GenerationPlan":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def plan_generation(
    cfg: EvoSearchConfig, prompt_id: str, generation: int, pool: Sequence[str], pool_scores: Sequence[float],
    run_seed: int,
) -> GenerationPlan:
    """Elites and tournament parents of ``generation`` >= 1 from the pool's current aggregates.

    ``pool``: the eligible members of the previous population (candidate ids), ``pool_scores`` their
    aggregates. When fewer than ``elite_size`` are eligible, all of them are elites and the rest of
    the population is made of children.
    """
    if generation < 1:
        raise ValueError("generation 0 has no parents")
    if len(pool) != len(pool_scores):
        raise ValueError(f"{len(pool)} pool members but {len(pool_scores)} scores")
    if not pool:
        raise EvoSearchError(
            f"{prompt_id}: no candidate of generation {generation - 1}'s population has all its rewards; "
            f"cannot choose parents for generation {generation}"
        )
    order = sorted(range(len(pool)), key=lambda i: pool[i])  # candidate-id order, as the replay ranks
    ids = [pool[i] for i in order]
    scores = np.asarray([pool_scores[i] for i in order], dtype=np.float64)
    if not np.all(np.isfinite(scores)):
        raise EvoSearchError(f"{prompt_id}: non-finite aggregate in the pool of generation {generation}")
    n_elite = min(cfg.elite_size, len(ids))
    elites = [ids[i] for i in select_elites(scores, n_elite)]
    n_children = cfg.population_size_schedule[generation] - n_elite
    rng = np.random.default_rng(derive_seed(run_seed, prompt_id, generation, salt="tournament"))
    parents = [ids[i] for i in tournament_select(scores, n_children, cfg.tournament_ratio, rng)]
    return GenerationPlan(
        prompt_id=prompt_id,
        generation=generation,
        step=cfg.branch_step(generation),
        pool=ids,
        pool_scores=[float(x) for x in scores],
        elites=elites,
        parents=parents,
        mutation_seeds=mutation_seeds(run_seed, prompt_id, generation, n_children),
        tournament_size=tournament_size(len(ids), cfg.tournament_ratio),
    )


def mutate(generator: JointGenerator, lat: Latents, prompt: Prompt, eps: Latents, cfg: EvoSearchConfig) -> Latents:
    """Mutate parents' latents with ``cfg``'s rule: initial noise at step 0, else VP or additive."""
    return apply_mutation(generator, lat, prompt, eps, cfg.mutation())


# ------------------------------------------------------------------------------------------------
# the search method


class EvoSearchParams(MethodParams):
    """``search.params`` of EvoSearch: a ``preset`` ("paper", "demo") overridden by explicit keys;
    validated by :class:`EvoSearchConfig` (errors name ``search.params.<field>``)."""

    preset: Any = None
    evolution_schedule: Any = None
    population_size_schedule: Any = None
    elite_size: Any = None
    tournament_ratio: Any = None
    mutation_rate: Any = None
    latent_mutation: Any = None
    modality: Any = None
    route_by_modality: Any = None
    verifier_modalities: Any = None

    @model_validator(mode="after")
    def _valid(self) -> "EvoSearchParams":
        EvoSearchConfig.from_params(self.model_dump(exclude_none=True))
        return self


class EvoSearch(SearchMethod):
    """EvoSearch as a plan: event g of a prompt is generation g (see the module docstring)."""

    name = "evosearch"
    Params = EvoSearchParams

    def __init__(self, params: Mapping[str, Any] | None = None):
        super().__init__(params)
        self.cfg = EvoSearchConfig.from_params(self.params.model_dump(exclude_none=True))
        self.router = Router(self.cfg.modality, self.cfg.route_by_modality, self.cfg.verifier_modalities)

    @classmethod
    def from_evo_config(cls, cfg: EvoSearchConfig) -> "EvoSearch":
        d = {k: v for k, v in cfg.to_dict().items() if v is not None}
        return cls(d)

    @property
    def n_events(self) -> int:
        return self.cfg.n_generations

    def capture_steps(self, event: int) -> list[int]:
        return self.cfg.capture_steps(event)

    def check_generator(self, num_steps: int) -> None:
        self.cfg.check_steps(num_steps)

    def describe(self) -> dict[str, Any]:
        return dict(self.cfg.to_dict(), method=self.name, n_events=self.n_events, n_generations=self.n_events)

    def budget(self) -> tuple[int | None, str]:
        pops = list(self.cfg.population_size_schedule)
        return int(sum(pops)), f"EvoSearch population schedule {pops}"

    def label(self) -> str:
        return "EvoSearch"

    @staticmethod
    def population(view: PromptView, generation: int) -> list[str]:
        """Candidate ids of the population of ``generation``: elites carried into it + its new candidates."""
        new = view.made_at(generation)
        if generation == 0:
            return new
        return list(view.plans[generation].info["elites"]) + new

    def plan(self, event: int, view: PromptView) -> EventPlan:
        cfg = self.cfg
        pid = view.prompt_id
        if event == 0:
            seeds = candidate_seeds(view.run_seed, pid, cfg.population_size_schedule[0])
            return EventPlan(pid, 0, [CandidatePlan(seed=int(s)) for s in seeds])
        pool = self.population(view, event - 1)
        agg = view.aggregates()
        eligible = [c for c in pool if c in agg]
        if len(eligible) < len(pool):
            log.warning("%s g%d: %d of %d pool members lack rewards and cannot be parents", pid, event,
                        len(pool) - len(eligible), len(pool))
        gp = plan_generation(cfg, pid, event, eligible, [agg[c] for c in eligible], view.run_seed)
        mutation = cfg.mutation()
        info = gp.to_dict()
        if cfg.route_by_modality:  # one modality per child, from its parent's video-/audio-side rewards
            mods = self.router.for_parents(view, gp.parents)
            kids = [CandidatePlan(seed=int(s), parent=p, step=gp.step, mutation=dict(mutation, modality=m))
                    for p, s, m in zip(gp.parents, gp.mutation_seeds, mods)]
            info["modalities"] = mods
        else:
            kids = [CandidatePlan(seed=int(s), parent=p, step=gp.step, mutation=mutation)
                    for p, s in zip(gp.parents, gp.mutation_seeds)]
        log.info("%s g%d: elites %s, parents %s", pid, event, gp.elites, gp.parents)
        return EventPlan(pid, event, kids, info=info)
