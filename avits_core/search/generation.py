"""The generation step of the search engine: an :class:`~avits_core.search.base.EventPlan` in,
candidates out, chunk by chunk (one implementation for every search method and every storage).

:func:`iter_event` makes the start latents (fresh noise, or a parent's kept latent changed by its
mutation), denoises them to the end (or to an intermediate ``stop``) while keeping the latents at
the method's capture steps, decodes, and yields each chunk's records (id, generation, branch step,
parents, seed, NFE), clips and kept latents. Chunks hold at most the generator's ``batch_size``
candidates (:data:`DEFAULT_CHUNK_SIZE` when it has none): the caller stores a chunk and drops it
before the next is made, so one event's memory does not grow with N. A candidate does not depend on
the chunking (``init_noise`` draws each row from its own seed, the samplers treat rows
independently; ``tests/test_streaming.py`` checks every search method). :func:`generate_event`
gathers the chunks for callers that keep a whole event (tests, the in-memory loop).

NFE accounting: a candidate's ``nfe`` is what it costs to make this one sample alone (its parent's
NFE when the parent's latent was at the branch step, plus its own); ``nfe_own`` is the part it spent
itself, so summing ``nfe_own`` over a prompt gives the compute the search really spent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from avits_core.errors import ConfigError, EvoSearchError
from avits_core.generators.base import JointGenerator, Latents, lookahead_x0
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.search.base import CandidateRecord, EventPlan, candidate_id
from avits_core.search.mutation import apply_mutation

__all__ = ["DEFAULT_CHUNK_SIZE", "GeneratedEvent", "chunk_size_of", "denoise_capture", "denoise_to", "event_chunks",
           "generate_event", "iter_event"]


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
    """The new candidates of one event, or of one chunk of it (:func:`iter_event`): records, clips and
    kept latents (one entry each, plan order)."""

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


#: Candidates generated and decoded together when the generator names no ``batch_size`` (SynthAV):
#: the memory of one event is at most this many clips and their kept latents, whatever N is.
DEFAULT_CHUNK_SIZE = 8


def chunk_size_of(generator: JointGenerator, chunk_size: int | None = None) -> int:
    """How many candidates :func:`iter_event` generates and decodes at once: ``chunk_size`` when
    given, else the generator's ``batch_size`` (LTX-2: ``generator.params.batch_size``, the most
    candidates per DiT call), else :data:`DEFAULT_CHUNK_SIZE`."""
    size = chunk_size if chunk_size is not None else getattr(generator, "batch_size", None)
    if size is None:
        return DEFAULT_CHUNK_SIZE
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"generation chunk size must be an integer >= 1, got {size!r}")
    return int(size)


def _record(plan: EventPlan, i: int, nfe: int, own: int, kind: tuple[str, int | None]) -> CandidateRecord:
    c = plan.candidates[i]
    return CandidateRecord(
        candidate_id=candidate_id(plan.prompt_id, plan.event, i), prompt_id=plan.prompt_id, generation=plan.event,
        step=int(c.step), parent_ids=(c.parent,) if c.parent else (), seed=int(c.seed), nfe=int(nfe),
        nfe_own=int(own), batch_index=i, kind=kind[0], x0_step=kind[1])


def _generate_rows(generator: JointGenerator, prompt: Prompt, plan: EventPlan, key: tuple, idx: list[int],
                   capture: Sequence[int], parent_latent: Callable[[str, int], Latents]) -> GeneratedEvent:
    """Candidates ``idx`` of ``plan`` (one group: they start alike), denoised and decoded as one batch."""
    S = generator.num_steps
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
    kind: tuple[str, int | None] = ("final", None)
    if c0.stop is None and c0.noise_scale == 0.0:
        final, snaps = denoise_capture(generator, start, prompt, capture)
    else:
        target = S if c0.stop is None else int(c0.stop)
        final, snaps = denoise_to(generator, start, prompt, target, capture, float(c0.noise_scale),
                                  c0.noise_modality)
        if target < S:  # intermediate: keep the latent at stop, decode the clean estimate from it
            snaps[target] = final.select(range(len(final)))
            final = lookahead_x0(generator, final, prompt, int(c0.lookahead))
            kind = ("intermediate", target)
    del start
    clips = generator.decode(final, prompt)
    records = [_record(plan, i, int(final.nfe[j]), int(final.nfe[j] - inherited[j]), kind) for j, i in enumerate(idx)]
    latents = [{k: lat.select([j]) for k, lat in snaps.items()} for j in range(len(idx))]
    return GeneratedEvent(plan, records, list(clips), latents, 0.0)


def event_chunks(generator: JointGenerator, plan: EventPlan, chunk_size: int | None = None,
                 skip: Sequence[int] = ()) -> list[tuple[tuple, list[int]]]:
    """The work of :func:`iter_event` as (group key, candidate indices) chunks, in the order it runs
    them: groups of candidates that start alike (fresh, or branched at one step with one mutation
    rule) in order of first appearance, each cut into runs of at most the chunk size (plan order
    inside a group); indices in ``skip`` are left out."""
    size = chunk_size_of(generator, chunk_size)
    left = set(range(len(plan.candidates))) - {int(i) for i in skip}
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(plan.candidates):
        if i in left:
            groups.setdefault(_group_key(c), []).append(i)
    return [(key, idx[a:a + size]) for key, idx in groups.items() for a in range(0, len(idx), size)]


def iter_event(
    generator: JointGenerator, prompt: Prompt, plan: EventPlan, capture: Sequence[int],
    parent_latent: Callable[[str, int], Latents], *, chunk_size: int | None = None, skip: Sequence[int] = (),
) -> Iterator[GeneratedEvent]:
    """Create the candidates of ``plan`` chunk by chunk (see :func:`event_chunks`; ``skip``: indices
    already made, e.g. stored before a crash) and yield each chunk as a :class:`GeneratedEvent` of
    its candidates (plan order; ``wall_s`` per candidate of the chunk). The caller stores a chunk
    and drops it before asking for the next, so an event holds at most one chunk of clips and kept
    latents however large N is. A candidate does not depend on the chunking: noise comes from its
    own seed (``init_noise`` per row), the sampler treats rows independently, and its NFE and
    lineage are its own. ``parent_latent(candidate_id, step)`` returns a stored parent's one-row
    latent at ``step``. Bad plans raise before anything is generated."""
    if not plan.candidates:
        raise EvoSearchError(f"{plan.prompt_id}: the plan of event {plan.event} creates no candidate")
    _check_stop(plan, generator.num_steps)
    for key, idx in event_chunks(generator, plan, chunk_size, skip):
        t0 = time.perf_counter()
        ge = _generate_rows(generator, prompt, plan, key, idx, capture, parent_latent)
        ge.wall_s = (time.perf_counter() - t0) / len(idx)
        yield ge
        del ge  # the caller has stored the chunk: do not hold it while the next one is made


def generate_event(
    generator: JointGenerator, prompt: Prompt, plan: EventPlan, capture: Sequence[int],
    parent_latent: Callable[[str, int], Latents], *, chunk_size: int | None = None,
) -> GeneratedEvent:
    """Every candidate of ``plan`` at once (plan order): :func:`iter_event`'s chunks gathered, for
    callers that keep the whole event in memory (tests, :mod:`avits_core.search.memory`); the
    store-backed step streams the chunks instead."""
    if not plan.candidates:  # checked here too: a generator function raises only when iterated
        raise EvoSearchError(f"{plan.prompt_id}: the plan of event {plan.event} creates no candidate")
    t0 = time.perf_counter()
    n = len(plan.candidates)
    records: list[CandidateRecord | None] = [None] * n
    clips: list[AVClip | None] = [None] * n
    latents: list[dict[int, Latents]] = [{} for _ in range(n)]
    for ch in iter_event(generator, prompt, plan, capture, parent_latent, chunk_size=chunk_size):
        for r, clip, lat in zip(ch.records, ch.clips, ch.latents):
            records[r.batch_index], clips[r.batch_index], latents[r.batch_index] = r, clip, lat
    wall = (time.perf_counter() - t0) / n
    return GeneratedEvent(plan, records, clips, latents, wall)  # type: ignore[arg-type]
