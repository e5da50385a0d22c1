"""The steps of one ITS run as plain functions over the run's tables (no Prefect here).

The Prefect tasks in ``tasks/`` are one-line wrappers around these functions, so every step is
testable as plain Python, and a run can also be driven without Prefect.

Steps and their tables:
  prepare_run      validates everything that can fail cheaply (config, prompts, generator and
                   verifier names, weights on disk, output root writable) BEFORE any generation;
                   writes run.json
  generate_shard   candidates (+ mp4 media): skips prompts whose candidates are already stored
  score_verifier   rewards: scores only (candidate, verifier, version) pairs with no row yet
  select           arw_trace + selections: replays rewards in event_seq order
  evaluate         metrics: baseline (first candidate of each prompt) and selected candidates

Missing-reward policy (documented decision): a candidate whose reward is missing (an error row, or
not scored yet) for any verifier of a selection is left out of that selection's replay entirely:
its other rewards do not enter ARW's history and it cannot be selected. A prompt with no eligible
candidate gets a selection row with a null candidate_id. Ties: the lowest candidate index wins.

Event order: ``event_seq = prompt_index * n_generations + generation`` (prompt order, then
generation), fixed by the config, so the replay is identical whichever order scoring ran in.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from avits_core import __version__, progress
from avits_core.aggregate import get_aggregator
from avits_core.config import DistributionConfig, RunConfig, VerifierSpec
from avits_core.errors import ConfigError
from avits_core.prompts import Prompt, load_prompts
from avits_core.registry import GENERATORS, VERIFIERS
from avits_core.search.base import candidate_id as make_candidate_id
from avits_core.seeding import candidate_seeds
from avits_core.store import RunStore, make_selection_id
from avits_core.verifiers.base import Verifier

log = logging.getLogger(__name__)

_MODEL_CACHE: dict[tuple[str, str, str], Any] = {}
_MODEL_LOCK = threading.Lock()


def _cache_key(kind: str, name: str, params: dict[str, Any]) -> tuple[str, str, str]:
    return (kind, name, json.dumps(params, sort_keys=True, default=str))


def get_generator(name: str, params: dict[str, Any]) -> Any:
    """A generator instance, loaded once per process for a given (name, params)."""
    key = _cache_key("generator", name, params)
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            log.info("loading generator %s %s", name, params)
            _MODEL_CACHE[key] = GENERATORS.create(name, **params)
        return _MODEL_CACHE[key]


def get_verifier(name: str, params: dict[str, Any]) -> Verifier:
    """A verifier instance, loaded once per process for a given (name, params)."""
    key = _cache_key("verifier", name, params)
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = VERIFIERS.create(name, **params)
        return _MODEL_CACHE[key]


# --------------------------------------------------------------------------- context


@dataclass
class RunContext:
    cfg: RunConfig
    run_id: str
    root: Path
    prompts: list[Prompt]
    store: RunStore = field(repr=False)

    @property
    def prompt_index(self) -> dict[str, int]:
        return {p.prompt_id: i for i, p in enumerate(self.prompts)}

    @property
    def prompt_by_id(self) -> dict[str, Prompt]:
        return {p.prompt_id: p for p in self.prompts}

    @property
    def n_generations(self) -> int:
        if self.cfg.search.method == "evosearch":
            from avits_core.search.evosearch import EvoSearchConfig

            return EvoSearchConfig.from_params(self.cfg.search.params).n_generations
        return 1

    def all_verifier_specs(self) -> list[VerifierSpec]:
        """Guided verifiers, then held-out evaluation verifiers (weight 0, their own params)."""
        specs = list(self.cfg.verifiers)
        guided = {v.name for v in specs}
        specs += [VerifierSpec(name=n, weight=0.0, params=p) for n, p in self.cfg.evaluation.specs() if n not in guided]
        return specs


def _check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"output_root {str(root)!r} is not writable: {exc.strerror or exc}") from exc


def validate_config(cfg: RunConfig) -> list[Prompt]:
    """Everything that can be checked before expensive work. Raises ConfigError/UnknownNameError."""
    prompts = load_prompts(cfg.prompts.source, text_column=cfg.prompts.text_column, limit=cfg.prompts.limit)
    GENERATORS.get_class(cfg.generator.name)
    for spec in cfg.verifiers:
        VERIFIERS.get_class(spec.name)
    for name, _ in cfg.evaluation.specs():
        VERIFIERS.get_class(name)
    get_aggregator(cfg.aggregator.name, [v.name for v in cfg.verifiers], cfg.weights, **cfg.aggregator.params)
    if cfg.search.method == "evosearch":
        from avits_core.search.evosearch import EvoSearchConfig

        EvoSearchConfig.from_params(cfg.search.params)
    if cfg.evaluation.oracle and cfg.generator.name != "synth":
        log.info("oracle metrics need SynthAV ground truth; generator %s has none", cfg.generator.name)
    if cfg.evaluation.distribution is not None:
        cfg.evaluation.distribution.reference_files()
    return prompts


def prepare_run(cfg: RunConfig, *, check_models: bool = True) -> RunContext:
    """Validate the config and create (or reopen) the run folder. Writes nothing if validation fails."""
    prompts = validate_config(cfg)
    if check_models:
        for spec in cfg.verifiers:
            get_verifier(spec.name, spec.params).check_ready()
        for name, params in cfg.evaluation.specs():
            get_verifier(name, params).check_ready()
        if cfg.evaluation.distribution is not None:
            for ext in _distribution_extractors(cfg.evaluation.distribution).values():
                ext.check_ready()
    root = Path(cfg.output_root).expanduser()
    _check_writable(root)
    run_id = cfg.resolved_run_id()
    store = RunStore(root, run_id)
    resumed = store.path.exists() and (store.path / "run.json").exists()
    store.create(exist_ok=True)
    if resumed:
        info = store.read_run_json()
        if info.get("config_hash") not in (None, cfg.config_hash()):
            raise ConfigError(
                f"run folder {store.path} holds a run of a different config; set run_id to start a new run"
            )
        store.update_run_json(status="running", resumed_at=time.time(), resumes=int(info.get("resumes", 0)) + 1)
    else:
        store.write_run_json(
            {
                "run_id": run_id,
                "status": "running",
                "config": cfg.model_dump(mode="json"),
                "config_hash": cfg.config_hash(),
                "avits_version": __version__,
                "created_at": time.time(),
                "n_prompts": len(prompts),
                "timings": {},
            }
        )
    log.info("run %s in %s (%s)", run_id, store.path, "resumed" if resumed else "new")
    return RunContext(cfg=cfg, run_id=run_id, root=root, prompts=prompts, store=store)


def open_run(run_path: str | Path) -> RunContext:
    """Reopen a finished (or partial) run from its folder, without loading any model."""
    run_path = Path(run_path)
    if not (run_path / "run.json").exists():
        raise ConfigError(f"{run_path} is not a run folder (no run.json)")
    store = RunStore(run_path.parent, run_path.name)
    info = store.read_run_json()
    from avits_core.config import config_from_dict

    cfg = config_from_dict(info["config"], source=str(run_path / "run.json"))
    prompts = load_prompts(cfg.prompts.source, text_column=cfg.prompts.text_column, limit=cfg.prompts.limit)
    return RunContext(cfg=cfg, run_id=run_path.name, root=run_path.parent, prompts=prompts, store=store)


def record_timing(ctx: RunContext, stage: str, seconds: float) -> None:
    """Add ``seconds`` to run.json's timings[stage] (read-modify-write under the store's lock)."""
    with ctx.store._lock():
        info = ctx.store.read_run_json()
        timings = dict(info.get("timings") or {})
        timings[stage] = round(float(timings.get(stage, 0.0)) + seconds, 4)
        info["timings"] = timings
        ctx.store.write_run_json(info)


# --------------------------------------------------------------------------- generation


def shards(prompts: Sequence[Prompt], size: int) -> list[list[Prompt]]:
    return [list(prompts[i : i + size]) for i in range(0, len(prompts), size)]


def stored_prompt_ids(ctx: RunContext) -> set[str]:
    t = ctx.store.read("candidates")
    return set(t.column("prompt_id").to_pylist()) if t.num_rows else set()


def generate_shard(ctx: RunContext, prompts: Sequence[Prompt]) -> int:
    """Best-of-N generation for a shard of prompts; one candidates part per prompt. Returns #new candidates.

    A prompt whose candidates are already stored is skipped (resume). Media are written before
    the candidate rows, so a crash leaves at worst orphan mp4 files that the rerun overwrites.
    """
    from avits_core.media import write_mp4

    cfg = ctx.cfg
    done = stored_prompt_ids(ctx)
    todo = [p for p in prompts if p.prompt_id not in done]
    total = len(ctx.prompts) * cfg.search.n
    progress.report("generate", (len(prompts) - len(todo)) * cfg.search.n, total)
    if not todo:
        return 0
    gen = get_generator(cfg.generator.name, cfg.generator.params)
    from avits_core.search.best_of_n import generate_candidates

    index = ctx.prompt_index
    made = 0
    for p in todo:
        t0 = time.perf_counter()
        seeds = candidate_seeds(cfg.seed, p.prompt_id, cfg.search.n)
        lat, clips = generate_candidates(gen, p, seeds)
        rows = []
        for i, (clip, seed) in enumerate(zip(clips, seeds)):
            cid = make_candidate_id(p.prompt_id, 0, i)
            rel = Path("media") / p.prompt_id / f"{cid}.mp4"
            (ctx.store.path / rel).parent.mkdir(parents=True, exist_ok=True)
            write_mp4(clip, ctx.store.path / rel)
            truth = clip.meta.get("truth")
            rows.append(
                dict(
                    run_id=ctx.run_id,
                    prompt_id=p.prompt_id,
                    prompt_index=index[p.prompt_id],
                    prompt_text=p.text,
                    candidate_id=cid,
                    search=cfg.search.method,
                    generation=0,
                    step=0,
                    parent_ids=[],
                    seed=int(seed),
                    generator=cfg.generator.name,
                    nfe=int(lat.nfe[i]),
                    media_path=str(rel),
                    latent_path=None,
                    truth=json.dumps(truth) if truth is not None else None,
                )
            )
        ctx.store.append("candidates", rows)
        made += len(rows)
        progress.report("generate", len(rows), total)
        log.info("%s: %d candidates in %.2fs", p.prompt_id, len(rows), time.perf_counter() - t0)
    return made


# --------------------------------------------------------------------------- scoring


#: Scoring buffers reward rows and writes one part file per this many rows or seconds, whichever
#: comes first: few, large parts keep DuckDB fast on big runs (1,000 prompts x 64 candidates gives
#: 16 parts per verifier instead of 1,000), and a crash loses at most this much scoring work.
#: Both can be changed through the environment (AVITS_SCORE_FLUSH_ROWS, AVITS_SCORE_FLUSH_SECONDS).
SCORE_FLUSH_ROWS = int(os.environ.get("AVITS_SCORE_FLUSH_ROWS", "4096"))
SCORE_FLUSH_SECONDS = float(os.environ.get("AVITS_SCORE_FLUSH_SECONDS", "10"))


def _read_clip(path: Path) -> "AVClip | Exception":
    """The stored clip, or the exception that reading it raised: a missing or unreadable mp4 becomes an
    error row for that candidate only (Verifier.score records it), never an aborted scoring pass."""
    from avits_core.media import read_mp4

    try:
        return read_mp4(path)
    except Exception as exc:  # noqa: BLE001 - recorded as the candidate's error row
        return exc


def score_verifier(ctx: RunContext, spec: VerifierSpec, *, retry_errors: bool = True) -> dict[str, int]:
    """Score every stored candidate that lacks a row for (verifier, version), event by event.

    Returns counts {"scored": n, "errors": e, "cached": c}. The rewards table is the cache: a pair that
    already has an ok row is never scored again; pairs with only error rows are retried unless
    ``retry_errors`` is False.
    """
    from avits_core.media import read_mp4

    v = get_verifier(spec.name, spec.params)
    cands = ctx.store.read("candidates").to_pylist()
    # DESIGN §4: an ok row is the cache; error rows are retried on the next attempt (the rewards view
    # keeps the ok row over older error rows, so a retry never counts twice).
    done = ctx.store.scored_pairs(v.name, v.cache_version, include_errors=not retry_errors)
    todo = [c for c in cands if c["candidate_id"] not in done]
    counts = {"scored": 0, "errors": 0, "cached": len(cands) - len(todo)}
    stage = f"score {v.name}"
    progress.report(stage, counts["cached"], len(cands))
    if not todo:
        return counts
    G = ctx.n_generations
    index = ctx.prompt_index
    groups: dict[tuple[int, int], list[dict]] = {}
    for c in todo:
        pi = index.get(c["prompt_id"], c["prompt_index"])
        groups.setdefault((pi, c["generation"]), []).append(c)
    prompt_by_id = ctx.prompt_by_id
    buffer: list[dict[str, Any]] = []
    last_flush = time.perf_counter()

    def flush() -> None:
        nonlocal last_flush
        if buffer:
            ctx.store.append("rewards", buffer)
            buffer.clear()
        last_flush = time.perf_counter()

    for (pi, g), group in sorted(groups.items()):
        group.sort(key=lambda c: c["candidate_id"])
        clips = [_read_clip(ctx.store.path / c["media_path"]) for c in group]
        prompts = [prompt_by_id.get(c["prompt_id"]) or Prompt(c["prompt_id"], c["prompt_text"]) for c in group]
        t0 = time.perf_counter()
        res = v.score(clips, prompts)
        wall = (time.perf_counter() - t0) / len(group)
        rows = []
        details = res.details or [None] * len(group)
        for c, value, err, det in zip(group, res.values, res.errors, details):
            rows.append(
                dict(
                    run_id=ctx.run_id,
                    prompt_id=c["prompt_id"],
                    candidate_id=c["candidate_id"],
                    verifier=v.name,
                    verifier_version=v.cache_version,
                    value=None if err else float(value),
                    status="error" if err else "ok",
                    error=err,
                    details=json.dumps(det, sort_keys=True) if det else None,
                    event_seq=pi * G + g,
                    generation=g,
                    wall_s=wall,
                )
            )
            if err:
                log.warning("%s failed on %s: %s", v.name, c["candidate_id"], err)
        buffer.extend(rows)
        if len(buffer) >= SCORE_FLUSH_ROWS or time.perf_counter() - last_flush >= SCORE_FLUSH_SECONDS:
            flush()
        counts["scored"] += sum(r["status"] == "ok" for r in rows)
        counts["errors"] += sum(r["status"] == "error" for r in rows)
        progress.report(stage, len(rows), len(cands))
    flush()
    return counts


# --------------------------------------------------------------------------- selection


def default_spec(cfg: RunConfig) -> "SelectionSpec":
    from avits_core.selection import SelectionSpec

    w = cfg.weights
    return SelectionSpec(
        verifiers=[v.name for v in cfg.verifiers],
        weights=[w[v.name] for v in cfg.verifiers],
        aggregator=cfg.aggregator.name,
        params=dict(cfg.aggregator.params),
        budget=None,
    )


def higher_is_better(names: Iterable[str]) -> dict[str, bool]:
    return {n: bool(VERIFIERS.get_class(n).higher_is_better) for n in names}


def ok_rewards(ctx: RunContext, verifiers: Sequence[str]) -> list[dict[str, Any]]:
    """Current ok reward rows (deduplicated view) of the given verifiers."""
    from avits_core.store.duck import connect

    con = connect(ctx.store.path)
    names = ", ".join("'" + v.replace("'", "''") + "'" for v in verifiers)
    t = con.sql(
        f"SELECT candidate_id, verifier, value, event_seq FROM rewards "
        f"WHERE status = 'ok' AND verifier IN ({names})"
    ).to_arrow_table()
    con.close()
    return t.to_pylist()


def select(ctx: RunContext, spec: "SelectionSpec | None" = None) -> str:
    """Replay the rewards for ``spec`` (default: the run's config) and store trace + selections.

    Idempotent: a selection_id that already has selection rows is not written again, and trace rows
    are not duplicated if a previous attempt died between the two writes. Returns the selection_id.
    """
    from avits_core.selection import replay

    spec = spec or default_spec(ctx.cfg)
    sel_id = spec.selection_id
    existing = ctx.store.read("selections")
    if existing.num_rows and sel_id in set(existing.column("selection_id").to_pylist()):
        log.info("selection %s already stored", sel_id)
        return sel_id
    cands = ctx.store.read("candidates").select(["prompt_id", "candidate_id", "generation"]).to_pylist()
    rewards = ok_rewards(ctx, spec.verifiers)
    res = replay(spec, cands, rewards, higher_is_better(spec.verifiers), [p.prompt_id for p in ctx.prompts])
    trace = ctx.store.read("arw_trace")
    if res.trace and not (trace.num_rows and sel_id in set(trace.column("selection_id").to_pylist())):
        ctx.store.append("arw_trace", res.trace)
    ctx.store.append("selections", [dict(run_id=ctx.run_id, **r) for r in res.selections])
    return sel_id


# --------------------------------------------------------------------------- evaluation


def _evaluation_inputs(ctx: RunContext) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Candidates (id -> row with truth) and ok rewards (id -> verifier -> value), read once per evaluate."""
    from avits_core.store.duck import connect

    cands = {c["candidate_id"]: c for c in ctx.store.read("candidates").select(["candidate_id", "truth"]).to_pylist()}
    con = connect(ctx.store.path)
    rew = con.sql("SELECT candidate_id, verifier, value FROM rewards WHERE status = 'ok'").to_arrow_table().to_pylist()
    con.close()
    by_cand: dict[str, dict[str, float]] = {}
    for r in rew:
        by_cand.setdefault(r["candidate_id"], {})[r["verifier"]] = r["value"]
    return cands, by_cand


def _metric_rows(
    ctx: RunContext, selection_id: str | None, picks: dict[str, str], guided: set[str],
    cands: dict[str, dict[str, Any]], by_cand: dict[str, dict[str, float]],
) -> list[dict[str, Any]]:
    rows = []
    oracle = None
    if ctx.cfg.evaluation.oracle:
        from avits_core.metrics.oracle import oracle_metrics as oracle
    for pid, cid in picks.items():
        if cid is None:
            continue
        base = dict(run_id=ctx.run_id, selection_id=selection_id, prompt_id=pid, candidate_id=cid)
        truth = cands.get(cid, {}).get("truth")
        if oracle is not None and truth:
            for m, val in oracle(json.loads(truth)).items():
                rows.append(dict(base, metric=m, value=float(val), held_out=True, extractor="synthav-truth"))
        for vname, val in sorted(by_cand.get(cid, {}).items()):
            rows.append(dict(base, metric=vname, value=float(val), held_out=vname not in guided, extractor="verifier"))
    return rows


def evaluate(ctx: RunContext, selection_id: str) -> int:
    """Write the metrics rows that are missing for the baseline and for ``selection_id``. Returns #rows.

    Idempotent: a (selection, candidate, metric) that already has a row is not written again, so
    re-evaluating after a rerank scored a new verifier adds just that verifier's rows, to the
    baseline too (the baseline's ``selection_id`` is null). Then :func:`evaluate_distribution` adds
    the set-level FVD/KVD/FAD rows when the config has ``evaluation.distribution``.
    """
    sels = [r for r in ctx.store.read("selections").to_pylist() if r["selection_id"] == selection_id]
    if not sels:
        raise ConfigError(f"no selection {selection_id!r} in run {ctx.run_id}")
    metrics = ctx.store.read("metrics", ["selection_id", "candidate_id", "metric"]).to_pylist()
    have = {(m["selection_id"], m["candidate_id"], m["metric"]) for m in metrics}
    cands = ctx.store.read("candidates").select(["prompt_id", "candidate_id"]).to_pylist()
    first: dict[str, str] = {}
    for c in sorted(cands, key=lambda c: c["candidate_id"]):
        first.setdefault(c["prompt_id"], c["candidate_id"])
    data = _evaluation_inputs(ctx)
    rows = _metric_rows(ctx, None, first, {v.name for v in ctx.cfg.verifiers}, *data)
    rows += _metric_rows(ctx, selection_id, {s["prompt_id"]: s["candidate_id"] for s in sels}, set(sels[0]["verifiers"]), *data)
    rows = [r for r in rows if (r["selection_id"], r["candidate_id"], r["metric"]) not in have]
    ctx.store.append("metrics", rows)
    return len(rows) + evaluate_distribution(ctx, selection_id)


def _distribution_extractors(dist: "DistributionConfig") -> dict[str, Any]:
    """{"video": I3DVideoFeatures, "audio": ClapAudioEmbedding} for the kinds the config sets."""
    from avits_core.metrics.features import ClapAudioEmbedding, I3DVideoFeatures

    out: dict[str, Any] = {}
    if dist.video is not None:
        v = dist.video
        out["video"] = I3DVideoFeatures(v.path, device=v.device, num_frames=v.num_frames, size=v.size,
                                        batch_size=v.batch_size, sampling=v.sampling)
    if dist.audio is not None:
        a = dist.audio
        out["audio"] = ClapAudioEmbedding(a.model_path, device=a.device, batch_size=a.batch_size)
    return out


def _media_features(paths: Sequence[Path], extractors: dict[str, Any], chunk: int = 32) -> dict[str, "FeatureSet"]:
    """Features of the mp4 files, per kind; the files are read ``chunk`` at a time (bounded memory)."""
    from avits_core.media import AVClip, read_mp4, read_video
    from avits_core.metrics.features import FeatureSet, audio_features, video_features

    def video_only(p: Path) -> AVClip:  # no audio track needed (e.g. silent reference videos for FVD)
        frames, fps = read_video(p)
        return AVClip(video=frames, fps=fps, audio=np.zeros(0, np.float32), sample_rate=1, meta={"path": str(p)})

    read = read_mp4 if "audio" in extractors else video_only
    parts: dict[str, list[np.ndarray]] = {k: [] for k in extractors}
    names: dict[str, str] = {}
    for i in range(0, len(paths), chunk):
        clips = [read(p) for p in paths[i:i + chunk]]
        for kind, ext in extractors.items():
            fs = video_features(clips, ext) if kind == "video" else audio_features(clips, ext)
            parts[kind].append(fs.features)
            names[kind] = fs.extractor
    return {k: FeatureSet(np.concatenate(parts[k]), names[k]) for k in extractors if parts[k]}


def evaluate_distribution(ctx: RunContext, selection_id: str) -> int:
    """Set-level FVD / KVD / FAD (``evaluation.distribution``) of the baseline set (the first candidate
    of each prompt) and of ``selection_id``'s set against the reference clips. Returns #rows written.

    One metrics row per (set, metric) with ``prompt_id``/``candidate_id`` null, ``held_out`` true and
    the extractor's name. Idempotent: a (selection_id, metric) that already has a set-level row is not
    computed again (and no model is loaded when nothing is missing). Features are extracted from the
    stored mp4 files (each candidate once, even when both sets hold it). Reference features are cached
    in ``<run>/analysis/reference-features-<extractor>.npz`` under a hash of the reference files
    (path, size, mtime), so a changed reference set is extracted again. A set of fewer than 2 clips
    gets a null value (a distance needs 2 samples per set).
    """
    import hashlib
    import re

    from avits_core.metrics.features import FeatureSet, fad, fvd, kvd_video

    dist = ctx.cfg.evaluation.distribution
    if dist is None:
        return 0
    sels = [r for r in ctx.store.read("selections").to_pylist() if r["selection_id"] == selection_id]
    if not sels:
        raise ConfigError(f"no selection {selection_id!r} in run {ctx.run_id}")
    have = {(m["selection_id"], m["metric"])
            for m in ctx.store.read("metrics", ["selection_id", "candidate_id", "metric"]).to_pylist()
            if m["candidate_id"] is None}
    cands = ctx.store.read("candidates").select(["prompt_id", "candidate_id", "media_path"]).to_pylist()
    media = {c["candidate_id"]: c["media_path"] for c in cands}
    first: dict[str, str] = {}
    for c in sorted(cands, key=lambda c: c["candidate_id"]):
        first.setdefault(c["prompt_id"], c["candidate_id"])
    sets: dict[str | None, list[str]] = {
        None: sorted(first.values()),
        selection_id: sorted(s["candidate_id"] for s in sels if s["candidate_id"] is not None),
    }
    kind_of = {"fvd": "video", "kvd": "video", "fad": "audio"}
    todo = [(sid, m) for sid in sets for m in dist.metric_names() if (sid, m) not in have]
    if not todo:
        return 0
    extractors = {k: e for k, e in _distribution_extractors(dist).items() if k in {kind_of[m] for _, m in todo}}

    # reference features: cached per extractor, keyed by the reference files
    refs = dist.reference_files()
    key = hashlib.sha256(json.dumps([[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in refs]).encode()).hexdigest()
    cache_dir = ctx.store.path / "analysis"
    ref_feats: dict[str, FeatureSet] = {}
    cache_path: dict[str, Path] = {}
    for kind, ext in extractors.items():
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ext.name)[:80]
        cache_path[kind] = cache_dir / f"reference-features-{safe}-{hashlib.sha256(ext.name.encode()).hexdigest()[:8]}.npz"
        if cache_path[kind].is_file():
            with np.load(cache_path[kind]) as z:
                if str(z["key"]) == key and str(z["extractor"]) == ext.name:
                    ref_feats[kind] = FeatureSet(z["features"], ext.name)
                    log.info("reference %s features from %s", kind, cache_path[kind])
    missing = {k: e for k, e in extractors.items() if k not in ref_feats}
    if missing:
        t0 = time.perf_counter()
        new = _media_features(refs, missing)
        cache_dir.mkdir(parents=True, exist_ok=True)
        for kind, fs in new.items():
            fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-", suffix=".npz")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, features=fs.features, key=np.array(key), extractor=np.array(fs.extractor))
            os.replace(tmp, cache_path[kind])
            ref_feats[kind] = fs
        log.info("reference features (%s) of %d clips in %.2fs", ", ".join(new), len(refs), time.perf_counter() - t0)

    # generated features: each needed candidate once
    need = sorted({cid for sid, _ in todo for cid in sets[sid]})
    gen = _media_features([ctx.store.path / media[c] for c in need], extractors) if need else {}
    row_of = {c: i for i, c in enumerate(need)}
    fns = {"fvd": fvd, "kvd": kvd_video, "fad": fad}
    rows = []
    for sid, m in todo:
        kind, ext = kind_of[m], extractors[kind_of[m]]
        ids = sets[sid]
        value, name = None, ext.name
        if len(ids) >= 2:
            part = FeatureSet(gen[kind].features[[row_of[c] for c in ids]], gen[kind].extractor)
            res = fns[m](part, ref_feats[kind])
            value, name = res.value, res.extractor
            log.info("%s %s = %.6g (n=%d generated vs %d reference, %s)", sid or "baseline", m, res.value,
                     res.n_a, res.n_b, res.extractor)
        else:
            log.warning("%s: %s needs at least 2 clips, the set has %d; stored as null", sid or "baseline", m, len(ids))
        rows.append(dict(run_id=ctx.run_id, selection_id=sid, prompt_id=None, candidate_id=None, metric=m,
                         value=value, held_out=True, extractor=name))
    ctx.store.append("metrics", rows)
    return len(rows)


def results_table(ctx: RunContext, selection_id: str) -> list[dict[str, Any]]:
    """Per metric: baseline mean, selected mean, change (selected - baseline), direction."""
    from avits_core.store.duck import connect

    con = connect(ctx.store.path)
    rows = con.sql(
        """
        SELECT metric, bool_or(held_out) FILTER (WHERE selection_id = ?) AS held_out,
               avg(value) FILTER (WHERE selection_id IS NULL) AS baseline,
               avg(value) FILTER (WHERE selection_id = ?) AS selected
        FROM metrics WHERE selection_id IS NULL OR selection_id = ?
        GROUP BY metric ORDER BY metric
        """,
        params=[selection_id, selection_id, selection_id],
    ).to_arrow_table().to_pylist()
    con.close()
    hib = _metric_directions()
    for r in rows:
        if r["baseline"] is not None and r["selected"] is not None:
            r["change"] = r["selected"] - r["baseline"]
        else:
            r["change"] = None
        r["higher_is_better"] = hib.get(r["metric"], True)
    return rows


def _metric_directions() -> dict[str, bool]:
    out: dict[str, bool] = {}
    try:
        from avits_core.metrics.oracle import ORACLE_METRICS

        out.update({k: bool(v["higher_is_better"]) for k, v in ORACLE_METRICS.items()})
    except ImportError:  # pragma: no cover
        pass
    for n in VERIFIERS.names():
        try:
            out[n] = bool(VERIFIERS.get_class(n).higher_is_better)
        except Exception:  # optional dependency missing: default direction
            out.setdefault(n, True)
    from avits_core.metrics.features import DISTRIBUTION_HIGHER_IS_BETTER

    out.update(DISTRIBUTION_HIGHER_IS_BETTER)
    return out


def compute_summary(ctx: RunContext) -> dict[str, Any]:
    """Compute actually spent by the run, from its tables: NFE (each candidate's own passes, so
    inherited EvoSearch prefixes count once), decodes, verifier calls (every rewards row, retries
    included) and errors, scoring events, and wall time per stage (from run.json's timings)."""
    cands = ctx.store.read("candidates", ["prompt_id", "generation", "nfe", "nfe_own"]).to_pylist()
    rew = ctx.store.read("rewards", ["verifier", "status", "event_seq"]).to_pylist()
    per_prompt: dict[str, int] = {}
    full = [c["nfe"] for c in cands if c["generation"] == 0]
    for c in cands:
        own = c["nfe_own"] if c["nfe_own"] is not None else c["nfe"]
        per_prompt[c["prompt_id"]] = per_prompt.get(c["prompt_id"], 0) + int(own)
    calls: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in rew:
        calls[r["verifier"]] = calls.get(r["verifier"], 0) + 1
        if r["status"] != "ok":
            errors[r["verifier"]] = errors.get(r["verifier"], 0) + 1
    total = sum(per_prompt.values())
    nfe_full = max(full) if full else None
    info = ctx.store.read_run_json()
    return {
        "nfe_total": int(total),
        "nfe_per_prompt": per_prompt,
        "nfe_full_sample": nfe_full,
        "best_of_n_equivalent": (total / len(per_prompt) / nfe_full) if per_prompt and nfe_full else None,
        "decodes": len(cands),
        "verifier_calls": calls,
        "verifier_errors": errors,
        "scoring_events": len({r["event_seq"] for r in rew}),
        "wall_s_per_stage": dict(info.get("timings") or {}),
    }


def record_compute(ctx: RunContext) -> dict[str, Any]:
    """Write :func:`compute_summary` into run.json under ``compute``; returns it."""
    summary = compute_summary(ctx)
    ctx.store.update_run_json(compute=summary)
    return summary


def finish_run(ctx: RunContext, status: str = "completed", **extra: Any) -> None:
    ctx.store.update_run_json(status=status, finished_at=time.time(), **extra)
