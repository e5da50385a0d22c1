"""Store-backed EvoSearch steps (no Prefect here): what ``flows/evo.py`` calls through ``tasks/evo.py``.

The algorithm is :mod:`avits_core.search.evosearch`; this module reads and writes the run's tables.

Steps, for each prompt in order and each generation g in order:
  generate_generation(ctx, prompt_id, g)   candidates (+ mp4 media, + latents under ``<run>/latents/``)
  (the flow then runs the usual cached scoring task of every verifier: rewards, event_seq = pi*G + g)
  choose_parents(ctx, prompt_id, g + 1)    replays the stored rewards of every event so far through the
                                           run's selection spec and plans generation g + 1
The final selection is the ordinary ``runner.select`` replay over all generations.

Plans (decision). The plan of (prompt, g >= 1) - pool, pool aggregates, elites, parents, mutation
seeds - is a deterministic function of the stored rewards of events <= (prompt, g - 1). It is written
once to ``<run>/evosearch/plans/<prompt_id>/g<g>.json`` (atomically) and reused afterwards, so a
resumed run continues exactly the lineage it started, and ``avits lineage`` can show which elites were
carried. The pool of generation g is plan(g-1).elites + the children of g-1 (generation 0 for g = 1).

Parent choice replays ``avits_core.selection.replay`` over the candidates and ok rewards of the events
so far (prompts before this one, and this prompt's generations <= g - 1; rewards by event_seq), with
the run's default selection spec (guided verifiers, their weights, the run's aggregator). The
aggregates of this prompt's candidates after its newest event are the ranking. Pool members without a
complete set of rewards are not eligible (the selection's missing-reward policy). Before planning,
every candidate of those events must have a reward row (ok or error) of every guided verifier: a
missing one means scoring has not run and raises :class:`EvoSearchError`. Cost: one replay per
(prompt, generation >= 1), each over all events so far - quadratic in the number of events; fine for
hundreds of prompts with the closed-form ARW.

Latents (decision). A candidate of generation g keeps its latent at every step of
``cfg.capture_steps(g)`` (the branch steps of the later generations) in one file
``latents/<prompt_id>/<candidate_id>.pt`` (``torch.save`` of ``{"steps": {"<k>": {"video", "audio",
"nfe"}}}``; ``nfe`` is the candidate's NFE when it was at step k). Candidates of the last generation
keep none (``latent_path`` null).

Resume: a (prompt, generation) with stored candidates is not generated again. Media and latents are
written before the candidate rows, so a crash leaves at worst orphan files that the rerun overwrites.

Compute accounting (``record_compute``, written to run.json ``compute``): NFE actually spent (sum of
``nfe_own``) per prompt and in total, decodes (= stored candidates: each is decoded once), verifier
calls (reward rows per verifier, errors included), scoring events, Best-of-N equivalent (NFE spent /
NFE of one full-schedule sample), and the wall time per stage from run.json ``timings``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from avits_core import runner
from avits_core.errors import ConfigError
from avits_core.generators.base import Latents
from avits_core.runner import RunContext, compute_summary, record_compute  # noqa: F401 (re-exported)
from avits_core.search.base import candidate_id as make_candidate_id
from avits_core.search.evosearch import (
    EvoSearchConfig,
    EvoSearchError,
    GenerationPlan,
    denoise_capture,
    make_children,
    plan_generation,
)
from avits_core.seeding import candidate_seeds

log = logging.getLogger(__name__)

LATENT_DIR = "latents"
PLAN_DIR = "evosearch/plans"


def evo_config(ctx: RunContext) -> EvoSearchConfig:
    """The run's EvoSearch parameters (ConfigError when the run is not an EvoSearch run)."""
    if ctx.cfg.search.method != "evosearch":
        raise ConfigError(f"run {ctx.run_id} uses search.method={ctx.cfg.search.method!r}, not 'evosearch'")
    return EvoSearchConfig.from_params(ctx.cfg.search.params)


def check_ready(ctx: RunContext) -> EvoSearchConfig:
    """Validate the schedule against the generator's number of steps before anything is generated;
    record the resolved parameters in run.json (``evosearch``)."""
    cfg = evo_config(ctx)
    gen = runner.get_generator(ctx.cfg.generator.name, ctx.cfg.generator.params)
    cfg.check_steps(gen.num_steps)
    ctx.store.update_run_json(evosearch=dict(cfg.to_dict(), num_steps=int(gen.num_steps),
                                             n_generations=cfg.n_generations))
    return cfg


def _prompt(ctx: RunContext, prompt_id: str):
    by_id = ctx.prompt_by_id
    if prompt_id not in by_id:
        raise ConfigError(f"unknown prompt_id {prompt_id!r} in run {ctx.run_id}")
    return by_id[prompt_id]


