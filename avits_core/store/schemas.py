"""Arrow schemas of the five run tables: the single place where every column is documented.

A run is a folder ``<root>/<run_id>/`` holding ``run.json`` and one sub-folder per table
(``candidates``, ``rewards``, ``arw_trace``, ``selections``, ``metrics``) of Parquet part files.
Tables are long/tidy: one row per the grain given in :data:`TABLE_DOCS`. ``DOCS[table][column]``
says what each column means; :data:`SCHEMAS` gives the Arrow schema (column order, type, whether
the column may be null). ``docs/tables.md`` points here.

Conventions
- Identifiers are strings. Every table carries ``run_id`` so that views over a runs root (all runs
  at once) can be joined run by run.
- Timestamps are ``timestamp[us, tz=UTC]``; a writer that leaves ``created_at``/``scored_at`` out gets
  the time of the append. Naive datetimes are refused (their zone is unknown).
- JSON columns (``candidates.truth``, ``selections.spec``) hold JSON text; a writer may hand a dict,
  which is stored as canonical JSON (sorted keys, no spaces).
- Paths (``media_path``, ``latent_path``) are relative to the run folder, so a run folder can be
  moved or copied as a whole.
- Schema evolution: new columns are only ever added as nullable; readers (RunStore.read, the DuckDB
  views) fill a column that an older part lacks with nulls. Columns are never renamed or retyped.

Decisions where the brief was silent (documented here because this is the documentation):
- Added columns: ``candidates.nfe_own``, ``candidates.batch_index``, ``candidates.wall_s``,
  ``candidates.kind``/``x0_step`` (intermediate-step scoring, issue 16), ``candidates.cuda_visible_devices``
  (sharded runs, issue 15),
  ``rewards.higher_is_better``, ``arw_trace.run_id/weight/created_at``, ``arw_trace.arw_shard`` (which
  ARW state of a per-shard selection wrote the row), ``selections.n_candidates``.
  All added columns are nullable except ``arw_trace.run_id`` (filled automatically by the store).
- ``metrics.prompt_id``/``candidate_id`` became nullable (a relaxation, not a retype) for set-level
  metrics, which describe a whole set of clips rather than one: null says "no single clip" in SQL
  terms (``count(DISTINCT prompt_id)`` and joins on candidate_id ignore it), where a sentinel string
  such as '*' would be counted and joined as if it were a prompt.
- ``metrics.value`` is nullable (a metric that could not be computed for one clip is a null, which
  SQL averages skip) rather than a silent 0.
- :func:`make_selection_id` sorts (verifier, weight) pairs by verifier name and writes every number
  as a float before hashing, so ``weights [1, 2]`` and ``[1.0, 2.0]``, or the same verifiers listed in
  another order with their weights, name the same selection.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from avits_core.errors import SchemaError, StoreError  # defined there, re-exported here

__all__ = [
    "StoreError",
    "SchemaError",
    "Column",
    "TABLES",
    "TABLE_NAMES",
    "SCHEMAS",
    "DOCS",
    "TABLE_DOCS",
    "JSON_COLUMNS",
    "SCHEMA_VERSION",
    "schema",
    "columns",
    "make_selection_id",
    "canonical_json",
]

#: Bumped when a column is added; written into each part file's metadata (``avits.schema_version``).
SCHEMA_VERSION = "1"


TIMESTAMP = pa.timestamp("us", tz="UTC")

Default = Literal["now", "run_id", "empty_list"] | None


@dataclass(frozen=True)
class Column:
    """One column: name, Arrow type, nullability, meaning, and the default the store fills in."""

    name: str
    type: pa.DataType
    nullable: bool
    doc: str
    default: Default = None

    @property
    def required(self) -> bool:
        """A writer must supply a value (non-nullable and no automatic default)."""
        return not self.nullable and self.default is None


def _c(name: str, type_: pa.DataType, doc: str, *, null: bool = False, default: Default = None) -> Column:
    return Column(name, type_, null, doc, default)


_RUN_ID = _c("run_id", pa.string(), "Run identifier = name of the run folder. Filled by the store when left out; "
             "a row whose run_id differs from the store's run is refused.", default="run_id")

TABLES: dict[str, tuple[Column, ...]] = {
    "candidates": (
        _RUN_ID,
        _c("prompt_id", pa.string(), "Stable identifier of the prompt within its prompt set (Prompt.id)."),
        _c("prompt_index", pa.int32(), "0-based position of the prompt in the prompt set; the order in which the "
           "online algorithm visits prompts (event_seq follows it)."),
        _c("prompt_text", pa.string(), "The text prompt given to the generator."),
        _c("candidate_id", pa.string(), "Identifier of the candidate, unique within the run (append refuses a "
           "duplicate of an id already stored or repeated in the same batch)."),
        _c("search", pa.string(), "Name of the search method that produced the candidate (e.g. 'best_of_n', "
           "'evosearch')."),
        _c("generation", pa.int32(), "Search generation (round) that produced the candidate; 0 for Best-of-N and "
           "for EvoSearch's initial population."),
        _c("step", pa.int32(), "Index into the generator's timesteps where the candidate's latent branched off its "
           "parent (was re-noised / mutated); 0 = sampled from pure noise."),
        _c("parent_ids", pa.list_(pa.string()), "candidate_ids of the parents this candidate was derived from; "
           "empty for a candidate sampled from noise. Defaults to [].", default="empty_list"),
        _c("seed", pa.int64(), "Random seed of the candidate's initial noise (or of its mutation noise when it "
           "has parents)."),
        _c("generator", pa.string(), "Generator spec name (e.g. 'synth', 'ltx2'), as in the run config."),
        _c("nfe", pa.int64(), "Denoiser forward passes needed to produce this sample, INCLUDING those inherited "
           "from its ancestry (the cost of this one sample as if made alone; a CFG pair counts 2). Summing nfe "
           "over candidates double-counts shared ancestry: use nfe_own for the total compute of a search."),
        _c("nfe_own", pa.int64(), "Denoiser forward passes spent on this candidate's own segment only (excluding "
           "inherited ones). Sum over a prompt's candidates = compute of the search for that prompt. Null when "
           "the writer did not record it.", null=True),
        _c("batch_index", pa.int32(), "0-based position of the candidate within its (prompt, generation) batch. "
           "The 'first candidate' of a prompt (the baseline) is the lowest (generation, batch_index).", null=True),
        _c("kind", pa.string(), "'final': denoised to the end of the schedule (an answer may only be a final "
           "candidate); 'intermediate': the decoded clean-sample estimate of a latent stopped at step x0_step "
           "(SMC particles, beam candidates, pruned Best-of-N), scored like any candidate and fed to the "
           "aggregator in event_seq order, never selected. Null (older runs) = 'final'.", null=True),
        _c("x0_step", pa.int32(), "Intermediate candidates: the step (index into the generator's timesteps) "
           "whose latent the decoded clean estimate came from; the latent kept at that step is what later "
           "events continue. Null for final candidates.", null=True),
        _c("media_path", pa.string(), "Path of the decoded clip (mp4, H.264 + AAC), relative to the run folder "
           "(normally under media/). Absolute paths are refused."),
        _c("latent_path", pa.string(), "Path of the saved latents (relative to the run folder), or null when "
           "latents were not kept.", null=True),
        _c("truth", pa.string(), "JSON of the scene's ground truth (SynthAV only); null for real generators.",
           null=True),
        _c("wall_s", pa.float64(), "Generation wall time in seconds attributed to this candidate (the batch's "
           "time divided by its size); null when not measured.", null=True),
        _c("cuda_visible_devices", pa.string(), "CUDA_VISIBLE_DEVICES of the process that generated the "
           "candidate (in a sharded run: the worker's GPU, e.g. '1'); null when the variable was not set. "
           "Says where, not what: two runs of one config may differ here and nowhere else.", null=True),
        _c("created_at", TIMESTAMP, "When the row was written (UTC).", default="now"),
    ),
    "rewards": (
        _RUN_ID,
        _c("prompt_id", pa.string(), "Prompt of the scored candidate (as in candidates)."),
        _c("candidate_id", pa.string(), "The scored candidate (candidates.candidate_id)."),
        _c("verifier", pa.string(), "Verifier name (Verifier.name)."),
        _c("verifier_version", pa.string(), "Verifier.version at scoring time; the cache key together with "
           "(candidate_id, verifier), so bumping a version makes every candidate be scored again."),
        _c("value", pa.float64(), "Raw reward as the verifier returned it (not oriented, not normalised). Null "
           "exactly when status='error' (a NaN handed in with status 'error' is stored as null).", null=True),
        _c("status", pa.string(), "'ok' (value is finite) or 'error' (value is null and error says why)."),
        _c("error", pa.string(), "Why scoring failed (exception type and message) when status='error'; null "
           "when 'ok'.", null=True),
        _c("event_seq", pa.int64(), "Scoring event number: one event = one prompt's batch of candidates at one "
           "generation. Numbered in the order the online algorithm consumes them (prompt_index, then "
           "generation), independent of the order scoring tasks actually ran; ARW replays by it."),
        _c("generation", pa.int32(), "Search generation of the candidate (as in candidates)."),
        _c("wall_s", pa.float64(), "Scoring wall time in seconds attributed to this row: the time of the verifier "
           "call on the batch divided by the number of clips in the batch (a share, not a per-clip "
           "measurement)."),
        _c("higher_is_better", pa.bool_(), "Verifier.higher_is_better at scoring time (how to orient value); null "
           "when not recorded.", null=True),
        _c("details", pa.string(), "JSON object of extra per-clip numbers the verifier reported beside value (e.g. "
           "every head of a multi-head reward model, raw and normalised); null when it reports none.", null=True),
        _c("scored_at", TIMESTAMP, "When the score was computed (UTC); 'latest' in the rewards view's dedupe.",
           default="now"),
    ),
    "arw_trace": (
        _RUN_ID,
        _c("selection_id", pa.string(), "The selection (selections.selection_id) whose aggregator produced the "
           "trace."),
        _c("event_seq", pa.int64(), "The scoring event (rewards.event_seq) after which the fit was made."),
        _c("prompt_id", pa.string(), "Prompt of that event."),
        _c("generation", pa.int32(), "Generation of that event."),
        _c("arw_shard", pa.int32(), "The aggregator state the row belongs to: 0 for a run-scope selection (one "
           "state); with selections.spec arw_shards = K > 1 one state per shard of prompts, shard i % K for "
           "the i-th prompt of the prompt order. Filter or group by it to follow one state's fit over "
           "event_seq; null in parts written before the column existed.", null=True),
        _c("verifier", pa.string(), "Verifier whose parameters this row records."),
        _c("log_var", pa.float64(), "Fitted log-variance log(sigma^2) of the verifier's reward after the event."),
        _c("sigma", pa.float64(), "Fitted standard deviation sigma = exp(log_var / 2)."),
        _c("history_n", pa.int64(), "Number of (oriented) rewards of this verifier in the history the fit used."),
        _c("loss_before", pa.float64(), "Fit objective before the update on this event; null on the first event "
                                        "or when the aggregator does not report it.", null=True),
        _c("loss_after", pa.float64(), "Fit objective after the update; null when not reported.", null=True),
        _c("weight", pa.float64(), "Weight the aggregator gives this verifier after the event (as used by "
           "combine); null when not reported.", null=True),
        _c("created_at", TIMESTAMP, "When the row was written (UTC).", default="now"),
    ),
    "selections": (
        _c("selection_id", pa.string(), "make_selection_id(spec): short stable hash of the selection spec "
           "(verifier set, weights, aggregator and its params, budget)."),
        _RUN_ID,
        _c("prompt_id", pa.string(), "The prompt this selection row is for."),
        _c("candidate_id", pa.string(), "The selected candidate; null when the prompt had no eligible candidate "
           "(e.g. every candidate has an error for a required verifier).", null=True),
        _c("score", pa.float64(), "Aggregated score of the selected candidate (aggregator-specific scale); null "
           "exactly when candidate_id is null.", null=True),
        _c("aggregator", pa.string(), "Aggregator name (e.g. 'arw', 'weighted', 'rank')."),
        _c("verifiers", pa.list_(pa.string()), "Verifier names the aggregator combined."),
        _c("weights", pa.list_(pa.float64()), "Static weights aligned with verifiers (same length); equal weights "
           "when the aggregator takes none."),
        _c("budget", pa.int32(), "Maximum number of candidates per prompt considered (the first ones in "
           "(generation, batch_index) order); null = all candidates.", null=True),
        _c("n_candidates", pa.int32(), "Number of candidates actually considered for this prompt; null when not "
           "recorded.", null=True),
        _c("spec", pa.string(), "Canonical JSON of the full selection spec that selection_id hashes."),
        _c("created_at", TIMESTAMP, "When the row was written (UTC).", default="now"),
    ),
    "metrics": (
        _RUN_ID,
        _c("selection_id", pa.string(), "Selection whose chosen clip was evaluated; null = the baseline (the "
           "first candidate of each prompt, i.e. no search).", null=True),
        _c("prompt_id", pa.string(), "Prompt of the evaluated clip; null for a set-level metric (FVD, KVD, FAD: "
           "one row per (selection or baseline, metric) over all its clips).", null=True),
        _c("candidate_id", pa.string(), "The evaluated candidate; null exactly for a set-level metric (see "
           "prompt_id).", null=True),
        _c("metric", pa.string(), "Metric name (e.g. 'oracle_sync_error_ms', 'attr_accuracy', 'fvd')."),
        _c("value", pa.float64(), "Metric value (the metric's own unit and direction, see its docstring); null "
           "when it could not be computed for this clip (SQL averages skip nulls).", null=True),
        _c("held_out", pa.bool_(), "True when this metric was NOT used (as a verifier) for selection, so it "
           "measures real improvement rather than verifier hacking."),
        _c("extractor", pa.string(), "Feature extractor / model behind the metric (name and version), null for "
           "metrics computed from ground truth or pixels directly.", null=True),
        _c("created_at", TIMESTAMP, "When the row was written (UTC).", default="now"),
    ),
}

TABLE_NAMES: tuple[str, ...] = tuple(TABLES)

TABLE_DOCS: dict[str, str] = {
    "candidates": "One row per generated candidate (a decoded clip). Written by generation tasks.",
    "rewards": "One row per (candidate, verifier, verifier_version) scoring attempt; append-only. The DuckDB "
               "view 'rewards' keeps, per (run_id, candidate_id, verifier, verifier_version), one row: the "
               "latest 'ok' row if any, else the latest 'error' row (so a retried error never counts twice); "
               "the view 'rewards_all' shows every row.",
    "arw_trace": "One row per (ARW fit event, verifier): the aggregator's state after each event, per selection.",
    "selections": "One row per (prompt, selection): the candidate a selection spec picked for that prompt.",
    "metrics": "One row per (evaluated clip, metric), for the baseline (selection_id null) and each selection; "
               "set-level distribution metrics (fvd, kvd, fad) have one row per (baseline or selection, metric) "
               "with prompt_id and candidate_id null.",
}

#: Columns holding JSON text (validated on append; dicts are serialised canonically).
JSON_COLUMNS: dict[str, tuple[str, ...]] = {"candidates": ("truth",), "selections": ("spec",)}

SCHEMAS: dict[str, pa.Schema] = {
    t: pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in cols],
                 metadata={"avits.table": t, "avits.schema_version": SCHEMA_VERSION})
    for t, cols in TABLES.items()
}

DOCS: dict[str, dict[str, str]] = {t: {c.name: c.doc for c in cols} for t, cols in TABLES.items()}


def _check_table(table: str) -> str:
    if table not in TABLES:
        raise StoreError(f"unknown table {table!r}; the tables are {', '.join(TABLE_NAMES)}")
    return table


def schema(table: str) -> pa.Schema:
    """The Arrow schema of ``table`` (StoreError for an unknown name)."""
    return SCHEMAS[_check_table(table)]


def columns(table: str) -> tuple[Column, ...]:
    """The Column definitions of ``table`` in schema order (StoreError for an unknown name)."""
    return TABLES[_check_table(table)]


# ---------------------------------------------------------------------------------------------
# selection ids


def _canon(obj: Any, where: str) -> Any:
    """Normalise a spec value: numbers -> float, tuples/sets -> lists, numpy scalars -> Python."""
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():  # numpy scalar
        obj = obj.item()
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (int, float)):
        f = float(obj)
        if not math.isfinite(f):
            raise StoreError(f"selection spec: {where} is {obj!r}; only finite numbers can be hashed")
        return f
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise StoreError(f"selection spec: key {k!r} in {where} is not a string")
            out[k] = _canon(v, f"{where}.{k}" if where else k)
        return out
    if isinstance(obj, (list, tuple)) or (hasattr(obj, "tolist") and callable(obj.tolist)):
        seq = obj.tolist() if not isinstance(obj, (list, tuple)) else obj
        return [_canon(v, f"{where}[{i}]") for i, v in enumerate(seq)]
    if isinstance(obj, (set, frozenset)):
        return sorted(_canon(v, where) for v in obj)
    raise StoreError(f"selection spec: {where or 'spec'} has a value of type {type(obj).__name__} ({obj!r}); "
                     "use JSON types (str, number, bool, None, list, dict)")


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys (the form stored in JSON columns and hashed for ids)."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot serialise to JSON: {exc}") from exc


def make_selection_id(spec: dict[str, Any]) -> str:
    """Short stable id (12 hex chars of SHA-256) of the canonical JSON of a selection spec.

    The spec should hold everything that changes the selection: the verifier set, weights, the
    aggregator with its params, and the budget. Canonicalisation: keys sorted; numbers written as
    floats (``1`` == ``1.0``); tuples/sets as lists; when the spec has ``verifiers`` and ``weights``
    lists of equal length, the (verifier, weight) pairs are sorted by verifier name (a weights mapping
    is sorted by its keys anyway). Non-finite numbers and non-JSON values raise StoreError.
    """
    if not isinstance(spec, dict):
        raise StoreError(f"selection spec must be a dict, got {type(spec).__name__}")
    c = _canon(spec, "")
    v, w = c.get("verifiers"), c.get("weights")
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        if isinstance(w, list) and len(w) == len(v):
            pairs = sorted(zip(v, w), key=lambda p: p[0])
            c["verifiers"], c["weights"] = [p[0] for p in pairs], [p[1] for p in pairs]
        elif not isinstance(w, list):
            c["verifiers"] = sorted(v)
    return hashlib.sha256(canonical_json(c).encode("utf-8")).hexdigest()[:12]
