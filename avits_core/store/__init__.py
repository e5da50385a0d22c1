"""The store: Arrow schemas of the five run tables, atomic Parquet part files, DuckDB views, canned queries.

- :mod:`~avits_core.store.schemas`: one Arrow schema per table and the meaning of every column (DOCS).
- :mod:`~avits_core.store.parquet`: :class:`RunStore` (one run folder: append/read tables, run.json,
  scoring cache) and :func:`list_runs`.
- :mod:`~avits_core.store.duck`: :func:`connect` / :func:`query` (DuckDB views over a run or a runs root).
- :mod:`~avits_core.store.queries`: canned SQL (:data:`CANNED`) and small functions over a connection.
"""

from avits_core.store.duck import VIEWS, connect, query
from avits_core.store.parquet import RunStore, list_runs
from avits_core.store.queries import CANNED, candidates_per_prompt, metric_table, reward_wide, rewards_summary, winners
from avits_core.store.schemas import (
    DOCS,
    SCHEMAS,
    TABLE_DOCS,
    TABLE_NAMES,
    SchemaError,
    StoreError,
    make_selection_id,
    schema,
)

__all__ = [
    "CANNED",
    "DOCS",
    "SCHEMAS",
    "TABLE_DOCS",
    "TABLE_NAMES",
    "VIEWS",
    "RunStore",
    "SchemaError",
    "StoreError",
    "candidates_per_prompt",
    "connect",
    "list_runs",
    "make_selection_id",
    "metric_table",
    "query",
    "reward_wide",
    "rewards_summary",
    "schema",
    "winners",
]
