"""Generation step over the run's tables: one (prompt, event) of any search method.

The plan comes from the method (:meth:`SearchState.plan_for`: stored plans are reused), the work
from the engine (:func:`avits_core.search.engine.generate_event`); this module stores the result:
mp4 media, kept latents, then the candidate rows (one part file per event). Media and latents are
written before the rows, so a crash leaves at worst orphan files that the rerun overwrites. A
(prompt, event) whose candidates are stored is not generated again (resume); its stored rows are
returned.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from avits_core import progress
from avits_core.errors import ConfigError
from avits_core.runner.models import get_generator
from avits_core.runner.state import latent_relpath, save_latents
from avits_core.search import engine

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.runner.context import RunContext

log = logging.getLogger(__name__)


def start_search(ctx: "RunContext") -> dict[str, Any]:
    """Check the method against the generator before anything is generated (a method that checks
    nothing loads no generator) and record the resolved parameters in run.json (``search``)."""
    method = ctx.method
    info = method.describe()
    if type(method).check_generator is not engine.SearchMethod.check_generator:
        gen = get_generator(ctx.cfg.generator.name, ctx.cfg.generator.params)
        method.check_generator(gen.num_steps)
        info["num_steps"] = int(gen.num_steps)
    if ctx.cfg.search.arw_shards > 1:  # the ARW partition the search and the default replay use
        from avits_core.selection import prompt_shards

        info["arw_scope"] = {"arw_shards": ctx.cfg.search.arw_shards, "rule": "prompt i (run order) -> shard i mod K",
                             "prompt_shard": prompt_shards([p.prompt_id for p in ctx.prompts], ctx.cfg.search.arw_shards)}
    ctx.store.update_run_json(search=info)
    return info


def generate_event(ctx: "RunContext", prompt_id: str, event: int) -> list[dict[str, Any]]:
    """Generate, store and return the candidate rows of one (prompt, event); the stored rows when
    the event is already generated."""
    state = ctx.state
    prompt = ctx.prompt_by_id.get(prompt_id)
    if prompt is None:
        raise ConfigError(f"unknown prompt_id {prompt_id!r} in run {ctx.run_id}")
    if not 0 <= event < ctx.n_generations:
        raise ConfigError(f"event {event} out of range: this run has {ctx.n_generations} event(s) per prompt")
    if state.has_event(prompt_id, event):
        log.debug("%s e%d already stored", prompt_id, event)
        return state.event_rows(prompt_id, event)
    gen = get_generator(ctx.cfg.generator.name, ctx.cfg.generator.params)
    method = ctx.method
    t0 = time.perf_counter()
    plan = state.plan_for(prompt_id, event, gen.num_steps)
    ge = engine.generate_event(gen, prompt, plan, method.capture_steps(event), state.load_latent)
    from avits_core.media import write_mp4

    pi = ctx.prompt_index[prompt_id]
    rows = []
    for rec, clip, lat in zip(ge.records, ge.clips, ge.latents):
        cid = rec.candidate_id
        rel = Path("media") / prompt_id / f"{cid}.mp4"
        target = ctx.store.inside(rel)  # UnsafePathError if a name would leave the run folder
        if not ctx.store.remote:
            target.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(clip, target)
        lrel = None
        if lat:
            lrel = latent_relpath(prompt_id, cid)
            save_latents(ctx.store.inside(lrel), lat)
        truth = clip.meta.get("truth")
        rows.append(dict(
            run_id=ctx.run_id, prompt_id=prompt_id, prompt_index=pi, prompt_text=prompt.text, candidate_id=cid,
            search=method.name, generation=rec.generation, step=rec.step, parent_ids=list(rec.parent_ids),
            seed=rec.seed, generator=ctx.cfg.generator.name, nfe=rec.nfe, nfe_own=rec.nfe_own,
            batch_index=rec.batch_index, kind=rec.kind, x0_step=rec.x0_step,
            media_path=str(rel), latent_path=str(lrel) if lrel else None,
            truth=json.dumps(truth) if truth is not None else None, wall_s=ge.wall_s,
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        ))
    with state._write_lock:
        ctx.store.append("candidates", rows, known_ids=state.candidate_ids())
        state.add_rows(rows)
    log.info("%s e%d: %d candidates in %.2fs", prompt_id, event, len(rows), time.perf_counter() - t0)
    return rows


def generate_events(ctx: "RunContext", items: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    """:func:`generate_event` for several (prompt, event) pairs (a generation task's shard)."""
    total = len(ctx.prompts) * ctx.n_generations
    out: list[dict[str, Any]] = []
    for pid, e in items:
        stored = ctx.state.has_event(pid, e)
        rows = generate_event(ctx, pid, e)
        progress.report("generate", 1 if stored or rows else 0, total)
        out.extend(rows)
    return out


def generate_shard(ctx: "RunContext", prompts: Sequence[Any]) -> int:
    """Event 0 of every prompt of a shard; returns the number of new candidates (0 when stored)."""
    n = 0
    for p in prompts:
        stored = ctx.state.has_event(p.prompt_id, 0)
        rows = generate_event(ctx, p.prompt_id, 0)
        n += 0 if stored else len(rows)
    return n
