"""The search engine over memory: no store, no Prefect (tests, ``bench/headroom.py``).

:func:`run_in_memory` is the loop the ``its`` flow runs, with clips and latents kept in memory and
the clips scored directly (the pipeline scores the stored mp4 files). For each prompt in order,
for each event in order: plan (:meth:`SearchState.plan_for`), generate (:func:`generate_event`),
score with every verifier, then rank the prompt's candidates with the online aggregate. The
answer of a prompt is its best candidate under the aggregate after its last event - the rule the
replay selection applies. :func:`best_of_n` and :func:`evosearch` are that loop with a method
and the result types the tests and benchmarks read.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from avits_core.aggregate.base import Aggregator
from avits_core.errors import EvoSearchError
from avits_core.generators.base import JointGenerator, Latents
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.search.base import CandidateRecord, EventPlan, SearchMethod
from avits_core.search.best_of_n import BestOfN
from avits_core.search.engine import OnlineSelection, SearchState, best_of
from avits_core.search.generation import GeneratedEvent, generate_event, iter_event
from avits_core.search.evosearch import EvoSearch, EvoSearchConfig, GenerationPlan
from avits_core.verifiers.base import Verifier

log = logging.getLogger(__name__)


class MemoryState(SearchState):
    """Search state whose latents and plans live in memory."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.latents: dict[str, dict[int, Latents]] = {}

    def keep(self, ge: GeneratedEvent) -> None:
        for r, lat in zip(ge.records, ge.latents):
            self.latents[r.candidate_id] = lat
        self.add_records(ge.records)

    def load_latent(self, cid: str, step: int) -> Latents:
        kept = self.latents.get(cid, {})
        if step not in kept:
            raise EvoSearchError(f"candidate {cid} kept no latent at step {step} (kept steps: {sorted(kept)})")
        return kept[step]


@dataclass
class PromptResult:
    """One prompt of an in-memory search. ``scores``: oriented (higher is better) per candidate and
    verifier, NaN where the verifier failed; ``aggregates``: after each event (eligible candidates)."""

    prompt_id: str
    records: list[CandidateRecord]
    clips: dict[str, AVClip] = field(repr=False)
    scores: dict[str, dict[str, float]]
    aggregates: list[dict[str, float]]
    plans: list[EventPlan]
    selected: str | None

    @property
    def nfe_spent(self) -> int:
        return int(sum(r.nfe_own for r in self.records))


def run_in_memory(
    generator: JointGenerator, verifiers: Sequence[Verifier], aggregator: Aggregator, prompts: Sequence[Prompt],
    method: SearchMethod, run_seed: int = 0, *, keep_clips: bool = True, chunk_size: int | None = None,
) -> list[PromptResult]:
    """Run ``method`` over ``prompts`` with every verifier guiding (see the module docstring).

    ``keep_clips`` (default): every clip is kept in the result (``PromptResult.clips``) and each
    verifier scores an event's clips as one batch. ``keep_clips=False``: the engine's chunks
    (``chunk_size``, default the generator's batch size, see
    :func:`avits_core.search.generation.chunk_size_of`) are scored as they come and their clips
    dropped, so memory holds one chunk of clips whatever N is (``clips`` is then empty; the
    scores are the same for verifiers that score clip by clip). Kept latents stay in memory
    until the prompt is done: branching methods need them."""
    method.check_generator(generator.num_steps)
    names = [v.name for v in verifiers]
    hib = {v.name: bool(v.higher_is_better) for v in verifiers}
    state = MemoryState(method, [p.prompt_id for p in prompts], run_seed,
                        lambda: OnlineSelection(aggregator, names, hib))
    out = []
    for p in prompts:
        scores: dict[str, dict[str, float]] = {}
        clips: dict[str, AVClip] = {}
        aggs: list[dict[str, float]] = []
        plans: list[EventPlan] = []
        for e in range(method.n_events):
            plan = state.plan_for(p.prompt_id, e, generator.num_steps)
            plans.append(plan)
            if keep_clips:
                parts: Iterable[GeneratedEvent] = [generate_event(generator, p, plan, method.capture_steps(e),
                                                                  state.load_latent, chunk_size=chunk_size)]
            else:
                parts = iter_event(generator, p, plan, method.capture_steps(e), state.load_latent,
                                   chunk_size=chunk_size)
            for ge in parts:
                _score_part(state, ge, p, verifiers, scores)
                if keep_clips:
                    for r, c in zip(ge.records, ge.clips):
                        clips[r.candidate_id] = c
                del ge
            aggs.append(state.aggregates_after(p.prompt_id, e))
        for r in state.records.get(p.prompt_id, []):  # kept latents are for the search, not the result
            state.latents.pop(r.candidate_id, None)
        # the answer: the best *final* candidate (intermediate clean estimates are never answers)
        final = state.final_aggregates_after(p.prompt_id, method.n_events - 1)
        out.append(PromptResult(p.prompt_id, list(state.records.get(p.prompt_id, [])), clips, scores, aggs, plans,
                                best_of(final)))
        log.debug("%s: selected %s", p.prompt_id, out[-1].selected)
    return out


