"""Canned queries over the DuckDB views of :mod:`avits_core.store.duck`.

Each query is a parameterless SQL string in :data:`CANNED` (so ``avits sql RUN -c NAME`` can run it
as is, over one run or a runs root) and a small function that runs it on a connection, with an
optional filter, returning a ``pyarrow.Table``. All queries read the deduplicated ``rewards`` view.

- ``winners``: one row per (run, selection, prompt, verifier that scored the winner): the selected
  candidate, its aggregated score and its raw reward from every verifier (``used`` says whether the
  selection combined that verifier). A prompt with no selected candidate gives one row with null
  candidate and verifier columns.
- ``metric_table``: per (selection, metric): mean over the baseline rows (selection_id IS NULL) of
  the runs where that selection was evaluated, mean over the selection's rows, and
  ``change = selected_mean - baseline_mean`` (in the metric's own direction: for a lower-is-better
  metric a negative change is an improvement). Null values are skipped by the means; the n columns
  count non-null values.
- ``reward_wide``: one row per scored candidate, one column per verifier (DuckDB PIVOT) holding its
  raw reward (null on error). When a verifier was scored under several versions, the most recently
  scored one wins. Candidates with no rewards row are absent.
- ``candidates_per_prompt``: per (run, prompt): candidate and generation counts, NFE, and how many
  reward rows are ok / error.
- ``rewards_summary``: per (run, verifier, version): ok/error counts and the value distribution.
- ``bon_at_k``: Best-of-k curves from the stored, evaluated selections: per (run, aggregator,
  verifiers, weights, aggregator params) x k x metric, the mean metric over the prompts' selected
  candidates (from ``metrics``; a selection that was never evaluated has no rows), ``held_out``, the
  number of prompts with a value, and ``nfe_per_prompt``: the mean over prompts of the NFE of their
  first k candidates in candidate_id order (``nfe_own`` where recorded, else ``nfe``), the
  candidates a budget-k selection may choose from. ``k`` is the selection's ``budget`` (written by
  ``avits rerank --budget K`` and ``avits budget``), capped at N, the most candidates any prompt of
  the run has; a selection without a budget is the point k = N (``budget`` null), so the online
  run's own selection always gives the end of the curve.
- ``ablation``: the ablation table(s) that ``avits ablate`` wrote to ``<run>/analysis/ablation.parquet``
  (of this run, or of every run under a runs root that has one), one row per (run, verifier subset,
  aggregator): n_prompts and the mean normalised gains (see :mod:`avits_core.analysis`):
  ``guided_gain`` over the subset's verifiers, ``held_out_gain`` over the oracle metrics when the
  table has them (else over the held-out verifiers), ``hacking_gap`` = their difference, and
  ``oracle_gain`` / ``held_out_verifier_gain`` separately. The run folders are found from the paths
  of the rewards part files (the ``_rewards_raw`` view of :mod:`avits_core.store.duck`); the query
  is a short script that first sets three DuckDB variables (``avits_ablation_*``), so it runs as is
  through ``con.sql`` and ``avits sql RUN -c ablation``. With no ablation file it returns no rows
  (with the same columns), like every canned query on a run that lacks the data; ``avits ablate RUN``
  writes the file.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

__all__ = [
    "CANNED",
    "WINNERS_SQL",
    "METRIC_TABLE_SQL",
    "REWARD_WIDE_SQL",
    "CANDIDATES_PER_PROMPT_SQL",
    "REWARDS_SUMMARY_SQL",
    "winners",
    "metric_table",
    "reward_wide",
    "candidates_per_prompt",
    "rewards_summary",
    "run_canned",
]

_PROMPTS_CTE = """prompts AS (
    SELECT run_id, prompt_id, min(prompt_index) AS prompt_index, any_value(prompt_text) AS prompt_text
    FROM candidates GROUP BY run_id, prompt_id
)"""

WINNERS_SQL = f"""WITH {_PROMPTS_CTE}
SELECT s.run_id, s.selection_id, s.prompt_id, p.prompt_index, s.candidate_id, s.score, s.aggregator,
       r.verifier, r.verifier_version, r.value, r.status,
       list_contains(s.verifiers, r.verifier) AS used
