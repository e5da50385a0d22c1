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

#: name -> parameterless SQL over the views (for ``avits sql RUN -c NAME``).
CANNED: dict[str, str] = {
    "winners": WINNERS_SQL,
    "metric_table": METRIC_TABLE_SQL,
    "reward_wide": REWARD_WIDE_SQL,
    "candidates_per_prompt": CANDIDATES_PER_PROMPT_SQL,
    "rewards_summary": REWARDS_SUMMARY_SQL,
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