def _candidates(ctx: RunContext, prompt_id: str | None = None) -> list[dict[str, Any]]:
    rows = ctx.store.read("candidates").to_pylist()
    if prompt_id is not None:
        rows = [r for r in rows if r["prompt_id"] == prompt_id]
    return sorted(rows, key=lambda r: r["candidate_id"])


def generation_stored(ctx: RunContext, prompt_id: str, generation: int) -> bool:
    return any(r["generation"] == generation for r in _candidates(ctx, prompt_id))


# --------------------------------------------------------------------------- latents


def latent_relpath(prompt_id: str, cid: str) -> Path:
    return Path(LATENT_DIR) / prompt_id / f"{cid}.pt"


def save_latents(path: Path, snaps: dict[int, Latents], row: int) -> None:
    """Write row ``row`` of every snapshot to ``path`` (temp file, then rename)."""
    data = {
        "steps": {
            str(k): {
                "video": lat.video[row].detach().cpu().clone(),
                "audio": lat.audio[row].detach().cpu().clone(),
                "nfe": int(lat.nfe[row]),
            }
            for k, lat in snaps.items()
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(data, tmp)
    tmp.replace(path)


def load_latent(ctx: RunContext, cand: dict[str, Any], step: int) -> Latents:
    """The stored latent of candidate row ``cand`` at ``step`` (a one-row Latents; seeds = its seed)."""
    rel = cand.get("latent_path")
    if not rel:
        raise EvoSearchError(f"candidate {cand['candidate_id']} kept no latents; cannot evolve it at step {step}")
    path = ctx.store.path / rel
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EvoSearchError(f"latent file {path} of candidate {cand['candidate_id']} is missing") from None
    snap = data.get("steps", {}).get(str(step))
    if snap is None:
        have = sorted(int(k) for k in data.get("steps", {}))
        raise EvoSearchError(f"{path}: no latent at step {step} (kept steps: {have})")
    return Latents(video=snap["video"][None], audio=snap["audio"][None], step=step,
                   seeds=[int(cand["seed"])], nfe=[int(snap["nfe"])])


# --------------------------------------------------------------------------- parent choice


def ok_rewards(ctx: RunContext, verifiers: list[str]) -> list[dict[str, Any]]:
    """Ok rows of the deduplicated ``rewards`` view (candidate_id, verifier, value, event_seq) of
    ``verifiers`` - the rows ``runner.select`` replays."""
    from avits_core.store import query

    if not verifiers:
        return []
    marks = ", ".join("?" for _ in verifiers)
    return query(
        ctx.store.path,
        f"SELECT candidate_id, verifier, value, event_seq FROM rewards WHERE status = 'ok' AND verifier IN ({marks})",
        list(verifiers),
    ).to_pylist()



def plan_relpath(prompt_id: str, generation: int) -> Path:
    return Path(PLAN_DIR) / prompt_id / f"g{generation:02d}.json"


def read_plan(ctx: RunContext, prompt_id: str, generation: int) -> GenerationPlan | None:
    p = ctx.store.path / plan_relpath(prompt_id, generation)
    if not p.exists():
        return None
    return GenerationPlan.from_dict(json.loads(p.read_text(encoding="utf-8")))


def _write_plan(ctx: RunContext, plan: GenerationPlan) -> None:
    p = ctx.store.path / plan_relpath(plan.prompt_id, plan.generation)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(plan.to_dict(), indent=1), encoding="utf-8")
    tmp.replace(p)


def aggregates_so_far(ctx: RunContext, prompt_id: str, generation: int) -> dict[str, float]:
    """Aggregates of ``prompt_id``'s eligible candidates after the event (prompt, ``generation``),
    replaying the stored rewards of every event up to it with the run's selection spec."""
    from avits_core.selection import replay
    from avits_core.registry import VERIFIERS

    spec = runner.default_spec(ctx.cfg)
    G = ctx.n_generations
    index = ctx.prompt_index
    pi = index[prompt_id]
    last = pi * G + generation
    cands = [
        c for c in ctx.store.read("candidates", ["prompt_id", "candidate_id", "generation"]).to_pylist()
        if c["prompt_id"] in index
        and (index[c["prompt_id"]] < pi or (c["prompt_id"] == prompt_id and c["generation"] <= generation))
    ]
    ids = {c["candidate_id"] for c in cands}
    vparams = {v.name: dict(v.params) for v in ctx.all_verifier_specs()}
    for name in spec.verifiers:
        done = ctx.store.scored_pairs(name, runner.get_verifier(name, vparams.get(name, {})).cache_version)
        missing = sorted(ids - done)
        if missing:
            raise EvoSearchError(
                f"{prompt_id}: cannot choose parents for generation {generation + 1}: {len(missing)} candidate(s) "
                f"of the events so far have no {name!r} reward yet (first: {missing[0]}); score them first"
            )
    rewards = [r for r in ok_rewards(ctx, spec.verifiers) if r["event_seq"] <= last and r["candidate_id"] in ids]
    res = replay(spec, cands, rewards, runner.higher_is_better(spec.verifiers), [p.prompt_id for p in ctx.prompts])
    mine = {c["candidate_id"] for c in cands if c["prompt_id"] == prompt_id}
    return {cid: a for cid, a in res.aggregates.items() if cid in mine}


def population(ctx: RunContext, prompt_id: str, generation: int) -> list[str]:
    """Candidate ids of the population of ``generation``: elites carried into it + its new candidates."""
    new = [r["candidate_id"] for r in _candidates(ctx, prompt_id) if r["generation"] == generation]
    if generation == 0:
        return new
    return list(choose_parents(ctx, prompt_id, generation).elites) + new


def choose_parents(ctx: RunContext, prompt_id: str, generation: int) -> GenerationPlan:
    """The plan (elites, parents, mutation seeds) of ``generation`` >= 1 of ``prompt_id``.

    Read from ``evosearch/plans`` when already made; otherwise computed from the stored rewards of
    the events so far and written there.
    """
    cfg = evo_config(ctx)
    _prompt(ctx, prompt_id)
    if not 1 <= generation < cfg.n_generations:
        raise ConfigError(f"generation {generation} has no parents (generations with parents: 1..{cfg.n_generations - 1})")
    have = read_plan(ctx, prompt_id, generation)
    if have is not None:
        return have
    if not generation_stored(ctx, prompt_id, generation - 1):
        raise EvoSearchError(f"{prompt_id}: generation {generation - 1} is not generated yet")
    pool = population(ctx, prompt_id, generation - 1)
    agg = aggregates_so_far(ctx, prompt_id, generation - 1)
    eligible = [c for c in pool if c in agg]
    if len(eligible) < len(pool):
        log.warning("%s g%d: %d of %d pool members lack rewards and cannot be parents", prompt_id, generation,
                    len(pool) - len(eligible), len(pool))
    plan = plan_generation(cfg, prompt_id, generation, eligible, [agg[c] for c in eligible], ctx.cfg.seed)
    _write_plan(ctx, plan)
    log.info("%s g%d: elites %s, parents %s", prompt_id, generation, plan.elites, plan.parents)
    return plan


# --------------------------------------------------------------------------- generation


def generate_generation(ctx: RunContext, prompt_id: str, generation: int) -> int:
    """Generate, decode and store the new candidates of one generation of one prompt.

    Generation 0: fresh noises (Best-of-N seeds). Generation g >= 1: the plan's parents' latents at
    the branch step, mutated and denoised to the end. Returns the number of new candidates (0 when
    the generation is already stored: resume).
    """
    from avits_core.media import write_mp4

    cfg = evo_config(ctx)
    prompt = _prompt(ctx, prompt_id)
    if not 0 <= generation < cfg.n_generations:
        raise ConfigError(f"generation {generation} out of range: this run has {cfg.n_generations} generations")
    if generation_stored(ctx, prompt_id, generation):
        log.info("%s g%d already stored", prompt_id, generation)
        return 0
    gen = runner.get_generator(ctx.cfg.generator.name, ctx.cfg.generator.params)
    cfg.check_steps(gen.num_steps)
    t0 = time.perf_counter()
    if generation == 0:
        seeds = candidate_seeds(ctx.cfg.seed, prompt_id, cfg.population_size_schedule[0])
        start = gen.init_noise(seeds)
        parents: list[str] = []
        inherited = [0] * len(seeds)
    else:
        plan = choose_parents(ctx, prompt_id, generation)
        rows = {r["candidate_id"]: r for r in _candidates(ctx, prompt_id)}
        parent_lat = Latents.cat([load_latent(ctx, rows[pid], plan.step) for pid in plan.parents])
        inherited = [int(x) for x in parent_lat.nfe]
        start = make_children(gen, prompt, parent_lat, plan, cfg)
        seeds = list(plan.mutation_seeds)
        parents = list(plan.parents)
    final, snaps = denoise_capture(gen, start, prompt, cfg.capture_steps(generation))
    clips = gen.decode(final, prompt)
    wall = (time.perf_counter() - t0) / max(1, len(clips))
    pi = ctx.prompt_index[prompt_id]
    out = []
    for i, clip in enumerate(clips):
        cid = make_candidate_id(prompt_id, generation, i)
        rel = Path("media") / prompt_id / f"{cid}.mp4"
        (ctx.store.path / rel).parent.mkdir(parents=True, exist_ok=True)
        write_mp4(clip, ctx.store.path / rel)
        lrel = None
        if snaps:
            lrel = latent_relpath(prompt_id, cid)
            save_latents(ctx.store.path / lrel, snaps, i)
        truth = clip.meta.get("truth")
        out.append(
            dict(
                run_id=ctx.run_id,
                prompt_id=prompt_id,
                prompt_index=pi,
                prompt_text=prompt.text,
                candidate_id=cid,
                search="evosearch",
                generation=generation,
                step=cfg.branch_step(generation),
                parent_ids=[parents[i]] if parents else [],
                seed=int(seeds[i]),
                generator=ctx.cfg.generator.name,
                nfe=int(final.nfe[i]),
                nfe_own=int(final.nfe[i]) - inherited[i],
                batch_index=i,
                media_path=str(rel),
                latent_path=str(lrel) if lrel else None,
                truth=json.dumps(truth) if truth is not None else None,
                wall_s=wall,
            )
        )
    ctx.store.append("candidates", out)
    log.info("%s g%d: %d candidates from step %d in %.2fs", prompt_id, generation, len(out),
             cfg.branch_step(generation), time.perf_counter() - t0)
    return len(out)


# --------------------------------------------------------------------------- accounting


# --------------------------------------------------------------------------- lineage


def lineage_tree(ctx: RunContext, prompt_id: str) -> str:
    """A prompt's family tree as text: one line per candidate, children under their parent.

    Each line: candidate id, generation, branch step, seed, nfe (own), the final aggregate under the
    run's selection spec, the raw guided rewards; ``*`` marks the stored selection of that spec,
    ``elite->g1,g2`` the generations a candidate was carried into. Works for Best-of-N runs too
    (a flat list of roots).
    """
    from avits_core.selection import replay

    prompt = _prompt(ctx, prompt_id)
    rows = _candidates(ctx, prompt_id)
    if not rows:
        return f"{prompt_id}: no candidates stored yet"
    spec = runner.default_spec(ctx.cfg)
    ids = {r["candidate_id"] for r in rows}
    rewards = ok_rewards(ctx, spec.verifiers)
    res = replay(spec, rows, [r for r in rewards if r["candidate_id"] in ids],
                 runner.higher_is_better(spec.verifiers), [prompt_id])
    agg = res.aggregates
    selected = res.selections[0]["candidate_id"] if res.selections else None
    raw: dict[str, dict[str, float]] = {}
    for r in rewards:
        raw.setdefault(r["candidate_id"], {})[r["verifier"]] = r["value"]
    carried: dict[str, list[int]] = {}
    n_gen = max(r["generation"] for r in rows) + 1
    if ctx.cfg.search.method == "evosearch":
        for g in range(1, n_gen):
            plan = read_plan(ctx, prompt_id, g)
            for e in plan.elites if plan else []:
                carried.setdefault(e, []).append(g)
    children: dict[str | None, list[dict[str, Any]]] = {}
    for r in rows:
        par = [p for p in (r["parent_ids"] or []) if p in ids]
        children.setdefault(par[0] if par else None, []).append(r)

    def describe(r: dict[str, Any]) -> str:
        cid = r["candidate_id"]
        a = agg.get(cid)
        own = r["nfe_own"] if r["nfe_own"] is not None else r["nfe"]
        parts = [cid, f"g{r['generation']}", f"step {r['step']}", f"seed {r['seed']}",
                 f"nfe {r['nfe']} (own {own})", "agg n/a" if a is None else f"agg {a:+.4f}"]
        vals = raw.get(cid, {})
        if vals:
            parts.append(" ".join(f"{v}={vals[v]:.3f}" for v in spec.verifiers if v in vals))
        if cid in carried:
            parts.append("elite->" + ",".join(f"g{g}" for g in carried[cid]))
        if cid == selected:
            parts.append("* selected")
        return "  ".join(parts)

    total = sum((r["nfe_own"] if r["nfe_own"] is not None else r["nfe"]) for r in rows)
    lines = [
        f"{prompt_id}: {prompt.text}",
        f"{ctx.cfg.search.method}: {n_gen} generation(s), {len(rows)} candidates, NFE spent {total}; "
        f"aggregate = {spec.aggregator} over {', '.join(spec.verifiers)} (final state); "
        f"selected {selected}",
    ]

    def walk(node: dict[str, Any], prefix: str, last: bool, root: bool) -> None:
        lines.append((prefix + ("" if root else ("└── " if last else "├── "))) + describe(node))
        kids = children.get(node["candidate_id"], [])
        ext = prefix + ("" if root else ("    " if last else "│   "))
        for i, k in enumerate(kids):
            walk(k, ext, i == len(kids) - 1, False)

    for r in children.get(None, []):
        walk(r, "", True, True)
    return "\n".join(lines)