FROM selections s
LEFT JOIN prompts p ON p.run_id = s.run_id AND p.prompt_id = s.prompt_id
LEFT JOIN rewards r ON r.run_id = s.run_id AND r.candidate_id = s.candidate_id
ORDER BY s.run_id, s.selection_id, p.prompt_index NULLS LAST, s.prompt_id, r.verifier, r.verifier_version"""

METRIC_TABLE_SQL = """WITH sel AS (
    SELECT selection_id, metric, bool_or(held_out) AS held_out, count(value) AS n_selected,
           avg(value) AS selected_mean
    FROM metrics WHERE selection_id IS NOT NULL GROUP BY selection_id, metric
), sel_runs AS (
    SELECT DISTINCT selection_id, run_id FROM metrics WHERE selection_id IS NOT NULL
), base AS (
    SELECT sr.selection_id, m.metric, bool_or(m.held_out) AS held_out, count(m.value) AS n_baseline,
           avg(m.value) AS baseline_mean
    FROM sel_runs sr JOIN metrics m ON m.run_id = sr.run_id AND m.selection_id IS NULL
    GROUP BY sr.selection_id, m.metric
)
SELECT coalesce(sel.selection_id, base.selection_id) AS selection_id,
       coalesce(sel.metric, base.metric) AS metric,
       coalesce(sel.held_out, base.held_out) AS held_out,
       coalesce(base.n_baseline, 0) AS n_baseline, base.baseline_mean,
       coalesce(sel.n_selected, 0) AS n_selected, sel.selected_mean,
       sel.selected_mean - base.baseline_mean AS change
FROM sel FULL OUTER JOIN base ON sel.selection_id = base.selection_id AND sel.metric = base.metric
ORDER BY selection_id, held_out, metric"""

REWARD_WIDE_SQL = """PIVOT (
    SELECT r.run_id, r.prompt_id, p.prompt_index, r.candidate_id, r.generation, r.verifier, r.value, r.scored_at
    FROM rewards r
    LEFT JOIN (SELECT run_id, prompt_id, min(prompt_index) AS prompt_index FROM candidates
               GROUP BY run_id, prompt_id) p
      ON p.run_id = r.run_id AND p.prompt_id = r.prompt_id
)
ON verifier USING arg_max(value, scored_at)
GROUP BY run_id, prompt_id, prompt_index, candidate_id, generation
ORDER BY run_id, prompt_index NULLS LAST, prompt_id, generation, candidate_id"""

CANDIDATES_PER_PROMPT_SQL = """WITH c AS (
    SELECT run_id, prompt_id, min(prompt_index) AS prompt_index, any_value(prompt_text) AS prompt_text,
           count(*) AS n_candidates, count(DISTINCT generation) AS n_generations,
           max(generation) AS max_generation, max(nfe) AS max_nfe,
           CASE WHEN count(nfe_own) = count(*) THEN sum(nfe_own) END AS total_nfe
    FROM candidates GROUP BY run_id, prompt_id
), r AS (
    SELECT run_id, prompt_id, count(*) FILTER (WHERE status = 'ok') AS n_rewards_ok,
           count(*) FILTER (WHERE status = 'error') AS n_rewards_error
    FROM rewards GROUP BY run_id, prompt_id
)
SELECT c.run_id, c.prompt_id, c.prompt_index, c.prompt_text, c.n_candidates, c.n_generations,
       c.max_generation, c.max_nfe, c.total_nfe,
       coalesce(r.n_rewards_ok, 0) AS n_rewards_ok, coalesce(r.n_rewards_error, 0) AS n_rewards_error
FROM c LEFT JOIN r ON r.run_id = c.run_id AND r.prompt_id = c.prompt_id
ORDER BY c.run_id, c.prompt_index, c.prompt_id"""

REWARDS_SUMMARY_SQL = """SELECT run_id, verifier, verifier_version,
       count(*) FILTER (WHERE status = 'ok') AS n_ok, count(*) FILTER (WHERE status = 'error') AS n_error,
       avg(value) AS mean, stddev_samp(value) AS std, min(value) AS min, max(value) AS max,
       sum(wall_s) AS wall_s
