"""The steps of one ITS run as plain functions over the run's tables (no Prefect here).

The Prefect tasks in ``tasks/`` are one-line wrappers around these functions, so every step is
testable as plain Python, and a run can also be driven without Prefect (:func:`run`).

Modules, by job:
  context     RunContext (config, prompts, store, search method, search state); prepare_run runs the
              pre-flight checks (avits_core.preflight) BEFORE anything is written; open_run
  models      the process-wide generator / verifier cache
  state       the search state over the tables (read once per process), plans and latents on disk
  generate    one (prompt, event) of any search method: plan, generate, store media/latents/rows
  score       rewards: only (candidate, verifier, version) pairs with no ok row yet
  select      arw_trace + selections: replays rewards in event_seq order
  evaluate    metrics of the baseline (first candidate of each prompt) and of a selection
  accounting  NFE, decodes, verifier calls, wall time -> run.json ``compute``
  lineage     a prompt's family tree
  loop        the schedule of (prompt, event) waves and the plain-Python driver

Missing-reward policy (documented decision): a candidate whose reward is missing (an error row, or
not scored yet) for any verifier of a selection is left out of that selection's replay entirely:
its other rewards do not enter ARW's history and it cannot be selected. A prompt with no eligible
candidate gets a selection row with a null candidate_id. Ties: the lowest candidate index wins.

Event order: ``event_seq = prompt_index * n_events + event`` (prompt order, then event), fixed by
the config, so the replay is identical whichever order scoring ran in.
"""

from avits_core.metrics.distribution import _distribution_extractors, _media_features, evaluate_distribution  # noqa: F401
from avits_core.runner.accounting import compute_summary, record_compute
from avits_core.runner.context import (
    RunContext,
    _check_writable,
    finish_run,
    open_run,
    prepare_run,
    record_timing,
    shards,
    validate_config,
)
from avits_core.runner.evaluate import _evaluation_inputs, _metric_directions, _metric_rows, evaluate, results_table  # noqa: F401
from avits_core.runner.generate import generate_event, generate_events, generate_shard, start_search
from avits_core.runner.lineage import lineage_tree
from avits_core.runner.loop import Wave, run, run_search, schedule, timed
from avits_core.runner.models import get_generator, get_verifier
from avits_core.runner.score import SCORE_FLUSH_ROWS, SCORE_FLUSH_SECONDS, _read_clip, score_rows, score_verifier  # noqa: F401
from avits_core.runner.select import default_spec, higher_is_better, ok_rewards, select
from avits_core.runner.state import RunState, read_plan

__all__ = [
    "RunContext", "RunState", "Wave", "compute_summary", "default_spec", "evaluate", "evaluate_distribution",
    "finish_run", "generate_event", "generate_events", "generate_shard", "get_generator", "get_verifier",
    "higher_is_better", "lineage_tree", "ok_rewards", "open_run", "prepare_run", "read_plan", "record_compute",
    "record_timing", "results_table", "run", "run_search", "schedule", "score_rows", "score_verifier", "select",
    "shards", "start_search", "timed", "validate_config",
]
