"""The one search engine: plans in, candidates out, for every search method and every storage.

Three pieces, each written once:

* :func:`iter_event` / :func:`generate_event` - the generation step, in
  :mod:`avits_core.search.generation` (re-exported here): from an
  :class:`~avits_core.search.base.EventPlan`, the start latents (fresh noise, or a parent's kept
  latent changed by its mutation), denoised while keeping the latents at the method's capture
  steps, decoded, with the candidates' records (id, generation, branch step, parents, seed, NFE),
  in chunks of the generator's batch size that the caller stores and drops one by one, so memory
  does not grow with N.
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

import logging
import math
import threading
from typing import Callable, Mapping, Sequence

import numpy as np

from avits_core.aggregate.base import Aggregator
from avits_core.errors import ConfigError, EvoSearchError
from avits_core.generators.base import Latents
from avits_core.search.base import CandidateRecord, EventPlan, PromptView, SearchMethod
from avits_core.selection import prompt_shards

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- generation step

# The generation step lives in avits_core.search.generation; its names stay importable from here.
from avits_core.search.generation import (  # noqa: E402,F401 (re-exported)
    DEFAULT_CHUNK_SIZE,
    GeneratedEvent,
    chunk_size_of,
    denoise_capture,
    denoise_to,
    event_chunks,
    generate_event,
    iter_event,
)


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
        self._shard = prompt_shards(prompt_ids, arw_shards)  # the replay's split (one rule, in selection)
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
        """The ARW shard of a run prompt: its index mod ``arw_shards`` (:func:`~avits_core.selection.prompt_shards`)."""
        return self._shard[prompt_id]

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
