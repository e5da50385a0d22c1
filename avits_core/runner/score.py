"""Scoring step: rewards rows for the candidates that lack one, one scoring event at a time (in
chunks of :func:`score_chunk_size` clips, so memory does not grow with N).

The rewards table is the cache (DESIGN §4): a (candidate, verifier, version) with an ok row is never
scored again; pairs with only error rows are retried unless ``retry_errors`` is False. The cache is
looked up in the run's in-memory state (read once per process), so scoring one event costs that
event's work only. Verifiers score the stored mp4 files (a missing or unreadable file is an error
row for that candidate only).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from avits_core import progress
from avits_core.config import VerifierSpec
from avits_core.prompts import Prompt
from avits_core.runner.models import get_verifier
from avits_core.threads import compute_slot

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.media import AVClip
    from avits_core.runner.context import RunContext

log = logging.getLogger(__name__)

#: Scoring buffers reward rows and writes one part file per this many rows or seconds, whichever
#: comes first: few, large parts keep DuckDB fast on big runs (1,000 prompts x 64 candidates gives
#: 16 parts per verifier instead of 1,000), and a crash loses at most this much scoring work.
#: Both can be changed through the environment (AVITS_SCORE_FLUSH_ROWS, AVITS_SCORE_FLUSH_SECONDS).
SCORE_FLUSH_ROWS = int(os.environ.get("AVITS_SCORE_FLUSH_ROWS", "4096"))
SCORE_FLUSH_SECONDS = float(os.environ.get("AVITS_SCORE_FLUSH_SECONDS", "10"))
#: Clips decoded and held at once while a verifier scores an event (memory does not grow with N):
#: an event's candidates go to the verifier in chunks of about this many, rounded to a multiple of
#: the verifier's ``batch_size`` so that its batches - and so its numbers, padding included - are
#: the ones it would form over the whole event (AVITS_SCORE_CHUNK_CLIPS).
SCORE_CHUNK_CLIPS = int(os.environ.get("AVITS_SCORE_CHUNK_CLIPS", "32"))


def score_chunk_size(verifier: Any, clips: int | None = None) -> int:
    """Candidates per ``verifier.score`` call: ``clips`` (default :data:`SCORE_CHUNK_CLIPS`) rounded
    down to a multiple of the verifier's ``batch_size`` (at least one batch)."""
    b = getattr(verifier, "batch_size", None)
    b = b if isinstance(b, int) and not isinstance(b, bool) and b > 0 else 1
    want = SCORE_CHUNK_CLIPS if clips is None else clips
    return b * max(1, int(want) // b)


def _read_clip(path: Path) -> "AVClip | Exception":
    """The stored clip, or the exception that reading it raised: a missing or unreadable mp4 becomes an
    error row for that candidate only (Verifier.score records it), never an aborted scoring pass.
    Decoded through the process-wide clip cache, so verifiers scoring the same candidates in one
    process (in turn or in parallel threads) decode each mp4 once (:mod:`avits_core.clipcache`)."""
    from avits_core.clipcache import read_clip

    try:
        return read_clip(path)
    except Exception as exc:  # noqa: BLE001 - recorded as the candidate's error row
        return exc


def score_rows(ctx: "RunContext", spec: VerifierSpec, rows: Sequence[dict[str, Any]], *,
               retry_errors: bool = True, done: set[str] | None = None) -> dict[str, int]:
    """Score the candidate ``rows`` that lack a row for (verifier, version), event by event.

    ``done``: candidate ids already scored (default: the run state's cache). Returns counts
    {"scored": n, "errors": e, "cached": c}.
    """
    v = get_verifier(spec.name, spec.params)
    if done is None:
        st = ctx.state
        todo = [c for c in rows if not st.is_scored(v.name, v.cache_version, c["candidate_id"], retry_errors=retry_errors)]
    else:
        todo = [c for c in rows if c["candidate_id"] not in done]
    state = ctx._state  # kept current when it exists
    counts = {"scored": 0, "errors": 0, "cached": len(rows) - len(todo)}
    stage = f"score {v.name}"
    progress.report(stage, counts["cached"], len(rows))
    if not todo:
        return counts
    E = ctx.n_generations
    index = ctx.prompt_index
    groups: dict[tuple[int, int], list[dict]] = {}
    for c in todo:
        pi = index.get(c["prompt_id"], c.get("prompt_index"))
        groups.setdefault((pi, int(c.get("generation") or 0)), []).append(c)
    prompt_by_id = ctx.prompt_by_id
    buffer: list[dict[str, Any]] = []
    last_flush = time.perf_counter()

    def flush() -> None:
        nonlocal last_flush
        if buffer:
            ctx.store.append("rewards", buffer)
            for r in buffer if state is not None else ():
                state.mark_scored(r["verifier"], r["verifier_version"], r["candidate_id"], r["status"], r["value"])
            buffer.clear()
        last_flush = time.perf_counter()

    size = score_chunk_size(v)
    chunks = []
    for (pi, g), group in sorted(groups.items()):
        group.sort(key=lambda c: c["candidate_id"])
        chunks += [(pi, g, group[i:i + size]) for i in range(0, len(group), size)]
    for pi, g, group in chunks:  # one event's candidates, ``size`` clips in memory at a time
        prompts = [prompt_by_id.get(c["prompt_id"]) or Prompt(c["prompt_id"], c["prompt_text"]) for c in group]
        with compute_slot():  # decoding and scoring: the work the process's compute slots bound
            clips = [_read_clip(ctx.store.path / c["media_path"]) for c in group]
            t0 = time.perf_counter()
            res = v.score(clips, prompts)
            del clips
        wall = (time.perf_counter() - t0) / len(group)
        out = []
        details = res.details or [None] * len(group)
        for c, value, err, det in zip(group, res.values, res.errors, details):
            out.append(dict(
                run_id=ctx.run_id, prompt_id=c["prompt_id"], candidate_id=c["candidate_id"], verifier=v.name,
                verifier_version=v.cache_version, value=None if err else float(value),
                status="error" if err else "ok", error=err,
                details=json.dumps(det, sort_keys=True) if det else None,
                event_seq=pi * E + g, generation=g, wall_s=wall,
            ))
            if err:
                log.warning("%s failed on %s: %s", v.name, c["candidate_id"], err)
        buffer.extend(out)
        if len(buffer) >= SCORE_FLUSH_ROWS or time.perf_counter() - last_flush >= SCORE_FLUSH_SECONDS:
            flush()
        counts["scored"] += sum(r["status"] == "ok" for r in out)
        counts["errors"] += sum(r["status"] == "error" for r in out)
        progress.report(stage, len(out), len(rows))
    flush()
    return counts


def score_verifier(ctx: "RunContext", spec: VerifierSpec, *, retry_errors: bool = True) -> dict[str, int]:
    """Score every stored candidate that lacks a row for (verifier, version) (reranks, tests). Reads the
    candidates and the cache from the tables (once per call)."""
    v = get_verifier(spec.name, spec.params)
    rows = ctx.store.read("candidates").to_pylist()
    done = ctx.store.scored_pairs(v.name, v.cache_version, include_errors=not retry_errors)
    return score_rows(ctx, spec, rows, retry_errors=retry_errors, done=done)
