"""EvoSearch's parameters: the named presets and :class:`EvoSearchConfig`, which validates
``search.params`` (errors name ``search.params.<field>``) and derives the schedule (branch and capture
steps of each generation). Their meaning is in :mod:`avits_core.search.evosearch`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from avits_core.errors import ConfigError
from avits_core.search.mutation import LATENT_MUTATIONS, MODALITIES
from avits_core.search.routing import check_verifier_modalities

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
    """Validated EvoSearch parameters (their meaning: :mod:`avits_core.search.evosearch`).

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
