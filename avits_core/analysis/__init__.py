"""Questions asked of a finished run without generating anything: budgets, ablations, diagnostics.

Everything here reads the stored tables once (:func:`load_run_data`), replays selections in memory
with :func:`avits_core.selection.replay` (the same code the online run and every re-rank use) and
evaluates the picks on per-candidate values: SynthAV's oracle metrics (computed from
``candidates.truth``) and every verifier's stored reward. Nothing is written to the run's tables
(:mod:`avits_core.report.analysis` writes the results under ``<run>/analysis/``), except by
:func:`record_budget_selections`,
which stores budgeted selections through the runner exactly as a re-rank does.

- :func:`bon_at_k`: Best-of-k for k = 1..N from the first k candidates of each prompt (candidate_id
  order, the selection's budget rule), for any selection spec, with the NFE spent per prompt.
- :func:`ablate`: every non-empty subset of the verifiers x every aggregator, one row per
  (subset, aggregator, metric); :func:`ablation_summary` makes the wide table (one row per
  (subset, aggregator), a baseline row first).
- :func:`diagnostics`: gain on the guided verifiers vs gain on the held-out metrics (the
  verifier-hacking indicator), Spearman correlations between verifiers and with the oracle
  metrics, and the Pareto front of each prompt's candidates over the guided verifiers.

Definitions (documented decisions):

- *Baseline*: the first candidate of each prompt (lowest candidate_id), i.e. no search; the same
  baseline the ``metrics`` table uses.
- *Gain* of a metric: ``selected mean - baseline mean`` in the metric's own units, over the prompts
  with a selected candidate (a prompt whose selection is null is left out of the selected mean).
  ``norm_gain`` divides the gain by the metric's population standard deviation over all candidates
  of the run and flips its sign for lower-is-better metrics, so that a positive ``norm_gain`` is
  always an improvement and metrics on different scales can be averaged; it is null when the
  metric is constant over the run.
- *Guided* metrics are the verifiers the selection combined. *Held-out* metrics are the others
  (``held_out`` = not used for selection, as in the ``metrics`` table). The single held-out summary
  number (``held_out_gain``) averages the ``norm_gain`` of the oracle metrics when the run has
  them (SynthAV: ground truth, the only measure that no verifier can be hacked into), else of the
  held-out verifier metrics. ``hacking_gap = guided_gain - held_out_gain``: a large positive gap
  means the search improved what it optimised much more than what it should have improved.
- *Ablation weights*: a subset keeps the run's own (relative) weights of its verifiers, and an
  aggregator that is the run's own keeps the run's parameters, so the full-set row of the run's
  aggregator is exactly the online selection. Other aggregators get their default parameters
  (``zscore``, which needs prior statistics, is therefore not in :data:`DEFAULT_AGGREGATORS`).
- *Several versions of a verifier*: the most recently scored ok value of each (candidate, verifier)
  is used.
- *Spearman correlation*: over the candidates where both values exist; null with fewer than 3
  such candidates or when either side is constant. ``pooled`` uses every candidate of the run,
  ``within_prompt`` is the mean of the per-prompt correlations that are defined.
- *Pareto front*: over the guided verifiers (oriented: higher is better) among the prompt's
  eligible candidates (those with every guided reward, within the budget). With strictly positive
  weights, weighted/minmax/rank/zscore*/arw aggregates are strictly increasing in every verifier,
  so their winner always lies on the front; a winner off the front means a zero weight.

Modules, by job: ``data`` (:class:`RunData`, replay in memory, gains), ``budget`` (BoN@k),
``ablation`` (subsets x aggregators), ``diagnostics`` (hacking gap, correlations, Pareto). Import
the names from here.
"""

from __future__ import annotations

from avits_core.analysis.ablation import DEFAULT_AGGREGATORS, ablate, ablation_specs, ablation_summary
from avits_core.analysis.budget import bon_at_k, budget_wide, record_budget_selections
from avits_core.analysis.data import (
    RunData,
    gain_rows,
    gain_summary,
    load_run_data,
    mean_metrics,
    replay_spec,
    run_spec,
    spec_of_selection,
    stored_specs,
)
from avits_core.analysis.diagnostics import (
    correlations,
    diagnostics,
    diagnostics_table,
    pareto_membership,
    spearman,
)

__all__ = [
    "DEFAULT_AGGREGATORS", "RunData", "ablate", "ablation_specs", "ablation_summary", "bon_at_k", "budget_wide",
    "correlations", "diagnostics", "diagnostics_table", "gain_rows", "gain_summary", "load_run_data",
    "mean_metrics", "pareto_membership", "record_budget_selections", "replay_spec", "run_spec", "spearman",
    "spec_of_selection", "stored_specs",
]
