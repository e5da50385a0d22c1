"""The SearchMethod protocol: a search method only *plans*; one engine generates, scores and selects.

A search method turns a compute budget into candidates, one scoring event at a time. For every
prompt it declares ``n_events`` scoring events; for each event it returns an :class:`EventPlan`:
the candidates to create, each either

* fresh: a seed for new initial noise, denoised over the whole schedule, or
* a branch: a stored ``parent`` candidate's latent at ``step``, changed by a ``mutation``
  (see :mod:`avits_core.search.mutation`), then denoised to the end,

given a :class:`PromptView` of what the store already holds for the prompt (its candidates so far,
the plans of its earlier events, and - on demand - the aggregates of its candidates under the run's
selection spec after the previous event). Everything else exists once, in
:mod:`avits_core.search.engine`: making the start latents, denoising, keeping the latents later
events branch from, decoding, candidate ids and lineage, NFE accounting, the online aggregate that
parents are ranked by. The same engine runs over the run's tables (``avits_core.runner``, the
``its`` flow) and over memory (:func:`avits_core.search.engine.run_in_memory`: tests and
``bench/headroom.py``).

Rules every method follows (the engine relies on them):
- event 0 is planned from the config alone (no rewards): it is not stored; the plan of an event
  >= 1 may read rewards and is stored once (``plans/<prompt_id>/e<event>.json`` in a run folder), so
  a resumed run continues the lineage it started;
- plans are deterministic functions of (params, run seed, prompt id, view): draw randomness from
  :func:`avits_core.seeding.derive_seed` with a salt, never from global state;
- a candidate of event ``e`` has ``generation = e`` and id ``<prompt_id>_g<e>_c<i>``; its
  ``event_seq`` is ``prompt_index * n_events + e``.

To add a method: write one file with a subclass of :class:`SearchMethod` (a ``name``, a pydantic
``Params`` model, ``n_events`` and ``plan``), then add one line to ``SEARCH_METHODS`` in
``avits_core/registry.py`` or an entry point in the group ``avits.search`` of your package.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from avits_core.errors import ConfigError

log = logging.getLogger(__name__)


def candidate_id(prompt_id: str, generation: int, index: int) -> str:
    """Stable, sortable id of candidate ``index`` of ``generation`` for ``prompt_id``.

    Zero padding makes the lexicographic order equal to (generation, index) order, so the baseline
    (the first candidate of each prompt) is the smallest id of its prompt.
    """
    return f"{prompt_id}_g{generation:02d}_c{index:03d}"


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class CandidatePlan:
    """One candidate to create: fresh noise from ``seed`` (``parent`` None, ``step`` 0), or the
    latent of ``parent`` at ``step`` changed by ``mutation`` with noise drawn from ``seed``.

    ``mutation``: ``{"rule": "vp" | "additive", "beta": float, "modality": "joint" | "video" |
    "audio"}`` (a step-0 parent is always mixed with the variance-preserving noise rule), or
    ``{"rule": "continue"}``: the parent's latent at ``step`` unchanged (a particle continued; with
    ``noise_scale`` > 0 the candidate's ``seed`` drives its stochastic transitions).

    Intermediate-step fields (optional; the defaults give the behaviour above):

    * ``stop``: None = denoise to the end (a *final* candidate). An integer ``step < stop <
      num_steps`` = denoise only to ``stop``, keep that latent, and decode the model's estimate of the
      clean sample from it: an *intermediate* candidate, scored like any other but never selected as
      an answer (later events continue it with ``{"rule": "continue"}``).
    * ``lookahead``: model evaluations of an intermediate candidate's clean estimate (1 =
      ``predict_x0``; L > 1 = L coarse ODE steps, :func:`avits_core.generators.base.lookahead_x0`).
    * ``noise_scale``: 0 = the ODE sampler; in (0, 1] = the stochastic sampler with the same
      marginals (:func:`avits_core.generators.base.denoise_sde`), noise drawn per (seed, step).
    * ``noise_modality``: which track's transitions are stochastic ("joint", "video", "audio"; the
      other track follows the ODE).
    """

    seed: int
    parent: str | None = None
    step: int = 0
    mutation: Mapping[str, Any] | None = None
    stop: int | None = None
    lookahead: int = 1
    noise_scale: float = 0.0
    noise_modality: str = "joint"

    def __post_init__(self) -> None:
        if (self.parent is None) != (self.mutation is None):
            raise ValueError("a branch needs both a parent and a mutation; a fresh candidate has neither")
        if self.parent is None and self.step != 0:
            raise ValueError(f"a fresh candidate starts at step 0, not {self.step}")
        if self.stop is not None and int(self.stop) <= int(self.step):
            raise ValueError(f"an intermediate candidate stops after its start step: stop={self.stop}, step={self.step}")
        if int(self.lookahead) < 1:
            raise ValueError(f"lookahead must be >= 1, got {self.lookahead}")
        if not 0.0 <= float(self.noise_scale) <= 1.0:
            raise ValueError(f"noise_scale must be in [0, 1], got {self.noise_scale}")
        if self.noise_modality not in ("joint", "video", "audio"):
            raise ValueError(f"noise_modality must be joint, video or audio, got {self.noise_modality!r}")

    @property
    def intermediate(self) -> bool:
        return self.stop is not None

    @property
    def fresh(self) -> bool:
        return self.parent is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mutation"] = dict(self.mutation) if self.mutation is not None else None
        for k, default in (("stop", None), ("lookahead", 1), ("noise_scale", 0.0),
                           ("noise_modality", "joint")):  # written only when used
            if d[k] == default:
                d.pop(k)
        return d


@dataclass
class EventPlan:
    """What one scoring event of one prompt creates, plus what the method wants to remember about
    it (``info``: JSON-able, e.g. EvoSearch's pool, elites and tournament size)."""

    prompt_id: str
    event: int
    candidates: list[CandidatePlan]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, "event": self.event,
                "candidates": [c.to_dict() for c in self.candidates], "info": self.info}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EventPlan":
        return cls(prompt_id=d["prompt_id"], event=int(d["event"]),
                   candidates=[CandidatePlan(**c) for c in d["candidates"]], info=dict(d.get("info") or {}))


