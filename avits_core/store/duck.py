"""DuckDB views over the Parquet tables of one run or of a whole runs root.

``connect(path)`` opens an in-memory DuckDB database (nothing is written to the run folder; the
connection is read-only in practice) with one TEMP view per table:

- ``candidates``, ``arw_trace``, ``selections``, ``metrics``: every row of every part;
- ``rewards_all``: every rewards row (the raw append-only log, retries included);
- ``rewards``: one row per (run_id, candidate_id, verifier, verifier_version): the latest 'ok' row
  if there is one, else the latest 'error' row. "Latest" = highest ``scored_at``, ties broken by
  part file name and row position (deterministic). So an error that was retried successfully
  counts once, as the success, and a retried error still counts once.

``path`` may be a run folder (it has a run.json or a table folder) - the views read
``<run>/<table>/part-*.parquet`` - or a runs root, whose views read
``<root>/*/<table>/part-*.parquet`` and span every run (join on run_id). Parts are read with
``read_parquet(..., union_by_name=true)``, and each view projects exactly the columns of the
current schema (:mod:`avits_core.store.schemas`) with their types: a column that no part has yet
(an older run) appears as NULLs; a table with no parts at all is an empty view with the right
columns. Columns the schema does not know (written by a newer version) are kept after the known
ones.

The views are bound when ``connect`` runs: parts added later ARE seen by later queries (the glob
is re-evaluated), except for a table that had no part at connect time, or a column that appeared
after it - reconnect for those. Temp files of in-flight writers (``.part-*.tmp``) never match.
The session time zone is set to UTC so timestamps come back as ``timestamp[us, tz=UTC]``.

One bad file. ``read_parquet`` over a glob fails as a whole when one file is not Parquet. Binding a
view makes DuckDB read every part's footer (``union_by_name``); only when that fails does ``connect``
open each footer on its own (pyarrow) to find the culprits. A part whose footer cannot be read (truncated, overwritten, not Parquet) is left out with a warning naming it, and
that table's view then reads the explicit list of the good parts (so it does not see parts added
after connect); the other tables are untouched. ``skipped_parts(con)`` lists what was left out.
Damage inside a part with an intact footer surfaces as an error of the query that reads it;
:func:`avits_core.store.parts.corrupt_parts` finds those too (it reads every part in full).
Use ``con.sql(sql).to_arrow_table()`` for Arrow results (``.df()`` would need pandas).

Object storage. ``path`` may be an object-store URL (``s3://bucket/prefix/run``, see
:mod:`avits_core.store.fs`): the run's fsspec filesystem is registered with the connection
(``register_filesystem``; DuckDB needs no httpfs extension) and the views read ``s3://...`` globs
through it. Binding reads each part's footer: one ranged read per part.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from avits_core.store import fs as sfs
from avits_core.store.parts import PART_GLOB, CorruptPart, parquet_source
from avits_core.store.runjson import RUN_JSON
from avits_core.store.schemas import SCHEMAS, TABLE_NAMES, StoreError

log = logging.getLogger(__name__)

__all__ = ["connect", "query", "is_run_folder", "sql_type", "skipped_parts", "VIEWS"]

#: The views connect() creates.
VIEWS: tuple[str, ...] = ("candidates", "rewards", "rewards_all", "arw_trace", "selections", "metrics")

_DEDUPE_KEY = ("run_id", "candidate_id", "verifier", "verifier_version")


def sql_type(t: pa.DataType) -> str:
    """DuckDB type name of an Arrow type used in the schemas."""
    if pa.types.is_string(t):
        return "VARCHAR"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_list(t):
        return f"{sql_type(t.value_type)}[]"
    raise StoreError(f"no DuckDB type for Arrow type {t}")  # pragma: no cover - schemas use only the above


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def is_run_folder(path: str | Path) -> bool:
    """True when ``path`` looks like one run (has run.json or a table folder), False for a runs root."""
    p = sfs.as_path(path)
    return (p / RUN_JSON).is_file() or any((p / t).is_dir() for t in TABLE_NAMES)


def _projection(table: str, present: Sequence[str] | None) -> str:
    cols = []
    have = set(present or ())
    for f in SCHEMAS[table]:
        src = _ident(f.name) if f.name in have else "NULL"
        cols.append(f"CAST({src} AS {sql_type(f.type)}) AS {_ident(f.name)}")
    known = set(SCHEMAS[table].names)
    cols += [_ident(c) for c in (present or ()) if c not in known]
    return ", ".join(cols)


_SKIPPED: dict[int, list[CorruptPart]] = {}


def skipped_parts(con: duckdb.DuckDBPyConnection) -> list[CorruptPart]:
    """The part files ``connect`` left out of this connection's views (unreadable footers)."""
    return list(_SKIPPED.get(id(con), []))


