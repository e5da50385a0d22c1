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

from avits_core.errors import ConfigError, EvoSearchError  # EvoSearchError: defined there, re-exported here
from avits_core.generators.base import JointGenerator, Latents
from avits_core.prompts import Prompt
from avits_core.search.base import CandidatePlan, EventPlan, MethodParams, PromptView, SearchMethod
from avits_core.search.mutation import (  # noqa: F401 (the operators, re-exported for callers of this module)
    LATENT_MUTATIONS,
    MODALITIES,
    apply_mutation,
    mutate_latent_additive,
    mutate_latent_vp,
    mutate_noise,
    split_latent,
)
from avits_core.search.routing import Router, check_verifier_modalities
from avits_core.seeding import candidate_seeds, derive_seed

log = logging.getLogger(__name__)


#: Named parameter sets. ``paper``: the EvoSearch paper's setting for a 30-step sampler (5 + 3 + 3
#: new clips per prompt; NFE 150 + 90 + 3 * (1 + 20) = 303, about a Best-of-10). ``demo``: a cheap
#: setting for SynthAV's 20-step demo: 4 + 3 + 3 new clips per prompt, NFE 80 + 60 + 3 * (1 + 14) =
#: 185, about a Best-of-9 (mutation rate 0.3 chosen on SynthAV: children keep their parent's scene
#: mode about 80 % of the time at step 0, against about 60 % at 0.5).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(
        evolution_schedule=[0, 10],
        population_size_schedule=[5, 5, 5],
        elite_size=2,
        tournament_ratio=0.5,
        mutation_rate=0.2,
    ),
    "demo": dict(
        evolution_schedule=[0, 6],
        population_size_schedule=[4, 4, 4],
        elite_size=1,
        tournament_ratio=0.5,
        mutation_rate=0.3,
    ),
}


def _field(name: str) -> str:
    return f"search.params.{name}"