@dataclass(frozen=True)
class CandidateRecord:
    """What a search method sees of a stored candidate."""

    candidate_id: str
    prompt_id: str
    generation: int
    step: int
    parent_ids: tuple[str, ...]
    seed: int
    nfe: int
    nfe_own: int
    batch_index: int
    kind: str = "final"  # "final" (denoised to the end) or "intermediate" (a clean estimate at x0_step)
    x0_step: int | None = None  # intermediate candidates: the step whose clean estimate was decoded


class PromptView:
    """A prompt's state as a method plans its event ``event``.

    ``candidates``: the prompt's stored candidates (candidate-id order); ``plans``: the stored plans of
    its events >= 1 before ``event``; ``aggregates()``: candidate id -> aggregate under the run's
    selection spec after event ``event - 1`` (eligible candidates only: one lacking a reward of some
    guided verifier is absent). The aggregates are computed on demand, so a method that never asks
    (Best-of-N) never waits for scoring.
    """

    def __init__(self, prompt_id: str, event: int, run_seed: int, num_steps: int,
                 candidates: Sequence[CandidateRecord], plans: Mapping[int, EventPlan],
                 aggregates: Callable[[], dict[str, float]]):
        self.prompt_id = prompt_id
        self.event = event
        self.run_seed = run_seed
        self.num_steps = num_steps
        self.candidates = list(candidates)
        self.plans = dict(plans)
        self._aggregates = aggregates
        self._agg_cache: dict[str, float] | None = None

    def aggregates(self) -> dict[str, float]:
        if self._agg_cache is None:
            self._agg_cache = dict(self._aggregates())
        return self._agg_cache

    def made_at(self, event: int) -> list[str]:
        """Ids of the candidates created by ``event`` (candidate-id order)."""
        return [c.candidate_id for c in self.candidates if c.generation == event]

    def record(self, candidate_id: str) -> CandidateRecord:
        """The stored record of ``candidate_id`` (KeyError when unknown)."""
        for c in self.candidates:
            if c.candidate_id == candidate_id:
                return c
        raise KeyError(candidate_id)


# --------------------------------------------------------------------------- the protocol


