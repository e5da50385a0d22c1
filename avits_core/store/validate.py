"""Row validation: rows (a list of dicts or a ``pyarrow.Table``) made into a table that conforms exactly
to one run table's Arrow schema (:mod:`avits_core.store.schemas`), then checked against the table's
own rules. :class:`~avits_core.store.parquet.RunStore` calls :func:`build_table` and
:func:`check_rules` on every append, before anything is written.

Errors are :class:`SchemaError` naming table, column, row and value: unknown table or column
names, a missing required column, a wrong Python/Arrow type (no silent coercion: 1.5 into an
integer column, a string into a list column, a naive datetime, or "3" into a number are all
refused), a null in a non-nullable column, and per-table rules:

- every table: ``run_id`` equals the store's run (filled in when left out);
- candidates: ``candidate_id`` unique in the batch and not already stored (checked against the
  stored ids the caller passes; two writers racing to add the same id are not detected), counts >= 0,
  ``media_path``/``latent_path`` relative and without ``..``; ``prompt_id`` and ``candidate_id``
  safe names (:mod:`avits_core.names`: they become folder and file names);
- selections: ``selection_id`` a safe name;
- rewards: ``status`` is 'ok' (finite value, no error) or 'error' (value null - a NaN is stored as
  null - and a non-empty error message); ``wall_s`` finite and >= 0;
- selections: ``weights`` as long as ``verifiers``; ``score`` null exactly when ``candidate_id`` is
  null; ``budget`` >= 1;
- arw_trace: ``sigma`` > 0 and finite;
- metrics: a NaN value is stored as null ("could not be computed").
JSON columns accept a dict/list (stored as canonical JSON) or a string that parses as JSON.
Defaults: ``created_at``/``scored_at`` = time of the append (UTC), ``parent_ids`` = [].
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from avits_core.names import NAME_MAX, is_safe_name
from avits_core.store.schemas import (
    JSON_COLUMNS,
    SCHEMAS,
    Column,
    SchemaError,
    StoreError,
    canonical_json,
    columns as table_columns,
    schema as table_schema,
)

__all__ = ["build_table", "check_rules"]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _fail(table: str, col: str, row: int | None, msg: str) -> SchemaError:
    where = f"{table}.{col}" + (f" (row {row})" if row is not None else "")
    return SchemaError(f"{where}: {msg}")


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "an integer"
    if pa.types.is_floating(t):
        return "a number"
    if pa.types.is_string(t):
        return "a string"
    if pa.types.is_boolean(t):
        return "a bool"
    if pa.types.is_timestamp(t):
        return "a timezone-aware datetime"
    if pa.types.is_list(t):
        return f"a list of {_type_name(t.value_type)[2:]}s"
    return str(t)  # pragma: no cover


def _check_scalar(t: pa.DataType, v: Any) -> bool:
    if pa.types.is_integer(t):
        return _is_int(v)
    if pa.types.is_floating(t):
        return _is_num(v)
    if pa.types.is_string(t):
        return isinstance(v, str)
    if pa.types.is_boolean(t):
        return isinstance(v, (bool, np.bool_))
    if pa.types.is_timestamp(t):
        return isinstance(v, dt.datetime) and v.tzinfo is not None and v.utcoffset() is not None
    if pa.types.is_list(t):
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple, np.ndarray)):
            return False
        return all(x is not None and _check_scalar(t.value_type, x) for x in v)
    raise AssertionError(t)  # pragma: no cover


def _compatible(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether an Arrow column of type ``src`` may be cast to ``dst`` without changing its meaning."""
    if pa.types.is_null(src):
        return True
    if pa.types.is_integer(dst):
        return pa.types.is_integer(src)
    if pa.types.is_floating(dst):
        return pa.types.is_integer(src) or pa.types.is_floating(src)
    if pa.types.is_string(dst):
        return pa.types.is_string(src) or pa.types.is_large_string(src)
    if pa.types.is_boolean(dst):
        return pa.types.is_boolean(src)
    if pa.types.is_timestamp(dst):
        return pa.types.is_timestamp(src) and src.tz is not None
    if pa.types.is_list(dst):
        return (pa.types.is_list(src) or pa.types.is_large_list(src)) and _compatible(src.value_type, dst.value_type)
    return False  # pragma: no cover


def _default_array(col: Column, n: int, run_id: str, now: dt.datetime) -> pa.Array:
    if col.default == "run_id":
        return pa.array([run_id] * n, type=col.type)
    if col.default == "now":
        return pa.array([now] * n, type=col.type)
    if col.default == "empty_list":
        return pa.array([[] for _ in range(n)], type=col.type)
    return pa.nulls(n, type=col.type)