def _score_part(state: MemoryState, ge: GeneratedEvent, p: Prompt, verifiers: Sequence[Verifier],
                scores: dict[str, dict[str, float]]) -> None:
    """Keep the latents of an event (or of a chunk of it) and score its clips with every verifier."""
    state.keep(ge)
    for v in verifiers:
        res = v.score(ge.clips, [p] * len(ge.clips))
        for r, x, err in zip(ge.records, res.values, res.errors):
            value = None if err else float(x)
            state.add_reward(r.candidate_id, v.name, value)
            oriented = float("nan") if value is None else (value if v.higher_is_better else -value)
            scores.setdefault(r.candidate_id, {})[v.name] = oriented
            if err:
                log.warning("%s failed on %s: %s", v.name, r.candidate_id, err)


# --------------------------------------------------------------------------- Best-of-N


@dataclass
class BestOfNResult:
    prompt_id: str
    seeds: list[int]
    scores: dict[str, np.ndarray]
    aggregate: np.ndarray
    selected: int
    nfe: np.ndarray
    clips: list[AVClip]


def best_of_n(
    generator: JointGenerator, verifiers: Sequence[Verifier], aggregator: Aggregator, prompts: Sequence[Prompt],
    n: int, run_seed: int = 0,
) -> list[BestOfNResult]:
    """Best-of-N in memory: one scoring event per prompt. A verifier failing on a candidate raises
    RuntimeError (the pipeline records an error row instead)."""
    if n < 1:
        raise ValueError(f"Best-of-N needs n >= 1, got {n}")
    out = []
    for r in run_in_memory(generator, verifiers, aggregator, prompts, BestOfN({"n": n}), run_seed):
        ids = [c.candidate_id for c in r.records]
        for v in verifiers:
            bad = [i for i, c in enumerate(ids) if math.isnan(r.scores[c][v.name])]
            if bad:
                raise RuntimeError(f"{v.name} failed on candidate {bad[0]} of {r.prompt_id}")
        agg = np.array([r.aggregates[-1][c] for c in ids])
        out.append(BestOfNResult(
            prompt_id=r.prompt_id, seeds=[c.seed for c in r.records],
            scores={v.name: np.array([r.scores[c][v.name] for c in ids]) for v in verifiers},
            aggregate=agg, selected=ids.index(r.selected), nfe=np.array([c.nfe for c in r.records], dtype=np.int64),
            clips=[r.clips[c] for c in ids]))
    return out


# --------------------------------------------------------------------------- EvoSearch


@dataclass
class EvoCandidate:
    """One candidate of an in-memory EvoSearch (scores are oriented: higher is better)."""

    candidate_id: str
    prompt_id: str
    generation: int
    step: int
    parent_ids: list[str]
    seed: int
    nfe: int
    nfe_own: int
    batch_index: int
    scores: dict[str, float]
    clip: AVClip = field(repr=False)


@dataclass
class EvoSearchResult:
    prompt_id: str
    candidates: list[EvoCandidate]  # candidate-id order
    aggregate: np.ndarray  # final aggregate per candidate, same order (-inf: not eligible)
    selected: str
    nfe_spent: int
    plans: list[GenerationPlan]
    populations: list[list[str]]  # population of each generation (elites carried + new candidates)
    best_per_generation: list[float]  # best aggregate among candidates up to each generation, at that time

    @property
    def by_id(self) -> dict[str, EvoCandidate]:
        return {c.candidate_id: c for c in self.candidates}


def evosearch(
    generator: JointGenerator, verifiers: Sequence[Verifier], aggregator: Aggregator, prompts: Sequence[Prompt],
    cfg: EvoSearchConfig, run_seed: int = 0,
) -> list[EvoSearchResult]:
    """EvoSearch in memory. A candidate on which a verifier fails is handled as the selection does:
    left out of the event, of the pools and of the selection (aggregate -inf)."""
    method = EvoSearch.from_evo_config(cfg)
    out = []
    for r in run_in_memory(generator, verifiers, aggregator, prompts, method, run_seed):
        if r.selected is None:
            raise EvoSearchError(f"{r.prompt_id}: no candidate has a complete set of rewards")
        cands = [EvoCandidate(c.candidate_id, c.prompt_id, c.generation, c.step, list(c.parent_ids), c.seed, c.nfe,
                              c.nfe_own, c.batch_index, r.scores[c.candidate_id], r.clips[c.candidate_id])
                 for c in r.records]
        final = r.aggregates[-1]
        plans = [GenerationPlan.from_dict(p.info) for p in r.plans[1:]]
        pops = [[c.candidate_id for c in r.records if c.generation == 0]]
        for g, gp in enumerate(plans, start=1):
            pops.append(list(gp.elites) + [c.candidate_id for c in r.records if c.generation == g])
        out.append(EvoSearchResult(
            prompt_id=r.prompt_id, candidates=cands,
            aggregate=np.array([final.get(c.candidate_id, -np.inf) for c in cands]),
            selected=r.selected, nfe_spent=r.nfe_spent, plans=plans, populations=pops,
            best_per_generation=[max(a.values(), default=-np.inf) for a in r.aggregates]))
    return out
