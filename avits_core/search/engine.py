"""The one search engine: plans in, candidates out, for every search method and every storage.

Three pieces, each written once:

* :func:`generate_event` - the generation step. Given an :class:`~avits_core.search.base.EventPlan`
  it makes the start latents (fresh noise, or a parent's kept latent changed by its mutation),
  denoises them to the end while keeping the latents at the method's capture steps, decodes, and
  returns the candidates' records (id, generation, branch step, parents, seed, NFE). NFE accounting:
  a candidate's ``nfe`` is what it costs to make this one sample alone (its parent's NFE when the
  parent's latent was at the branch step, plus its own); ``nfe_own`` is the part it spent itself, so
  summing ``nfe_own`` over a prompt gives the compute the search really spent.
* :class:`OnlineSelection` - the run's aggregator fed scoring event by scoring event, exactly as
  :func:`avits_core.selection.replay` feeds it (eligible candidates only, oriented values, in
  ``event_seq`` order); methods rank a prompt's candidates by its aggregates. O(event) per event.
* :class:`SearchState` - what the engine knows of a run (candidates per prompt, plans, the guided
  rewards, one online aggregate per ARW shard: the whole run by default, or one per shard of prompts
  when ``arw_shards`` K > 1, shard of a prompt = its index mod K, as in the replay) with the
  storage-specific parts as hooks (:meth:`SearchState.load_latent`,
  :meth:`SearchState.save_plan`). The store-backed state lives in ``avits_core.runner.state``
  (one read of the tables per process, then kept current by the steps); the in-memory state in
  :mod:`avits_core.search.memory`.

Missing rewards: before the aggregates after an event are used, every candidate of every event up to
it must have a reward (ok or error) of every guided verifier, or :class:`EvoSearchError` says which
is missing (scoring has not run). A candidate with an error (or a NaN) is not eligible: it enters no
history and cannot be a parent - the selection's policy.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from avits_core.aggregate.base import Aggregator
from avits_core.errors import ConfigError, EvoSearchError
from avits_core.generators.base import JointGenerator, Latents, lookahead_x0
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.search.base import CandidateRecord, EventPlan, PromptView, SearchMethod, candidate_id
from avits_core.search.mutation import apply_mutation

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- generation step


def denoise_capture(
    generator: JointGenerator, lat: Latents, prompt: Prompt, capture: Sequence[int]
) -> tuple[Latents, dict[int, Latents]]:
    """Denoise ``lat`` to the last step, keeping a copy of the batch at every step of ``capture``
    that lies in [lat.step, num_steps). Returns (clean latents, {step: latents})."""
    S = generator.num_steps
    snaps: dict[int, Latents] = {}
    cur = lat
    for k in sorted({int(k) for k in capture if lat.step <= k < S}):
        if k > cur.step:
            cur = generator.denoise(cur, prompt, cur.step, k)
        snaps[k] = cur.select(range(len(cur)))
    if cur.step < S:
        cur = generator.denoise(cur, prompt, cur.step, S)
    return cur, snaps


@dataclass
class GeneratedEvent:
    """The new candidates of one event: records, clips and kept latents (one entry each, plan order)."""

    plan: EventPlan
    records: list[CandidateRecord]
    clips: list[AVClip]
    latents: list[dict[int, Latents]]  # per candidate: step -> its one-row latent
    wall_s: float  # generation wall time per candidate


def denoise_to(
    generator: JointGenerator, lat: Latents, prompt: Prompt, stop: int, capture: Sequence[int],
    noise_scale: float = 0.0, modality: str = "joint",
) -> tuple[Latents, dict[int, Latents]]:
    """Like :func:`denoise_capture` but to step ``stop`` and with the sampler of ``noise_scale``
    (0: the ODE; > 0: :func:`~avits_core.generators.base.denoise_sde`, whose noise depends on (row
    seed, step) only, so cutting the path at capture steps does not change it)."""
    from avits_core.generators.base import denoise_sde

    snaps: dict[int, Latents] = {}
    cur = lat
    for k in sorted({int(k) for k in capture if lat.step <= k < stop}):
        if k > cur.step:
            cur = denoise_sde(generator, cur, prompt, cur.step, k, noise_scale, modality)
        snaps[k] = cur.select(range(len(cur)))
    if cur.step < stop:
        cur = denoise_sde(generator, cur, prompt, cur.step, stop, noise_scale, modality)
    return cur, snaps


def _group_key(c: Any) -> tuple:
    key = ("fresh",) if c.fresh else ("branch", int(c.step), json.dumps(dict(c.mutation), sort_keys=True))
    if c.stop is None and c.lookahead == 1 and c.noise_scale == 0.0:
        return key  # the key of a plain candidate, as before the intermediate-step fields
    return key + (("stop", c.stop), ("lookahead", int(c.lookahead)), ("noise_scale", float(c.noise_scale)),
                  ("noise_modality", c.noise_modality))


def _check_stop(plan: EventPlan, num_steps: int) -> None:
    for i, c in enumerate(plan.candidates):
        if c.stop is not None and not int(c.step) < int(c.stop) < num_steps:
            raise EvoSearchError(f"{plan.prompt_id} event {plan.event} candidate {i}: an intermediate candidate "
                                 f"must stop at a step in ({c.step}, {num_steps}), got stop={c.stop}")


def generate_event(
    generator: JointGenerator, prompt: Prompt, plan: EventPlan, capture: Sequence[int],
    parent_latent: Callable[[str, int], Latents],
) -> GeneratedEvent:
    """Create the candidates of ``plan``. Candidates that start alike (fresh, or branched at one step
    with one mutation rule) are denoised as one batch; ``parent_latent(candidate_id, step)`` returns a
    stored parent's one-row latent at ``step``."""
    if not plan.candidates:
        raise EvoSearchError(f"{plan.prompt_id}: the plan of event {plan.event} creates no candidate")
    t0 = time.perf_counter()
    S = generator.num_steps
    _check_stop(plan, S)
    n = len(plan.candidates)
    kinds: list[tuple[str, int | None]] = [("final", None)] * n
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(plan.candidates):
        groups.setdefault(_group_key(c), []).append(i)
    clips: list[AVClip | None] = [None] * n
    latents: list[dict[int, Latents]] = [{} for _ in range(n)]
    nfe = np.zeros(n, dtype=np.int64)
    own = np.zeros(n, dtype=np.int64)
    for key, idx in groups.items():
        seeds = [int(plan.candidates[i].seed) for i in idx]
        if key[0] == "fresh":
            start = generator.init_noise(seeds)
            inherited = np.zeros(len(idx), dtype=np.int64)
        else:
            step = key[1]
            parents = Latents.cat([parent_latent(plan.candidates[i].parent, step) for i in idx])
            if parents.step != step:
                raise EvoSearchError(f"parents' latents are at step {parents.step}, the plan branches at {step}")
            inherited = parents.nfe.copy()
            mutation = plan.candidates[idx[0]].mutation
            if mutation.get("rule") == "continue":  # the parent's latent as it is (a particle continued)
                start = parents.with_(seeds=seeds)
            else:
                eps = generator.init_noise(seeds)
                start = apply_mutation(generator, parents, prompt, eps, mutation).with_(seeds=seeds)
        c0 = plan.candidates[idx[0]]
        if c0.stop is None and c0.noise_scale == 0.0:
            final, snaps = denoise_capture(generator, start, prompt, capture)
        else:
            target = S if c0.stop is None else int(c0.stop)
            final, snaps = denoise_to(generator, start, prompt, target, capture, float(c0.noise_scale),
                                      c0.noise_modality)
            if target < S:  # intermediate: keep the latent at stop, decode the clean estimate from it
                snaps[target] = final.select(range(len(final)))
                final = lookahead_x0(generator, final, prompt, int(c0.lookahead))
                for i in idx:
                    kinds[i] = ("intermediate", target)
        for j, clip in enumerate(generator.decode(final, prompt)):
            i = idx[j]
            clips[i] = clip
            latents[i] = {k: lat.select([j]) for k, lat in snaps.items()}
            nfe[i] = int(final.nfe[j])
            own[i] = int(final.nfe[j] - inherited[j])
    records = [
        CandidateRecord(
            candidate_id=candidate_id(plan.prompt_id, plan.event, i),
            prompt_id=plan.prompt_id,
            generation=plan.event,
            step=int(c.step),
            parent_ids=(c.parent,) if c.parent else (),
            seed=int(c.seed),
            nfe=int(nfe[i]),
            nfe_own=int(own[i]),
            batch_index=i,
            kind=kinds[i][0],
            x0_step=kinds[i][1],
        )
        for i, c in enumerate(plan.candidates)
    ]
    wall = (time.perf_counter() - t0) / n
    return GeneratedEvent(plan, records, clips, latents, wall)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- online aggregate