class MethodParams(BaseModel):
    """Base of a method's parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def strictly_increasing(field: str, steps: list[int]) -> list[int]:
    """``steps`` unchanged when strictly increasing, else a ConfigError naming ``search.params.<field>[i]``."""
    for i in range(1, len(steps)):
        if steps[i] <= steps[i - 1]:
            raise ConfigError(f"search.params.{field}[{i}]: steps must be strictly increasing, got {steps}")
    return steps


def _params_error(exc: ValidationError) -> ConfigError:
    """The first error of a pydantic validation as a ConfigError naming ``search.params.<field>``
    (a ConfigError raised inside a validator is passed on unchanged)."""
    for err in exc.errors():
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, ConfigError):
            return inner
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    where = f"search.params.{loc}" if loc else "search.params"
    if err.get("type") == "extra_forbidden":
        return ConfigError(f"{where}: unknown parameter")
    return ConfigError(f"{where}: {err.get('msg')} (got {err.get('input')!r})")


class SearchMethod:
    """A search method: its parameters, its number of scoring events per prompt, and one plan per
    event. Subclasses set ``name`` and ``Params`` and implement :meth:`plan`; override
    :meth:`n_events`, :meth:`capture_steps` and :meth:`check_generator` when the defaults (one event,
    no kept latents, no check) do not fit."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams

    def __init__(self, params: Mapping[str, Any] | None = None):
        if params is not None and not isinstance(params, Mapping):
            raise ConfigError(f"search.params: must be a mapping, got {type(params).__name__}")
        try:
            self.params = self.Params(**dict(params or {}))
        except ValidationError as exc:
            raise _params_error(exc) from None

    @classmethod
    def from_config(cls, search: Any) -> "SearchMethod":
        """From a config's ``search`` block: ``params``, plus ``search.n`` when the method takes an
        ``n`` that ``params`` does not set (Best-of-N's budget, ``--set search.n=4``)."""
        params = dict(search.params or {})
        if "n" in cls.Params.model_fields and "n" not in params:
            params["n"] = search.n
        return cls(params)

    # -- what a method declares ------------------------------------------------------------------
    @property
    def n_events(self) -> int:
        """Scoring events per prompt."""
        return 1

    def capture_steps(self, event: int) -> list[int]:
        """Steps at which candidates of ``event`` keep their latents (later events branch there)."""
        return []

    def check_generator(self, num_steps: int) -> None:
        """Raise ConfigError when the parameters do not fit a generator of ``num_steps`` steps."""

    def plan(self, event: int, view: PromptView) -> EventPlan:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The resolved parameters (recorded in run.json under ``search``)."""
        return {"method": self.name, "n_events": self.n_events, **self.params.model_dump(mode="json")}

    def budget(self) -> tuple[int | None, str]:
        """(candidates created per prompt, the setting that fixes it, for messages), read by the
        pre-flight budget limits; ``(None, ...)`` when the method does not know it in advance (the
        check then counts ``search.n``). Default: the ``n`` parameter when the method has one."""
        n = getattr(self.params, "n", None)
        return (int(n), f"search.n={n}") if isinstance(n, int) else (None, f"search {self.name}")

    def label(self) -> str:
        """A short name for one-line summaries (the CLI's start line): the registry name by default."""
        return self.name


def get_search(name: str, params: Mapping[str, Any] | None = None) -> SearchMethod:
    """The search method registered as ``name`` (built-in or entry point ``avits.search``)."""
    from avits_core.registry import SEARCH_METHODS

    return SEARCH_METHODS.get_class(name)(params)


def search_from_config(search: Any) -> SearchMethod:
    """The method of a config's ``search`` block (``method``, ``n``, ``params``)."""
    from avits_core.registry import SEARCH_METHODS

    return SEARCH_METHODS.get_class(search.method).from_config(search)


# --------------------------------------------------------------------------- helpers of step-wise methods
# (SMC, beam search, pruned Best-of-N: methods that score clean estimates at intermediate steps)


def check_step_list(field_name: str, steps: Sequence[int], num_steps: int) -> None:
    """ConfigError naming ``field_name`` unless ``steps`` is strictly increasing within [1, num_steps - 1]
    (an intermediate step must leave noise to denoise and come after the pure-noise step 0)."""
    for i, k in enumerate(steps):
        if not 1 <= int(k) <= num_steps - 1:
            raise ConfigError(f"{field_name}[{i}]: step {k} is outside [1, {num_steps - 1}] for a generator with "
                              f"num_steps={num_steps} (an intermediate step lies strictly between noise and data)")
        if i and int(k) <= int(steps[i - 1]):
            raise ConfigError(f"{field_name}[{i}]: steps must be strictly increasing, got {list(steps)}")


def check_nfe_budget(planned: int, budget: int | None, field: str, what: str) -> None:
    """ConfigError naming ``search.params.<field>`` when ``planned`` denoiser steps per prompt (``what``
    needs them) exceed ``search.params.nfe_budget`` (None: no cap)."""
    if budget is not None and planned > budget:
        raise ConfigError(f"search.params.{field}: {what} need {planned} denoiser steps per prompt, more than "
                          f"search.params.nfe_budget={budget}")


def lookahead_cost(lookahead: int, step: int, num_steps: int) -> int:
    """Model evaluations of a clean estimate with ``lookahead`` at ``step`` (capped by the steps left)."""
    return min(int(lookahead), int(num_steps) - int(step))


def rank_by_aggregate(ids: Sequence[str], aggregates: Mapping[str, float]) -> list[str]:
    """``ids`` best first: eligible ones (with an aggregate) by descending aggregate, exact ties to the
    lowest id, then the ineligible ones (no aggregate: a verifier failed on them) in id order."""
    ok = sorted((c for c in ids if c in aggregates), key=lambda c: (-aggregates[c], c))
    return ok + sorted(c for c in ids if c not in aggregates)