def _as_int(name: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or (isinstance(v, float) and not v.is_integer()):
        raise ConfigError(f"{name}: must be an integer, got {v!r}")
    v = int(v)
    if v < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {v}")
    return v


def _as_float(name: str, v: Any, lo: float, hi: float, lo_open: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name}: must be a number, got {v!r}")
    v = float(v)
    ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        raise ConfigError(f"{name}: must be in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")
    return v


def _as_int_list(name: str, v: Any, minimum: int) -> tuple[int, ...]:
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
        raise ConfigError(f"{name}: must be a list of integers, got {v!r}")
    return tuple(_as_int(f"{name}[{i}]", x, minimum) for i, x in enumerate(v))


@dataclass(frozen=True)
class EvoSearchConfig:
    """Validated EvoSearch parameters (see the module docstring for their meaning).

    Build it with :meth:`from_params` from the config's ``search.params`` (a ``preset`` plus
    overrides); the defaults are the ``paper`` preset.
    """

    evolution_schedule: tuple[int, ...] = (0, 10)
    population_size_schedule: tuple[int, ...] = (5, 5, 5)
    elite_size: int = 2
    tournament_ratio: float = 0.5
    mutation_rate: float = 0.2
    latent_mutation: str = "vp"
    modality: str = "joint"
    route_by_modality: bool = False
    verifier_modalities: Any = None
    preset: str | None = None

    def __post_init__(self) -> None:
        sched = _as_int_list(_field("evolution_schedule"), self.evolution_schedule, 0)
        pops = _as_int_list(_field("population_size_schedule"), self.population_size_schedule, 1)
        object.__setattr__(self, "evolution_schedule", sched)
        object.__setattr__(self, "population_size_schedule", pops)
        elite = _as_int(_field("elite_size"), self.elite_size, 0)
        object.__setattr__(self, "elite_size", elite)
        object.__setattr__(self, "tournament_ratio",
                           _as_float(_field("tournament_ratio"), self.tournament_ratio, 0.0, 1.0, lo_open=True))
        object.__setattr__(self, "mutation_rate",
                           _as_float(_field("mutation_rate"), self.mutation_rate, 0.0, 1.0, lo_open=False))
        if self.latent_mutation not in LATENT_MUTATIONS:
            raise ConfigError(f"{_field('latent_mutation')}: must be one of {list(LATENT_MUTATIONS)}, "
                              f"got {self.latent_mutation!r}")
        if self.modality not in MODALITIES:
            raise ConfigError(f"{_field('modality')}: must be one of {list(MODALITIES)}, got {self.modality!r}")
        if not isinstance(self.route_by_modality, bool):
            raise ConfigError(f"{_field('route_by_modality')}: must be true or false, got {self.route_by_modality!r}")
        check_verifier_modalities(_field("verifier_modalities"), self.verifier_modalities)
        if not pops:
            raise ConfigError(f"{_field('population_size_schedule')}: needs at least one population size")
        if len(pops) != len(sched) + 1:
            raise ConfigError(
                f"{_field('population_size_schedule')}: has {len(pops)} entries but evolution_schedule has "
                f"{len(sched)}; one population per generation: generation 0 plus one per evolution step "
                f"(expected {len(sched) + 1})"
            )
        for i in range(1, len(sched)):
            if sched[i] < sched[i - 1]:
                raise ConfigError(
                    f"{_field('evolution_schedule')}[{i}]: step {sched[i]} comes before step {sched[i - 1]}; "
                    "the schedule must be non-decreasing (a candidate has no latent before its branch step)"
                )
        if len(pops) > 1:
            if pops[0] < elite:
                raise ConfigError(f"{_field('population_size_schedule')}[0]: {pops[0]} candidates cannot fill "
                                  f"elite_size={elite}")
            for g in range(1, len(pops)):
                if pops[g] <= elite:
                    raise ConfigError(
                        f"{_field('population_size_schedule')}[{g}]: population {pops[g]} is not larger than "
                        f"elite_size={elite}, so generation {g} would have no child"
                    )

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> "EvoSearchConfig":
        """From ``search.params``: optional ``preset`` ("paper" or "demo") overridden by explicit keys.

        Unknown keys and bad values raise ConfigError naming ``search.params.<field>``.
        """
        if params is not None and not isinstance(params, Mapping):
            raise ConfigError(f"search.params: must be a mapping, got {type(params).__name__}")
        params = dict(params or {})
        preset = params.pop("preset", None)
        base: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"{_field('preset')}: unknown preset {preset!r}; known presets: {sorted(PRESETS)}")
            base = dict(PRESETS[preset])
        names = [f for f in cls.__dataclass_fields__ if f != "preset"]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ConfigError(f"{_field(unknown[0])}: unknown EvoSearch parameter; accepted: {['preset', *names]}")
        base.update(params)
        return cls(**base, preset=preset)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["route_by_modality"]:  # the routing keys appear only when routing is on
            d.pop("route_by_modality")
            if d["verifier_modalities"] is None:
                d.pop("verifier_modalities")
        d["evolution_schedule"] = list(self.evolution_schedule)
        d["population_size_schedule"] = list(self.population_size_schedule)
        return d

    # -- derived ---------------------------------------------------------------------------------
    @property
    def n_generations(self) -> int:
        return len(self.population_size_schedule)

    def branch_step(self, generation: int) -> int:
        """The step at which candidates of ``generation`` start (0 for generation 0)."""
        self._check_generation(generation)
        return 0 if generation == 0 else self.evolution_schedule[generation - 1]

    def capture_steps(self, generation: int) -> list[int]:
        """Steps at which a candidate of ``generation`` must keep its latent: the branch steps of
        every later generation (they may pick it, or its carried copy, as a parent)."""
        self._check_generation(generation)
        return sorted(set(self.evolution_schedule[generation:]))

    def check_steps(self, num_steps: int) -> None:
        """Raise ConfigError when a schedule step is not in [0, num_steps - 1] for this generator."""
        for i, k in enumerate(self.evolution_schedule):
            if k >= num_steps:
                raise ConfigError(
                    f"{_field('evolution_schedule')}[{i}]: step {k} is beyond the generator's schedule; with "
                    f"num_steps={num_steps} an evolution step must be in [0, {num_steps - 1}] (at step "
                    f"{num_steps} the latent is clean and there is no noise left to mutate)"
                )

    def mutation(self) -> dict[str, Any]:
        """The mutation of a child, as the engine applies it (:func:`~avits_core.search.mutation.apply_mutation`)."""
        return {"rule": self.latent_mutation, "beta": self.mutation_rate, "modality": self.modality}

    def _check_generation(self, g: int) -> None:
        if not 0 <= g < self.n_generations:
            raise ValueError(f"generation {g} out of range [0, {self.n_generations - 1}]")


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