class OnlineSelection:
    """The aggregator fed event by event as :func:`avits_core.selection.replay` feeds it.

    ``feed`` takes one event's candidates with their raw guided rewards (None = error / missing);
    candidates with every reward present and finite are eligible: the aggregator observes their
    oriented values (candidate-id order), and they join their prompt's pool. ``aggregates(prompt)``
    ranks that pool with the aggregator's current state (ties: callers take the lowest id).
    """

    def __init__(self, aggregator: Aggregator, verifiers: Sequence[str], higher_is_better: Mapping[str, bool]):
        self.aggregator = aggregator
        self.verifiers = list(verifiers)
        self.sign = {v: 1.0 if higher_is_better.get(v, True) else -1.0 for v in self.verifiers}
        self._pool: dict[str, list[tuple[str, list[float]]]] = {}

    def feed(self, event_seq: int, prompt_id: str, generation: int,
             rows: Sequence[tuple[str, Mapping[str, float | None]]]) -> int:
        """Observe one event; returns the number of eligible candidates."""
        ok = []
        for cid, vals in sorted(rows, key=lambda r: r[0]):
            raw = [vals.get(v) for v in self.verifiers]
            if all(x is not None and math.isfinite(x) for x in raw):
                ok.append((cid, [x if self.sign[v] > 0 else -x for v, x in zip(self.verifiers, raw)]))
        if ok:
            cols = np.asarray([vec for _, vec in ok], dtype=np.float64)
            self.aggregator.observe({v: np.ascontiguousarray(cols[:, j]) for j, v in enumerate(self.verifiers)},
                                    event_seq=event_seq, prompt_id=prompt_id, generation=generation)
            self._pool.setdefault(prompt_id, []).extend(ok)
        return len(ok)

    def aggregates(self, prompt_id: str, among: set[str] | None = None) -> dict[str, float]:
        """Aggregates of the prompt's eligible candidates (``among``: only those ids, e.g. the final
        candidates, combined as a pool of their own - as the replay's selection does)."""
        pool = sorted(self._pool.get(prompt_id, []), key=lambda r: r[0])
        if among is not None:
            pool = [r for r in pool if r[0] in among]
        if not pool:
            return {}
        cols = np.asarray([vec for _, vec in pool], dtype=np.float64)
        a = self.aggregator.combine({v: np.ascontiguousarray(cols[:, j]) for j, v in enumerate(self.verifiers)})
        return {cid: float(x) for (cid, _), x in zip(pool, np.asarray(a).tolist())}


