"""Generation step over the run's tables: one (prompt, event) of any search method.

The plan comes from the method (:meth:`SearchState.plan_for`: stored plans are reused), the work
from the engine (:func:`avits_core.search.generation.iter_event`, chunk by chunk); this module stores
the result: mp4 media and kept latents as each chunk comes (then the chunk is dropped: memory does
not grow with N), then the event's candidate rows (one part file per event). Media and latents are
written before the rows, so a crash leaves at worst orphan files that the rerun overwrites, or
staged rows of finished chunks that the rerun takes instead of generating them again (see
:func:`generate_event`). A (prompt, event) whose candidates are stored is not generated again
(resume); its stored rows are returned.
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
from avits_core.search import engine, generation
from avits_core.search.base import candidate_id
from avits_core.store import fs as sfs
from avits_core.threads import compute_slot

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.runner.context import RunContext

log = logging.getLogger(__name__)

#: Folder (under the run folder) of the candidate rows of an event's finished chunks until the
#: event's rows are appended (see :func:`generate_event`).
STAGING_DIR = "staging"


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
    the event is already generated.

    Streaming (memory does not grow with N): the engine makes the event chunk by chunk
    (:func:`avits_core.search.generation.iter_event`, the generator's batch size); each chunk's mp4
    files and latents are written as it comes and its clips and latents dropped. The candidate
    rows of the event are still appended as ONE part file once every chunk is made, so an event
    is in the candidates table whole or not at all (resume, sharding and planning rely on it).
    Crash between chunks: every chunk but the last also leaves its rows in
    ``staging/<prompt>/eNN/<first candidate>.json`` (written after its media and latents); a rerun
    takes the staged candidates whose files are there as made, generates only the others (a
    candidate does not depend on the chunking), appends the whole event once and removes the
    staged files. No duplicated row (the event's rows are appended once; the store refuses a
    stored id), no regenerated chunk.
    """
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
    ids = [candidate_id(prompt_id, event, i) for i in range(len(plan.candidates))]
    stage_dir = ctx.store.inside(staging_relpath(prompt_id, event))
    staged = _staged_files(stage_dir)  # listed once: read here, removed once the event is appended
    made = _staged_rows(ctx, staged, set(ids))
    if made:
        log.info("%s e%d: resuming, %d of %d candidates staged before an interruption", prompt_id, event,
                 len(made), len(ids))
    skip = [i for i, cid in enumerate(ids) if cid in made]
    todo = len(ids) - len(skip)
    chunks = generation.iter_event(gen, prompt, plan, method.capture_steps(event), state.load_latent, skip=skip)
    while True:
        with compute_slot():  # a chunk's denoising, decoding and mp4 encoding (avits_core.threads)
            chunk = next(chunks, None)
            if chunk is None:
                break
            rows = [_store_candidate(ctx, prompt, method.name, rec, clip, lat, chunk.wall_s)
                    for rec, clip, lat in zip(chunk.records, chunk.clips, chunk.latents)]
        del chunk  # the chunk's clips and latents are on disk now
        todo -= len(rows)
        if todo > 0:  # not the last chunk: a crash before the append below keeps this chunk's work
            staged.append(stage_dir / f"{rows[0]['candidate_id']}.json")
            sfs.put_bytes(staged[-1], json.dumps({"rows": rows}, sort_keys=True).encode("utf-8"))
        made.update((r["candidate_id"], r) for r in rows)
    rows = [made[cid] for cid in ids]
    with state._write_lock:
        ctx.store.append("candidates", rows, known_ids=state.candidate_ids())
        state.add_rows(rows)
    _clear_staged(stage_dir, staged)
    log.info("%s e%d: %d candidates in %.2fs", prompt_id, event, len(rows), time.perf_counter() - t0)
    return rows


def staging_relpath(prompt_id: str, event: int) -> Path:
    """The folder of the rows staged by an event's finished chunks (see :func:`generate_event`)."""
    return Path(STAGING_DIR) / prompt_id / f"e{event:02d}"


def _store_candidate(ctx: "RunContext", prompt: Any, search: str, rec: Any, clip: Any, lat: Any,
                     wall_s: float) -> dict[str, Any]:
    """Write one candidate's mp4 (and kept latents) and return its candidates row."""
    from avits_core.media import write_mp4

    cid, prompt_id = rec.candidate_id, rec.prompt_id
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
    return dict(
        run_id=ctx.run_id, prompt_id=prompt_id, prompt_index=ctx.prompt_index[prompt_id], prompt_text=prompt.text,
        candidate_id=cid, search=search, generation=rec.generation, step=rec.step, parent_ids=list(rec.parent_ids),
        seed=rec.seed, generator=ctx.cfg.generator.name, nfe=rec.nfe, nfe_own=rec.nfe_own,
        batch_index=rec.batch_index, kind=rec.kind, x0_step=rec.x0_step,
        media_path=str(rel), latent_path=str(lrel) if lrel else None,
        truth=json.dumps(truth) if truth is not None else None, wall_s=wall_s,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


def _staged_files(stage_dir: Any) -> list[Any]:
    try:
        return sorted((p for p in stage_dir.glob("*.json") if not p.name.startswith(".")), key=lambda p: p.name)
    except FileNotFoundError:
        return []


def _staged_rows(ctx: "RunContext", files: Sequence[Any], ids: set[str]) -> dict[str, dict[str, Any]]:
    """Rows staged (in ``files``) by finished chunks of an interrupted event whose media (and latent)
    files are there; a staged file that cannot be read is ignored (its candidates are generated again)."""
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        try:
            rows = json.loads(sfs.read_bytes(f).decode("utf-8"))["rows"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable staged rows %s (%s): its candidates are generated again", f, exc)
            continue
        for r in rows:
            cid = r.get("candidate_id") if isinstance(r, dict) else None
            if cid not in ids or cid in out:
                continue
            files = [r.get("media_path")] + ([r["latent_path"]] if r.get("latent_path") else [])
            if all(f and ctx.store.inside(f).exists() for f in files):
                out[cid] = r
    return out


def _clear_staged(stage_dir: Any, files: Sequence[Any]) -> None:
    """Remove the event's staged ``files`` (those found at its start and those it wrote), then its
    and its prompt's staging folders when empty."""
    for f in dict.fromkeys(files):
        sfs.remove(f)
    if not sfs.is_remote(stage_dir):
        for d in (stage_dir, stage_dir.parent):  # the event's and the prompt's folders, when empty
            try:
                d.rmdir()
            except OSError:
                break


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