FROM rewards GROUP BY run_id, verifier, verifier_version
ORDER BY run_id, verifier, verifier_version"""

BON_AT_K_SQL = """WITH ranked AS (
    SELECT run_id, prompt_id, coalesce(nfe_own, nfe) AS nfe_c,
           row_number() OVER (PARTITION BY run_id, prompt_id ORDER BY candidate_id) AS pos
    FROM candidates
), nmax AS (
    SELECT run_id, max(pos) AS n_max FROM ranked GROUP BY run_id
), sel AS (
    SELECT DISTINCT s.run_id, s.selection_id, s.aggregator, array_to_string(s.verifiers, '+') AS verifiers,
           s.weights, CAST(json_extract(s.spec, '$.params') AS VARCHAR) AS params, s.budget,
           least(coalesce(s.budget, x.n_max), x.n_max) AS k
    FROM selections s JOIN nmax x ON x.run_id = s.run_id
), nfe AS (
    SELECT s.run_id, s.selection_id, sum(r.nfe_c) / count(DISTINCT r.prompt_id) AS nfe_per_prompt
    FROM sel s JOIN ranked r ON r.run_id = s.run_id AND r.pos <= s.k
    GROUP BY s.run_id, s.selection_id
), m AS (
    SELECT run_id, selection_id, metric, bool_or(held_out) AS held_out, count(value) AS n_prompts, avg(value) AS value
    FROM metrics WHERE selection_id IS NOT NULL GROUP BY run_id, selection_id, metric
)
SELECT s.run_id, s.aggregator, s.verifiers, s.weights, s.params, s.k, s.budget, n.nfe_per_prompt,
       m.metric, m.held_out, m.n_prompts, m.value, s.selection_id
FROM sel s JOIN m ON m.run_id = s.run_id AND m.selection_id = s.selection_id
JOIN nfe n ON n.run_id = s.run_id AND n.selection_id = s.selection_id
ORDER BY s.run_id, s.aggregator, s.verifiers, s.params, m.held_out DESC, m.metric, s.k, s.budget NULLS LAST"""

_ABLATION_SUMMARY = """SELECT regexp_extract(filename, '([^/]+)/analysis/ablation[.]parquet$', 1) AS run_id,
       verifiers, any_value(n_verifiers) AS n_verifiers, aggregator, any_value(selection_id) AS selection_id,
       max(n_prompts) AS n_prompts,
       avg(norm_gain) FILTER (WHERE guided) AS guided_gain,
       CASE WHEN bool_or(oracle) THEN avg(norm_gain) FILTER (WHERE oracle)
            ELSE avg(norm_gain) FILTER (WHERE held_out) END AS held_out_gain,
       avg(norm_gain) FILTER (WHERE guided)
         - CASE WHEN bool_or(oracle) THEN avg(norm_gain) FILTER (WHERE oracle)
                ELSE avg(norm_gain) FILTER (WHERE held_out) END AS hacking_gap,
       avg(norm_gain) FILTER (WHERE oracle) AS oracle_gain,
       avg(norm_gain) FILTER (WHERE held_out AND NOT oracle) AS held_out_verifier_gain
FROM read_parquet(getvariable('avits_ablation_files'), union_by_name=true, filename=true)
GROUP BY ALL
ORDER BY run_id, n_verifiers, verifiers, aggregator"""

_ABLATION_EMPTY = """SELECT NULL::VARCHAR AS run_id, NULL::VARCHAR AS verifiers, NULL::BIGINT AS n_verifiers,
       NULL::VARCHAR AS aggregator, NULL::VARCHAR AS selection_id, NULL::BIGINT AS n_prompts,
       NULL::DOUBLE AS guided_gain, NULL::DOUBLE AS held_out_gain, NULL::DOUBLE AS hacking_gap,
       NULL::DOUBLE AS oracle_gain, NULL::DOUBLE AS held_out_verifier_gain