def final_ids(records: Sequence[CandidateRecord]) -> set[str]:
    """Ids of the fully denoised candidates among ``records`` (the only ones an answer may be)."""
    return {r.candidate_id for r in records if r.kind == "final"}


def best_of(aggregates: Mapping[str, float]) -> str | None:
    """The candidate with the highest aggregate; exact ties to the lowest candidate id."""
    if not aggregates:
        return None
    top = max(aggregates.values())
    return min(c for c, a in aggregates.items() if a == top)


# --------------------------------------------------------------------------- search state


class _Scope:
    """One online aggregate and its feeding cursor: the events of one ARW shard's prompts."""

    def __init__(self, online: OnlineSelection):
        self.online = online
        self.fed = -1  # the last event_seq fed
        self.pending: list[tuple[int, str, int]] = []  # (event_seq, prompt, event) known, not fed yet
        self.stale = False  # an event at or before ``fed`` arrived late: replay from scratch


class SearchState:
    """Candidates, plans and guided rewards of a run's search, and its online aggregate(s).

    ``arw_shards`` K: 1 = one online aggregate fed by every prompt's events (run scope); K > 1 = one
    per shard of prompts (prompt index mod K), each fed only its shard's events, in event_seq order
    (what a K-shard run's shard processes each hold; :func:`avits_core.selection.replay` with the
    same K reproduces it). Storage-neutral; subclasses provide :meth:`load_latent` and persist plans
    in :meth:`save_plan` / :meth:`load_plan`. Thread-safe (one lock), so concurrent Prefect tasks
    may share it.
    """

    def __init__(self, method: SearchMethod, prompt_ids: Sequence[str], run_seed: int,
                 make_online: Callable[[], OnlineSelection], arw_shards: int = 1):
        if isinstance(arw_shards, bool) or not isinstance(arw_shards, int) or arw_shards < 1:
            raise ConfigError(f"arw_shards must be an integer >= 1, got {arw_shards!r}")
        self.method = method
        self.n_events = method.n_events
        self.prompt_index = {p: i for i, p in enumerate(prompt_ids)}
        self.run_seed = int(run_seed)
        self.arw_shards = arw_shards
        self._make_online = make_online
        self._scopes: dict[int, _Scope] = {0: _Scope(make_online())}
        self.guided = list(self.online.verifiers)
        self.records: dict[str, list[CandidateRecord]] = {}
        self.events: set[tuple[str, int]] = set()
        self.plans: dict[str, dict[int, EventPlan]] = {}
        self.rewards: dict[str, dict[str, float | None]] = {}  # candidate -> guided verifier -> value (None: error)
        self.lock = threading.RLock()

    @property
    def online(self) -> OnlineSelection:
        """The online aggregate of shard 0 (the whole run's when ``arw_shards`` is 1); every shard's
        has the same verifiers and orientation (:meth:`online_for` gives a prompt's own)."""
        return self._scopes[0].online

    def shard_of(self, prompt_id: str) -> int:
        """The ARW shard of a run prompt: its index mod ``arw_shards``."""
        return self.prompt_index[prompt_id] % self.arw_shards

    def _scope(self, shard: int) -> _Scope:
        sc = self._scopes.get(shard)
        if sc is None:
            sc = self._scopes[shard] = _Scope(self._make_online())
        return sc

    def online_for(self, prompt_id: str) -> OnlineSelection:
        """The online aggregate that ranks ``prompt_id``'s candidates (its shard's)."""
        return self._scope(self.shard_of(prompt_id)).online

    # -- hooks -------------------------------------------------------------------------------------
    def load_latent(self, cid: str, step: int) -> Latents:  # pragma: no cover - abstract
        raise NotImplementedError

    def save_plan(self, plan: EventPlan) -> None:
        """Persist a plan of an event >= 1 (default: memory only)."""

    def load_plan(self, prompt_id: str, event: int) -> EventPlan | None:
        return None

    # -- bookkeeping -------------------------------------------------------------------------------
    def event_seq(self, prompt_id: str, event: int) -> int:
        return self.prompt_index[prompt_id] * self.n_events + event

    def has_event(self, prompt_id: str, event: int) -> bool:
        return (prompt_id, event) in self.events

    def add_records(self, records: Sequence[CandidateRecord]) -> None:
        with self.lock:
            for r in records:
                self.records.setdefault(r.prompt_id, []).append(r)
                key = (r.prompt_id, r.generation)
                if key not in self.events:
                    self.events.add(key)
                    if r.prompt_id in self.prompt_index:
                        seq = self.event_seq(*key)
                        sc = self._scope(self.shard_of(r.prompt_id))
                        if seq <= sc.fed:
                            sc.stale = True
                        sc.pending.append((seq, *key))
            for lst in {r.prompt_id for r in records}:
                self.records[lst].sort(key=lambda c: c.candidate_id)

    def add_reward(self, cid: str, verifier: str, value: float | None) -> None:
        if verifier in self.guided:
            with self.lock:
                self.rewards.setdefault(cid, {})[verifier] = value

    def event_records(self, prompt_id: str, event: int) -> list[CandidateRecord]:
        return [r for r in self.records.get(prompt_id, []) if r.generation == event]

    # -- planning ----------------------------------------------------------------------------------
    def plan_for(self, prompt_id: str, event: int, num_steps: int) -> EventPlan:
        """The plan of (prompt, event): stored when made before, else made now (and stored if event >= 1)."""
        if not 0 <= event < self.n_events:
            raise ConfigError(f"event {event} out of range: {self.method.name} has {self.n_events} event(s) per prompt")
        with self.lock:
            plans = self.plans.setdefault(prompt_id, {})
            if event in plans:
                return plans[event]
            if event >= 1:
                have = self.load_plan(prompt_id, event)
                if have is not None:
                    plans[event] = have
                    return have
                if not self.has_event(prompt_id, event - 1):
                    raise EvoSearchError(f"{prompt_id}: event {event - 1} is not generated yet")
            for e in range(1, event):
                if e not in plans:
                    loaded = self.load_plan(prompt_id, e)
                    if loaded is not None:
                        plans[e] = loaded
            view = PromptView(prompt_id, event, self.run_seed, num_steps, self.records.get(prompt_id, []),
                              {e: p for e, p in plans.items() if e < event},
                              lambda: self.aggregates_after(prompt_id, event - 1))
            plan = self.method.plan(event, view)
            if plan.prompt_id != prompt_id or plan.event != event:
                raise EvoSearchError(f"{self.method.name}: asked for the plan of ({prompt_id}, {event}), "
                                     f"got ({plan.prompt_id}, {plan.event})")
            if event >= 1:
                self.save_plan(plan)
            plans[event] = plan
            return plan

    def aggregates_after(self, prompt_id: str, event: int) -> dict[str, float]:
        """Aggregates of ``prompt_id``'s eligible candidates after its event ``event``: every event up
        to it of the prompt's ARW shard (the earlier prompts of the shard - all earlier prompts when
        ``arw_shards`` is 1 - then this prompt's events <= ``event``) fed in event_seq order."""
        target = self.event_seq(prompt_id, event)
        shard = self.shard_of(prompt_id)
        with self.lock:
            sc = self._scope(shard)
            if sc.stale or sc.fed > target:  # asked about the past: replay the shard from scratch
                sc.online, sc.fed, sc.stale = self._make_online(), -1, False
                sc.pending = sorted((self.event_seq(p, e), p, e) for p, e in self.events
                                    if p in self.prompt_index and self.shard_of(p) == shard)
            sc.pending.sort()
            while sc.pending and sc.pending[0][0] <= target:
                seq, pid, e = sc.pending.pop(0)
                self._feed(sc, seq, pid, e, prompt_id, event)
            return sc.online.aggregates(prompt_id)

    def final_aggregates_after(self, prompt_id: str, event: int) -> dict[str, float]:
        """:meth:`aggregates_after` restricted to the prompt's final (fully denoised) candidates,
        combined as their own pool: what the answer of the prompt is chosen from."""
        with self.lock:
            self.aggregates_after(prompt_id, event)
            return self.online_for(prompt_id).aggregates(prompt_id,
                                                         among=final_ids(self.records.get(prompt_id, [])))

    def _feed(self, sc: _Scope, seq: int, pid: str, e: int, for_prompt: str, for_event: int) -> None:
        cands = self.event_records(pid, e)
        for v in self.guided:
            missing = [c.candidate_id for c in cands if v not in self.rewards.get(c.candidate_id, {})]
            if missing:
                sc.pending.append((seq, pid, e))
                raise EvoSearchError(
                    f"{for_prompt}: cannot choose parents for event {for_event + 1}: {len(missing)} candidate(s) "
                    f"of the events so far have no {v!r} reward yet (first: {missing[0]}); score them first"
                )
        sc.online.feed(seq, pid, e, [(c.candidate_id, self.rewards.get(c.candidate_id, {})) for c in cands])
        sc.fed = seq