def _footer_problem(path: Path) -> str | None:
    try:
        pq.read_metadata(parquet_source(path))
    except (OSError, pa.ArrowException, ValueError) as exc:
        return " ".join(f"{type(exc).__name__}: {exc}".split())
    return None


def _describe(con: duckdb.DuckDBPyConnection, glob: str, extra: str) -> list[str]:
    """The columns present in the parts of ``glob`` (their footers' union), without DuckDB's extras."""
    src = f"read_parquet({glob}, union_by_name=true, hive_partitioning=false{extra})"
    present = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
    return [c for c in present if not (extra and c in ("filename", "file_row_number"))]


def _posix(p: Any) -> str:
    return str(p) if sfs.is_remote(p) else p.as_posix()


def _glob(root: Any, rel: str) -> list[Any]:
    if not sfs.is_remote(root):
        return sorted(root.glob(rel))
    fs = root.fs
    return [root.joinpath(f[len(root.path) + 1:]) for f in sorted(fs.glob(root.path + "/" + rel))]


def _register(con: duckdb.DuckDBPyConnection, root: Any) -> None:
    fs = root.fs
    try:
        con.register_filesystem(fs)
    except Exception as exc:  # noqa: BLE001 - already registered on this connection
        if "already" not in str(exc).lower():
            raise


def connect(path: str | Path, *, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views ``candidates, rewards, rewards_all, arw_trace, selections, metrics``.

    ``path``: a run folder or a runs root (see the module docstring). ``con``: add the (TEMP) views
    to an existing connection instead of opening a new in-memory one.
    """
    root = sfs.as_path(path)
    if not root.is_dir():
        raise StoreError(f"{root} is not a folder (expected a run folder or a runs root)")
    run = is_run_folder(root)
    if con is None:
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
    if sfs.is_remote(root):
        _register(con, root)
    skipped: list[CorruptPart] = []
    for table in TABLE_NAMES:
        rel = f"{table}/{PART_GLOB}" if run else f"*/{table}/{PART_GLOB}"
        files = _glob(root, rel)
        extra = ", filename=true, file_row_number=true" if table == "rewards" else ""
        has_parts, glob = bool(files), _lit(_posix(root) + "/" + rel)
        present = None
        if files:
            # DuckDB reads every part's footer to bind the view (union_by_name); only when that fails
            # is each footer checked on its own, to name and leave out the unreadable parts
            try:
                present = _describe(con, glob, extra)
            except duckdb.Error:
                bad = [(f, why) for f, why in ((f, _footer_problem(f)) for f in files) if why is not None]
                for f, why in bad:
                    log.warning("%s view: skipping unreadable part file %s (%s)", table, f, why)
                    skipped.append(CorruptPart(f, why, table))
                if not bad:
                    raise
                good = [f for f in files if f not in {b for b, _ in bad}]
                has_parts = bool(good)
                glob = "[" + ", ".join(_lit(_posix(f)) for f in good) + "]"
                present = _describe(con, glob, extra) if good else None
        if has_parts:
            src = f"read_parquet({glob}, union_by_name=true, hive_partitioning=false{extra})"
            select = f"SELECT {_projection(table, present)}"
            if extra:
                select += ", filename AS _part, file_row_number AS _row"
            select += f" FROM {src}"
        else:
            select = f"SELECT {_projection(table, None)}"
            if extra:
                select += ", CAST(NULL AS VARCHAR) AS _part, CAST(NULL AS BIGINT) AS _row"
            select += " WHERE false"
        if table != "rewards":
            con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS {select}")
            continue
        con.execute(f"CREATE OR REPLACE TEMP VIEW _rewards_raw AS {select}")
        con.execute("CREATE OR REPLACE TEMP VIEW rewards_all AS SELECT * EXCLUDE (_part, _row) FROM _rewards_raw")
        key = ", ".join(_DEDUPE_KEY)
        con.execute(
            "CREATE OR REPLACE TEMP VIEW rewards AS SELECT * EXCLUDE (_part, _row, _rn) FROM ("
            f" SELECT *, row_number() OVER (PARTITION BY {key}"
            " ORDER BY (status = 'ok') DESC, scored_at DESC, _part DESC, _row DESC) AS _rn"
            " FROM _rewards_raw) WHERE _rn = 1"
        )
    if skipped:  # kept only for connections that left parts out (an id is reused after a close)
        _SKIPPED[id(con)] = skipped
    else:
        _SKIPPED.pop(id(con), None)
    log.debug("duckdb views over %s (%s)", root, "run" if run else "runs root")
    return con


def query(path: str | Path, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> pa.Table:
    """Run one SQL query against the views of ``path`` (run folder or runs root) and return Arrow."""
    con = connect(path)
    try:
        return con.sql(sql, params=params).to_arrow_table()
    finally:
        con.close()