WHERE false"""


def _sql_string(sql: str) -> str:
    return "'" + sql.replace("'", "''") + "'"


ABLATION_SQL = f"""SET VARIABLE avits_ablation_dirs = (
    SELECT list(DISTINCT regexp_replace(_part, '/rewards/[^/]*$', '')) FROM _rewards_raw);
SET VARIABLE avits_ablation_glob = (
    SELECT CASE WHEN d IS NULL OR len(d) = 0 THEN NULL
                WHEN len(d) = 1 THEN d[1] ELSE regexp_replace(d[1], '/[^/]*$', '') || '/*' END
           || '/analysis/ablation.parquet'
    FROM (SELECT getvariable('avits_ablation_dirs') AS d));
SET VARIABLE avits_ablation_files = (
    SELECT list(file ORDER BY file) FROM glob(coalesce(getvariable('avits_ablation_glob'), '')));
SELECT * FROM query(CASE WHEN getvariable('avits_ablation_files') IS NULL THEN {_sql_string(_ABLATION_EMPTY)}
                         ELSE {_sql_string(_ABLATION_SUMMARY)} END)"""

#: name -> parameterless SQL over the views (for ``avits sql RUN -c NAME``).
CANNED: dict[str, str] = {
    "winners": WINNERS_SQL,
    "metric_table": METRIC_TABLE_SQL,
    "reward_wide": REWARD_WIDE_SQL,
    "candidates_per_prompt": CANDIDATES_PER_PROMPT_SQL,
    "rewards_summary": REWARDS_SUMMARY_SQL,
    "bon_at_k": BON_AT_K_SQL,
    "ablation": ABLATION_SQL,
}


def run_canned(con: duckdb.DuckDBPyConnection, name: str) -> pa.Table:
    """Run ``CANNED[name]``; an unknown name raises UnknownNameError listing the known ones."""
    from avits_core.errors import UnknownNameError

    if name not in CANNED:
        raise UnknownNameError(f"unknown canned query {name!r}; known: {', '.join(sorted(CANNED))}")
    return con.sql(CANNED[name]).to_arrow_table()


def _filtered(con: duckdb.DuckDBPyConnection, sql: str, selection_id: str | None) -> pa.Table:
    if selection_id is None:
        return con.sql(sql).to_arrow_table()
    return con.sql(f"SELECT * FROM ({sql}) WHERE selection_id = $sel", params={"sel": selection_id}).to_arrow_table()


def winners(con: duckdb.DuckDBPyConnection, selection_id: str | None = None) -> pa.Table:
    """The selected candidate per prompt with its reward per verifier (all selections when None)."""
    return _filtered(con, WINNERS_SQL, selection_id)


def metric_table(con: duckdb.DuckDBPyConnection, selection_id: str | None = None) -> pa.Table:
    """Per metric: baseline mean, selected mean and change for ``selection_id`` (all selections when None)."""
    return _filtered(con, METRIC_TABLE_SQL, selection_id)


def reward_wide(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """One row per scored candidate, one column per verifier (raw reward, null on error)."""
    return con.sql(REWARD_WIDE_SQL).to_arrow_table()


def candidates_per_prompt(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Per (run, prompt): n_candidates, n_generations, max_generation, max_nfe, total_nfe, reward ok/error counts."""
    return con.sql(CANDIDATES_PER_PROMPT_SQL).to_arrow_table()


def rewards_summary(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Per (run, verifier, version): n_ok, n_error, mean/std/min/max of value, total scoring wall_s."""
    return con.sql(REWARDS_SUMMARY_SQL).to_arrow_table()


def bon_at_k(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Per (run, spec without budget, k, metric): mean metric of the stored budget-k selections and NFE per prompt."""
    return con.sql(BON_AT_K_SQL).to_arrow_table()


def ablation(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Per (run, verifier subset, aggregator) of the stored ablation table(s): guided / held-out gains, hacking gap."""
    return con.sql(ABLATION_SQL).to_arrow_table()