class _Builder:
    """Turns list[dict] or a pa.Table into a table that conforms exactly to the schema."""

    def __init__(self, table: str, run_id: str):
        self.table = table
        self.run_id = run_id
        self.cols = table_columns(table)
        self.names = {c.name for c in self.cols}
        self.json_cols = set(JSON_COLUMNS.get(table, ()))
        self.now = dt.datetime.now(dt.timezone.utc)

    def _unknown(self, keys: set[str], row: int | None) -> None:
        extra = sorted(keys - self.names)
        if extra:
            raise _fail(self.table, extra[0], row,
                        f"unknown column; {self.table} has {', '.join(c.name for c in self.cols)}")

    def _json(self, col: Column, row: int, v: Any) -> Any:
        if isinstance(v, (dict, list)):
            try:
                return canonical_json(v)
            except StoreError as exc:
                raise _fail(self.table, col.name, row, str(exc)) from None
        if isinstance(v, str):
            try:
                json.loads(v)
            except json.JSONDecodeError as exc:
                raise _fail(self.table, col.name, row, f"{v[:80]!r} is not valid JSON ({exc})") from None
        return v

    def from_rows(self, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
        n = len(rows)
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping):
                raise SchemaError(f"{self.table} (row {i}): expected a dict, got {type(r).__name__}")
            self._unknown(set(r), i)
        arrays = []
        for col in self.cols:
            values: list[Any] = []
            for i, r in enumerate(rows):
                v = r.get(col.name)
                if v is None:
                    if col.name in r and col.default is None and not col.nullable:
                        raise _fail(self.table, col.name, i, "is None but the column is required (not nullable)")
                    if col.name not in r and col.required:
                        raise _fail(self.table, col.name, i, "missing required column")
                    values.append(None)
                    continue
                if col.name in self.json_cols:
                    v = self._json(col, i, v)
                if not _check_scalar(col.type, v):
                    raise _fail(self.table, col.name, i,
                                f"expected {_type_name(col.type)}, got {v!r} ({type(v).__name__})")
                values.append(v)
            try:
                arr = pa.array(values, type=col.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                bad = self._find_bad(col, values)
                raise _fail(self.table, col.name, bad[0] if bad else None,
                            f"value {bad[1]!r} does not fit {col.type} ({exc})" if bad else str(exc)) from None
            if col.default is not None and arr.null_count:
                arr = pc.coalesce(arr, _default_array(col, n, self.run_id, self.now))
            arrays.append(arr)
        return pa.Table.from_arrays(arrays, schema=SCHEMAS[self.table])

    def from_table(self, tbl: pa.Table) -> pa.Table:
        self._unknown(set(tbl.column_names), None)
        n = tbl.num_rows
        arrays = []
        for col in self.cols:
            if col.name not in tbl.column_names:
                if col.required:
                    raise _fail(self.table, col.name, None, "missing required column")
                arrays.append(_default_array(col, n, self.run_id, self.now))
                continue
            src = tbl.column(col.name).combine_chunks()
            if not _compatible(src.type, col.type):
                hint = " (naive timestamps are refused; use tz='UTC')" if pa.types.is_timestamp(src.type) else ""
                raise _fail(self.table, col.name, None, f"Arrow type {src.type} cannot be stored as {col.type}{hint}")
            if col.name in self.json_cols:
                for i, v in enumerate(src.to_pylist()):
                    if v is not None:
                        self._json(col, i, v)
            try:
                arr = src.cast(col.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                bad = self._find_bad(col, src.to_pylist())
                raise _fail(self.table, col.name, bad[0] if bad else None,
                            f"value {bad[1]!r} does not fit {col.type} ({exc})" if bad else str(exc)) from None
            if arr.null_count:
                if col.default is not None:
                    arr = pc.coalesce(arr, _default_array(col, n, self.run_id, self.now))
                elif not col.nullable:
                    i = arr.is_null().to_pylist().index(True)
                    raise _fail(self.table, col.name, i, "is null but the column is required (not nullable)")
            arrays.append(arr)
        return pa.Table.from_arrays(arrays, schema=SCHEMAS[self.table])

    @staticmethod
    def _find_bad(col: Column, values: list[Any]) -> tuple[int, Any] | None:
        for i, v in enumerate(values):
            try:
                pa.array([v], type=col.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                return i, v
        return None


def check_rules(table: str, tbl: pa.Table, run_id: str, existing_ids: set[str] | None) -> pa.Table:
    """Per-table rules (module docstring) on a schema-conformant table; may return a fixed table (NaN -> null).
    ``existing_ids``: the candidate ids already stored (candidates only; None skips that check)."""
    for i, r in enumerate(tbl.column("run_id").to_pylist()):
        if r != run_id:
            raise _fail(table, "run_id", i, f"is {r!r} but this store is run {run_id!r}")

    def nonneg(*names: str) -> None:
        for name in names:
            for i, v in enumerate(tbl.column(name).to_pylist()):
                if v is not None and (not math.isfinite(v) or v < 0):
                    raise _fail(table, name, i, f"must be finite and >= 0, got {v!r}")

    if table == "candidates":
        ids = tbl.column("candidate_id").to_pylist()
        seen: set[str] = set()
        for i, c in enumerate(ids):
            if not c:
                raise _fail(table, "candidate_id", i, "is empty")
            if c in seen:
                raise _fail(table, "candidate_id", i, f"{c!r} appears twice in this batch")
            if existing_ids is not None and c in existing_ids:
                raise _fail(table, "candidate_id", i, f"{c!r} is already stored in this run")
            seen.add(c)
        for name in ("prompt_id", "candidate_id"):  # both become file and folder names under media/
            for i, v in enumerate(tbl.column(name).to_pylist()):
                if not is_safe_name(v, NAME_MAX):
                    raise _fail(table, name, i, f"{v!r} is not a safe name (see avits_core.names): it becomes a path")
        for i, (c, parents) in enumerate(zip(ids, tbl.column("parent_ids").to_pylist())):
            if c in parents:
                raise _fail(table, "parent_ids", i, f"candidate {c!r} lists itself as a parent")
        nonneg("prompt_index", "generation", "step", "nfe", "nfe_own", "batch_index", "wall_s")
        for name in ("media_path", "latent_path"):
            for i, p in enumerate(tbl.column(name).to_pylist()):
                if p is not None and (os.path.isabs(p) or p.startswith(("/", "\\"))):
                    raise _fail(table, name, i, f"{p!r} is absolute; store paths relative to the run folder")
                if p is not None and (".." in Path(p).parts or "\x00" in p):
                    raise _fail(table, name, i, f"{p!r} leaves the run folder ('..'); store paths inside it")
    elif table == "rewards":
        status = tbl.column("status").to_pylist()
        values = tbl.column("value").to_pylist()
        errors = tbl.column("error").to_pylist()
        fixed = False
        for i, (s, v, e) in enumerate(zip(status, values, errors)):
            if s == "ok":
                if v is None or not math.isfinite(v):
                    raise _fail(table, "value", i, f"status is 'ok' but value is {v!r} (must be finite)")
                if e is not None:
                    raise _fail(table, "error", i, f"status is 'ok' but error is {e!r} (must be null)")
            elif s == "error":
                if v is not None:
                    if math.isnan(v):
                        values[i] = None
                        fixed = True
                    else:
                        raise _fail(table, "value", i, f"status is 'error' but value is {v!r} (must be null or NaN)")
                if not e:
                    raise _fail(table, "error", i, "status is 'error' but no error message was given")
            else:
                raise _fail(table, "status", i, f"{s!r} is not one of 'ok', 'error'")
        if fixed:
            idx = tbl.schema.get_field_index("value")
            tbl = tbl.set_column(idx, tbl.schema.field(idx), pa.array(values, type=pa.float64()))
        nonneg("wall_s", "event_seq", "generation")
    elif table == "selections":
        for i, v in enumerate(tbl.column("selection_id").to_pylist()):
            if not is_safe_name(v, NAME_MAX):  # report folders are named by it
                raise _fail(table, "selection_id", i, f"{v!r} is not a safe name (see avits_core.names): it becomes a path")
        for i, (v, w) in enumerate(zip(tbl.column("verifiers").to_pylist(), tbl.column("weights").to_pylist())):
            if len(v) != len(w):
                raise _fail(table, "weights", i, f"has {len(w)} entries but verifiers has {len(v)} ({v!r})")
        for i, (c, s) in enumerate(zip(tbl.column("candidate_id").to_pylist(), tbl.column("score").to_pylist())):
            if c is None and s is not None:
                raise _fail(table, "score", i, f"is {s!r} but candidate_id is null (no candidate: score must be null)")
            if c is not None and (s is None or not math.isfinite(s)):
                raise _fail(table, "score", i, f"is {s!r} for candidate {c!r} (must be finite)")
        for i, b in enumerate(tbl.column("budget").to_pylist()):
            if b is not None and b < 1:
                raise _fail(table, "budget", i, f"must be >= 1 or null (all candidates), got {b!r}")
        nonneg("n_candidates")
    elif table == "arw_trace":
        for i, s in enumerate(tbl.column("sigma").to_pylist()):
            if not (math.isfinite(s) and s > 0):
                raise _fail(table, "sigma", i, f"must be finite and > 0, got {s!r}")
        nonneg("history_n", "event_seq", "generation")
    elif table == "metrics":
        v = tbl.column("value")
        if v.null_count < len(v) and pc.any(pc.is_nan(v)).as_py():
            idx = tbl.schema.get_field_index("value")
            clean = pc.if_else(pc.is_nan(v), pa.scalar(None, pa.float64()), v)
            tbl = tbl.set_column(idx, tbl.schema.field(idx), clean)
    return tbl


def build_table(table: str, rows: Sequence[Mapping[str, Any]] | pa.Table, run_id: str) -> pa.Table | None:
    """``rows`` as a table conforming exactly to ``table``'s schema (defaults filled in); None for zero rows
    (after checking a zero-row Arrow table's column names). SchemaError naming table, column, row, value."""
    table_schema(table)  # validates the name
    b = _Builder(table, run_id)
    if isinstance(rows, pa.Table):
        if rows.num_rows == 0:
            b._unknown(set(rows.column_names), None)
            return None
        return b.from_table(rows)
    if isinstance(rows, (list, tuple)):
        if not rows:
            return None
        return b.from_rows(rows)
    raise SchemaError(f"{table}: rows must be a list of dicts or a pyarrow.Table, got {type(rows).__name__}")
