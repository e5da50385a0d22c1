"""The store: Arrow schemas of the five run tables, atomic Parquet part files, DuckDB views, canned queries.

- :mod:`~avits_core.store.schemas`: one Arrow schema per table and the meaning of every column (DOCS).
- :mod:`~avits_core.store.parquet`: :class:`RunStore` (one run folder: append/read tables, run.json,
  scoring cache) and :func:`list_runs`; it uses
  :mod:`~avits_core.store.validate` (rows made to conform to a table's schema and rules),
  :mod:`~avits_core.store.parts` (atomic part files; :func:`corrupt_parts` / :func:`quarantine_parts`
  for parts nobody can read) and :mod:`~avits_core.store.runjson` (run.json, merged atomically).
- :mod:`~avits_core.store.fs`: local disk or object store (``s3://``).
- :mod:`~avits_core.store.duck`: :func:`connect` / :func:`query` (DuckDB views over a run or a runs root).
- :mod:`~avits_core.store.queries`: canned SQL (:data:`CANNED`) and small functions over a connection.
"""

# Names are loaded on first use (PEP 562): ``avits_core.store.fs`` is imported by every command's
# pre-flight, which must not pay for pyarrow + duckdb (issue 17).
_LAZY = {
    **dict.fromkeys(("VIEWS", "connect", "query"), "duck"),
    **dict.fromkeys(("RunStore", "list_runs"), "parquet"),
    **dict.fromkeys(("corrupt_parts", "quarantine_parts"), "parts"),
    **dict.fromkeys(("CANNED", "candidates_per_prompt", "metric_table", "reward_wide", "rewards_summary", "winners"),
                    "queries"),
    **dict.fromkeys(("DOCS", "SCHEMAS", "TABLE_DOCS", "TABLE_NAMES", "SchemaError", "StoreError", "make_selection_id",
                     "schema"), "schemas"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"avits_core.store.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    if name in ("duck", "parquet", "parts", "queries", "runjson", "schemas", "validate"):  # ``avits_core.store.duck.X`` after ``import avits_core.store``
        import importlib

        return importlib.import_module(f"avits_core.store.{name}")
    raise AttributeError(f"module 'avits_core.store' has no attribute {name!r}")


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
    "corrupt_parts",
    "list_runs",
    "make_selection_id",
    "metric_table",
    "quarantine_parts",
    "query",
    "reward_wide",
    "rewards_summary",
    "schema",
    "winners",
]
