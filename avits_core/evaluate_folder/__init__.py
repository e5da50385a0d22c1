"""Evaluate a folder of generated mp4 files (any model's outputs) without generating anything.

``avits evaluate FOLDER --prompts CSV [--reference DIR] [--protocol javisbench] [--metrics ...]``
is this module behind a thin Prefect flow (``flows/evaluate.py``). Plain Python, no Prefect.

Which file belongs to which prompt (decisions)
    One mp4 per prompt, at the top level of FOLDER. ``naming="id"``: prompt ``P`` is ``P.mp4``. A
    prompt id that cannot be one file name as it is (``/``, ``\\``, a space, any character outside
    ``A-Z a-z 0-9 . _ = + -``, a leading ``.``) is refused before any work with an error naming the
    id and its row: it is never rewritten into another name (the project's rule for every name that
    becomes a path: a rewritten id would no longer be the key the tables join on, and two ids could
    meet in one file). ``naming="javisbench"``: row i of the CSV is ``sample_{i:04d}.mp4``, as
    JavisBench's evaluator expects. ``naming="auto"`` (default) picks ``javisbench`` when every mp4 in
    the folder is named ``sample_<digits>.mp4`` and none of them is a prompt id's file, else ``id``.
    With the JavisBench protocol a ``.wav`` next to an mp4 (same stem) is read as that clip's audio,
    as the evaluator reads ``sample_0000.wav``; otherwise the audio comes from the mp4.

What is never silently skipped
    * a prompt without its file: an error row ("missing: ...") for every metric of that prompt;
    * an mp4 that matches no prompt (an extra clip): a ``ConfigError`` listing them before any work,
      unless ``allow_extra`` (then they are listed in ``evaluation.json`` and logged);
    * an mp4 without an audio stream: error rows for the metrics that read audio, values for the
      video-only ones (``temporal_flickering``, ``clip``...);
    * an unreadable (corrupt) mp4: an error row for every metric of that prompt, naming the file.

Tables (an ``avits`` run folder at ``out``: DuckDB, ``avits sql`` work on it)
    ``rewards``: the per-clip cache, one row per (clip, metric): ``candidate_id`` is
    ``<prompt_id>+<12 hex of the file's blake2b>`` (a safe name, should it become a path), so a clip
    replaced by a new file is scored again;
    ``verifier_version`` is the verifier's ``cache_version``, which includes the protocol. An ``ok``
    row is never recomputed; error rows are retried by the next evaluation.
    ``metrics``: one row per (clip, metric) with ``selection_id`` = the evaluation id (a hash of the
    protocol, the metric specs and the clip set), ``held_out`` true, ``value`` null for an error
    row and ``extractor`` naming the model and protocol (``clip:openai/clip-vit-base-patch32+
    protocol=javisbench``); set-level rows (FVD, KVD, FAD) have null prompt/candidate.
    Set-level metrics compare the readable clips with ``reference``: a folder of real mp4 clips
    (unpaired), or JavisBench's feature cache ``<set>-vanilla-max4s.pt`` (javisbench protocol only;
    reference row i pairs with CSV row i as in the evaluator, which also gives per-category values);
    the features are kept in ``set-features-<evaluation id>.npz``.
    ``summary.json``: laid out like JavisBench's evaluator output (metric keys ``clip_score``,
    ``clap_score``, ``av_align``, ``ib_tv``...; with category columns ``{"overall", "all", "0": [...],
    ...}``, the per-aspect lists indexed by category; without them, one number per metric), so the
    two can be diffed. Means are over the clips that have a value; ``all`` holds null for error rows
    (the evaluator has no error rows: it stops). ``evaluation.json``: provenance (folder, prompts,
    protocol, metric specs and versions, counts, every error by prompt). ``categories.json``: per
    (metric, aspect, category) n / mean / n_failed rows.

Modules, by job
    ``spec`` (the request, metric names, ``--metrics`` parsing), ``match`` (file <-> prompt),
    ``plan`` (:func:`prepare`: every check before any work), ``read`` (decoding one clip),
    ``score`` (per-clip metrics cached in ``rewards``), ``setlevel`` (FVD/KVD/FAD),
    ``summary`` (metrics rows, summary/categories/evaluation JSON). This module re-exports their
    public names and runs them in order in :func:`evaluate_folder`.
"""

from __future__ import annotations

from typing import Any

from avits_core.evaluate_folder.match import ClipEntry, clip_file_name, locate_clips
from avits_core.evaluate_folder.plan import EvalPlan, batches, cached_plan, describe, make_verifier, prepare, refresh_plan
from avits_core.evaluate_folder.read import read_entry
from avits_core.evaluate_folder.score import latest_rewards, pending, score_entries
from avits_core.evaluate_folder.setlevel import (
    load_reference_cache,
    set_extractors,
    set_level_by_category,
    set_level_rows,
)
from avits_core.evaluate_folder.spec import (
    DEFAULT_METRICS,
    JAVISBENCH_CATEGORIES,
    JAVISBENCH_KEYS,
    PROTOCOL_PARAMS,
    PROTOCOLS,
    SET_METRICS,
    EvalSpec,
    parse_metrics,
    spec_from_dict,
    spec_to_dict,
)
from avits_core.evaluate_folder.summary import finish, metric_rows, summarize

__all__ = [
    "DEFAULT_METRICS", "JAVISBENCH_CATEGORIES", "JAVISBENCH_KEYS", "PROTOCOLS", "PROTOCOL_PARAMS", "SET_METRICS",
    "ClipEntry", "EvalPlan", "EvalSpec", "batches", "cached_plan", "clip_file_name", "describe", "evaluate_folder",
    "finish", "latest_rewards", "load_reference_cache", "locate_clips", "make_verifier", "metric_rows",
    "parse_metrics", "pending", "prepare", "read_entry", "refresh_plan", "score_entries", "set_extractors",
    "set_level_by_category", "set_level_rows", "spec_from_dict", "spec_to_dict", "summarize",
]


def evaluate_folder(spec: EvalSpec) -> dict[str, Any]:
    """The whole evaluation in-process (the flow runs the same steps as tasks)."""
    plan = prepare(spec)
    store = plan.store()
    for b in batches(plan):
        score_entries(plan, store, b)
    return finish(plan, store)
