"""RunStore: one run folder of atomic Parquet part files, plus run.json.

Layout::

    <root>/<run_id>/
        run.json                      resolved config, versions, timings, status
        media/                        clips (paths in the tables are relative to the run folder)
        candidates/part-<uuid>.parquet
        rewards/part-<uuid>.parquet
        arw_trace/ selections/ metrics/

Writes. ``append(table, rows)`` validates the rows against the table's schema
(:mod:`avits_core.store.schemas`), writes ONE new part file under a hidden temporary name in the
table's folder (``.part-<uuid>.parquet.<pid>.tmp``), fsyncs it and ``os.replace``-s it to
``part-<uuid>.parquet``. A crash leaves at most a hidden temp file, which every reader ignores
(readers only look at ``part-*.parquet``) and :meth:`RunStore.cleanup_temp` removes; concurrent
writers (threads or processes) never collide because every part has its own uuid. Nothing is
ever rewritten: every table is append-only.

Validation (errors are :class:`SchemaError` naming table, column, row and value): unknown table or
column names, a missing required column, a wrong Python/Arrow type (no silent coercion: 1.5 into
an integer column, a string into a list column, a naive datetime, or "3" into a number are all
refused), a null in a non-nullable column, and per-table rules:

- every table: ``run_id`` equals this store's run (filled in when left out);
- candidates: ``candidate_id`` unique in the batch and not already stored (checked against the
  stored parts; two writers racing to add the same id are not detected), counts >= 0,
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

Reads. ``read(table)`` concatenates every part, conformed to the current schema (a part written
before a nullable column existed gets nulls there; unknown extra columns are dropped). Row order
is not meaningful; sort explicitly.

One bad file. A part that cannot be read (truncated, overwritten, not Parquet, a column of an
incompatible type) is skipped by ``read`` with a warning naming the file (once per file and
process), and listed in ``RunStore.skipped_parts``: the rest of the table stays readable
(``read(table, strict=True)`` raises instead). :func:`corrupt_parts` lists every such part of a run
with the reason (it reads each part in full), and :func:`quarantine_parts` moves them aside to
``<run>/quarantine/<table>/`` where no reader looks (``avits doctor RUN --quarantine``). The rows of
a skipped part are missing from every reader until it is repaired and moved back; a resumed run
redoes what they held (scores are recomputed, a missing candidate is generated again).

Cache. ``scored_pairs(verifier, version)`` returns the candidate_ids that already have a rewards
row for that verifier and version, 'ok' or 'error' (so a clip that deterministically fails is not
retried forever); pass ``include_errors=False`` to retry errors. The DuckDB ``rewards`` view then
shows one row per (run_id, candidate_id, verifier, verifier_version): the latest 'ok' row if any,
else the latest 'error' row (see :mod:`avits_core.store.duck`).

run.json is written atomically (temp + replace); ``update_run_json`` merges under an exclusive
file lock (``fcntl.flock`` on ``.run.json.lock``; a process-local lock where fcntl is missing),
recursively for dict values so that concurrent tasks can each add their own ``timings`` entry.

Object storage. ``root`` may be an object-store URL (``s3://bucket/prefix``; see
:mod:`avits_core.store.fs`): ``self.path`` is then a ``UPath``. A part file is serialised in memory
and written in ONE PUT (atomic on S3: readers see the whole object or nothing; no temp name, so
there is nothing for ``cleanup_temp`` to remove); parts are read with one GET each. run.json is
written whole; ``update_run_json`` / ``modify_run_json`` are a compare-and-swap on the object's ETag
(a conditional PUT with ``If-Match``, retried on a conflict), so concurrent writers on several
machines each get their change in. ``quarantine_parts`` moves objects with the filesystem's ``mv``
(copy + delete: not atomic, nothing is lost).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from avits_core.names import NAME_MAX, UnsafePathError, inside, is_safe_name
from avits_core.store import fs as sfs
from avits_core.store.schemas import (
    JSON_COLUMNS,
    SCHEMAS,
    TABLE_NAMES,
    Column,
    SchemaError,
    StoreError,
    canonical_json,
    columns as table_columns,
    schema as table_schema,
)

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

__all__ = ["RunStore", "list_runs", "RUN_JSON", "MEDIA_DIR", "PART_GLOB", "QUARANTINE_DIR", "CorruptPart",
           "corrupt_parts", "quarantine_parts", "part_problem"]

RUN_JSON = "run.json"
MEDIA_DIR = "media"
PART_GLOB = "part-*.parquet"
QUARANTINE_DIR = "quarantine"
_warned_parts: set[str] = set()
_warned_guard = threading.Lock()


class CorruptPart(NamedTuple):
    """A part file no reader can use: its path, why, and its table."""

    path: Path
    reason: str
    table: str


def _warn_skip(path: Path, reason: str) -> None:
    key = str(path)
    with _warned_guard:
        if key in _warned_parts:
            return
        _warned_parts.add(key)
    log.warning("skipping unreadable part file %s (%s); the rest of the table is read. "
                "`avits doctor <run> --quarantine` moves it aside", path, reason)


def parquet_source(path: Any) -> Any:
    """What pyarrow.parquet opens for part file ``path``: the path itself locally, its bytes (one GET)
    on an object store."""
    return pa.BufferReader(sfs.read_bytes(path)) if sfs.is_remote(path) else path


def part_problem(path: str | os.PathLike[str], table: str | None = None) -> str | None:
    """Why part file ``path`` cannot be read in full (conformed to ``table``'s schema when given), or None."""
    sch = table_schema(table) if table else None
    try:
        path = sfs.as_path(path)
        if sch is None:
            pq.read_table(parquet_source(path))
        else:
            RunStore._read_part(path, sch)
    except StoreError as exc:
        return str(exc).split(": ", 1)[-1] if str(exc).startswith("cannot read part file") else str(exc)
    except (OSError, pa.ArrowException, ValueError) as exc:
        return " ".join(f"{type(exc).__name__}: {exc}".split())
    return None
_TMP_GLOB = ".*.tmp"
_local_locks: dict[str, threading.Lock] = {}
_local_locks_guard = threading.Lock()


# ---------------------------------------------------------------------------------------------
# helpers: JSON (atomic writes: store.fs.write_atomic / put_bytes)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"value of type {type(obj).__name__} is not JSON serialisable: {obj!r}")


def _deep_merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------------------------------
# helpers: validation


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


def _check_rules(table: str, tbl: pa.Table, run_id: str, existing_ids: set[str] | None) -> pa.Table:
    """Per-table rules on a schema-conformant table; may return a fixed table (NaN -> null)."""
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


# ---------------------------------------------------------------------------------------------
# the store


class RunStore:
    """The tables and run.json of one run folder ``<root>/<run_id>/``. Cheap to construct; thread-safe."""

    def __init__(self, root: str | Path, run_id: str):
        if not is_safe_name(run_id, NAME_MAX):
            raise StoreError(f"invalid run_id {run_id!r}: use 1-{NAME_MAX} characters from A-Z a-z 0-9 . _ = + - "
                             "(not starting with '.')")
        self.root = sfs.as_path(root)
        self.remote = sfs.is_remote(self.root)
        self.run_id = run_id
        self.path = self.root / run_id
        #: Part files ``read`` skipped because they could not be read (see the module docstring).
        self.skipped_parts: list[CorruptPart] = []

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r}, {self.run_id!r})"

    # -- folders -------------------------------------------------------------------------------

    @property
    def run_json_path(self) -> Path:
        return self.path / RUN_JSON

    def inside(self, rel: str | os.PathLike[str]) -> Path:
        """The absolute path of ``rel`` (relative to the run folder), checked to stay inside the run
        folder (UnsafePathError for ``..``, an absolute path elsewhere, a symlink pointing out).
        Every writer of a file under the run folder (media, latents, reports) should go through it."""
        if self.remote:  # no symlinks on an object store: a relative path without '..' stays inside
            r = Path(os.fspath(rel))
            if r.is_absolute() or ".." in r.parts or "\x00" in str(r):
                raise UnsafePathError(f"path {str(r)!r} leaves the run folder {self.path}")
            return self.path / r.as_posix()
        return inside(self.path, rel)

    def table_dir(self, table: str) -> Path:
        table_schema(table)  # validates the name
        return self.path / table

    def exists(self) -> bool:
        """Whether the run folder exists."""
        return self.path.is_dir()

    def create(self, exist_ok: bool = True) -> RunStore:
        """Make the run folder, its media folder and one folder per table. Returns self.
        (On an object store folders do not exist apart from their objects: nothing to make.)"""
        if self.remote:
            if not exist_ok and self.run_json_path.exists():
                raise StoreError(f"run folder {self.path} already exists")
            return self
        if self.path.exists() and not exist_ok:
            raise StoreError(f"run folder {self.path} already exists")
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path} exists and is not a folder")
        for sub in (*TABLE_NAMES, MEDIA_DIR):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        return self

    def parts(self, table: str) -> list[Path]:
        """The complete part files of ``table`` (temp files excluded), sorted by name."""
        d = self.table_dir(table)
        if not d.is_dir():
            return []
        return sorted(d.glob(PART_GLOB), key=str)

    # -- tables --------------------------------------------------------------------------------

    def append(self, table: str, rows: Sequence[Mapping[str, Any]] | pa.Table, *,
               known_ids: set[str] | None = None) -> Path | None:
        """Validate ``rows`` and write them as one new part file; returns its path (None for zero rows).
        ``known_ids``: the stored candidate ids when the caller keeps them (saves re-reading the table)."""
        table_schema(table)
        b = _Builder(table, self.run_id)
        if isinstance(rows, pa.Table):
            if rows.num_rows == 0:
                b._unknown(set(rows.column_names), None)
                return None
            tbl = b.from_table(rows)
        elif isinstance(rows, (list, tuple)):
            if not rows:
                return None
            tbl = b.from_rows(rows)
        else:
            raise SchemaError(f"{table}: rows must be a list of dicts or a pyarrow.Table, got {type(rows).__name__}")
        existing = (known_ids if known_ids is not None else self.candidate_ids()) if table == "candidates" else None
        tbl = _check_rules(table, tbl, self.run_id, existing)
        d = self.table_dir(table)
        final = d / f"part-{uuid.uuid4().hex}.parquet"
        if self.remote:
            buf = pa.BufferOutputStream()
            pq.write_table(tbl, buf, compression="zstd")
            sfs.put_bytes(final, buf.getvalue().to_pybytes())
        else:
            d.mkdir(parents=True, exist_ok=True)
            sfs.write_atomic(final, lambda f: pq.write_table(tbl, f, compression="zstd"))
        log.debug("%s: wrote %d rows to %s", table, tbl.num_rows, final)
        return final

    def read(self, table: str, columns: Sequence[str] | None = None, *, strict: bool = False) -> pa.Table:
        """All rows of ``table`` (every readable part), conformed to the current schema; empty table when
        none. An unreadable part is skipped with a warning and recorded in ``skipped_parts``
        (``strict=True``: StoreError naming it instead)."""
        full = table_schema(table)
        if columns is None:
            sch = full
        else:
            bad = [c for c in columns if c not in full.names]
            if bad:
                raise StoreError(f"{table}: unknown column {bad[0]!r}; columns are {', '.join(full.names)}")
            sch = pa.schema([full.field(c) for c in columns], metadata=full.metadata)
        parts = []
        for p in self.parts(table):
            try:
                parts.append(self._read_part(p, sch))
            except StoreError as exc:
                if strict:
                    raise
                reason = str(exc).removeprefix(f"cannot read part file {p}: ")
                if not any(c.path == p for c in self.skipped_parts):
                    self.skipped_parts.append(CorruptPart(p, reason, table))
                _warn_skip(p, reason)
        if not parts:
            return sch.empty_table()
        return pa.concat_tables(parts)

    @staticmethod
    def _read_part(path: Path, sch: pa.Schema) -> pa.Table:
        try:
            pf = pq.ParquetFile(parquet_source(path))
            present = set(pf.schema_arrow.names)
            got = pf.read(columns=[n for n in sch.names if n in present])
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise StoreError(f"cannot read part file {path}: {' '.join(str(exc).split())}") from exc
        arrays = []
        for field in sch:
            if field.name in present:
                try:
                    arrays.append(got.column(field.name).cast(field.type))
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                    raise StoreError(f"part file {path}: column {field.name!r} of type "
                                     f"{got.schema.field(field.name).type} cannot be read as {field.type}") from exc
            else:
                arrays.append(pa.nulls(got.num_rows, field.type))
        return pa.Table.from_arrays(arrays, schema=sch)

    # -- cache helpers -------------------------------------------------------------------------

    def scored_pairs(self, verifier: str, version: str, *, include_errors: bool = True) -> set[str]:
        """candidate_ids that already have a rewards row for (verifier, version): the scoring cache.

        'error' rows count by default (a deterministic failure is not retried on every resume);
        ``include_errors=False`` returns only candidates with an 'ok' row, i.e. errors are retried.
        """
        t = self.read("rewards", ["candidate_id", "verifier", "verifier_version", "status"])
        mask = pc.and_(pc.equal(t["verifier"], verifier), pc.equal(t["verifier_version"], str(version)))
        if not include_errors:
            mask = pc.and_(mask, pc.equal(t["status"], "ok"))
        return set(t.filter(mask)["candidate_id"].to_pylist())

    def corrupt_parts(self) -> list[CorruptPart]:
        """Every part of this run that cannot be read in full (see :func:`corrupt_parts`)."""
        return corrupt_parts(self.path)

    def candidate_ids(self) -> set[str]:
        """Every candidate_id stored in this run."""
        return set(self.read("candidates", ["candidate_id"])["candidate_id"].to_pylist())

    def selection_ids(self) -> set[str]:
        """Every selection_id stored in this run (check before re-running the same selection)."""
        return set(self.read("selections", ["selection_id"])["selection_id"].to_pylist())

    def cleanup_temp(self, max_age_s: float = 3600.0) -> int:
        """Remove hidden temp files older than ``max_age_s`` left by crashed writers; returns how many."""
        if self.remote:
            return 0  # whole-object PUTs leave no temp files
        now = time.time()
        n = 0
        for d in [self.path, *(self.path / t for t in TABLE_NAMES)]:
            if not d.is_dir():
                continue
            for p in d.glob(_TMP_GLOB):
                try:
                    if now - p.stat().st_mtime >= max_age_s:
                        p.unlink()
                        n += 1
                except FileNotFoundError:
                    pass
        if n:
            log.info("%s: removed %d stale temp files", self.path, n)
        return n

    # -- run.json ------------------------------------------------------------------------------

    def write_run_json(self, data: Mapping[str, Any]) -> None:
        """Atomically replace run.json with ``data`` (creating the run folder if needed)."""
        sfs.put_bytes(self.run_json_path, self._run_json_bytes(data))  # creates the run folder locally

    def _run_json_bytes(self, data: Mapping[str, Any]) -> bytes:
        if not isinstance(data, Mapping):
            raise StoreError(f"run.json content must be a dict, got {type(data).__name__}")
        try:
            text = json.dumps(dict(data), indent=2, default=_json_default, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{self.run_json_path}: cannot serialise to JSON: {exc}") from exc
        return text.encode("utf-8") + b"\n"

    def read_run_json(self) -> dict[str, Any]:
        """The content of run.json (StoreError when missing or not a JSON object)."""
        p = self.run_json_path
        try:
            return self._parse_run_json(sfs.read_bytes(p))
        except FileNotFoundError:
            raise StoreError(f"{p} does not exist (is {self.path} a run folder?)") from None

    def _parse_run_json(self, raw: bytes) -> dict[str, Any]:
        p = self.run_json_path
        try:
            data = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{p} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise StoreError(f"{p} must hold a JSON object, got {type(data).__name__}")
        return data

    def update_run_json(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into run.json under a lock (dicts merge recursively); returns the new content."""
        return self.modify_run_json(lambda current: _deep_merge(current, fields))

    def modify_run_json(self, change: Any, *, attempts: int = 50) -> dict[str, Any]:
        """Replace run.json by ``change(current)`` ({} when missing) atomically with respect to every other
        writer: locally under the file lock; on an object store as a compare-and-swap on the object's
        ETag (conditional PUT, retried up to ``attempts`` times on a conflict). Returns the new content."""
        if not self.remote:
            with self._lock():
                current = self.read_run_json() if self.run_json_path.exists() else {}
                new = change(current)
                self.write_run_json(new)
            return new
        p = self.run_json_path
        for i in range(attempts):
            got = sfs.read_with_etag(p)
            if got is None:
                etag, current = None, {}
            else:
                etag, current = got[1], self._parse_run_json(got[0])
            new = change(current)
            if sfs.put_conditional(p, self._run_json_bytes(new), if_match=etag):
                return new
            time.sleep(0.05 * (1 + i % 5))
        raise StoreError(f"{p}: gave up after {attempts} conflicting concurrent updates")

    @contextmanager
    def _lock(self) -> Iterator[None]:
        if self.remote:  # cross-process safety on object storage comes from modify_run_json's CAS
            with _local_locks_guard:
                local = _local_locks.setdefault(str(self.path), threading.Lock())
            with local:
                yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        with _local_locks_guard:
            local = _local_locks.setdefault(key, threading.Lock())
        with local:
            if fcntl is None:  # pragma: no cover
                yield
                return
            with open(self.path / ".run.json.lock", "a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def list_runs(root: str | Path) -> list[str]:
    """Run ids under ``root`` (folders with a run.json or a table folder), sorted; [] when root is missing."""
    root = sfs.as_path(root)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if not is_safe_name(d.name, NAME_MAX) or not d.is_dir():
            continue
        if (d / RUN_JSON).is_file() or any((d / t).is_dir() for t in TABLE_NAMES):
            out.append(d.name)
    return sorted(out)


def corrupt_parts(run_path: str | os.PathLike[str], tables: Sequence[str] | None = None) -> list[CorruptPart]:
    """(path, reason, table) of every part file of the run at ``run_path`` that cannot be read in full
    and conformed to its table's schema, in table then file order. Reads every part: O(run size)."""
    run = sfs.as_path(run_path)
    out = []
    for table in tables or TABLE_NAMES:
        d = run / table
        if not d.is_dir():
            continue
        for part in sorted(d.glob(PART_GLOB), key=str):
            why = part_problem(part, table)
            if why is not None:
                out.append(CorruptPart(part, why, table))
    return out


def quarantine_parts(run_path: str | os.PathLike[str], parts: Sequence[CorruptPart | str | os.PathLike[str]] | None = None
                     ) -> list[tuple[Path, Path]]:
    """Move part files out of the tables into ``<run>/quarantine/<table>/<name>`` (the same name; a
    numeric suffix if taken) and return (old, new) paths. ``parts``: the parts to move (default:
    :func:`corrupt_parts`); each must be a part file of a table of this run. Nothing is deleted."""
    run = sfs.as_path(run_path)
    if sfs.is_remote(run):
        return _quarantine_remote(run, corrupt_parts(run) if parts is None else parts)
    run = run.resolve()
    todo = corrupt_parts(run) if parts is None else parts
    moved = []
    for item in todo:
        part = Path(item.path if isinstance(item, CorruptPart) else item).resolve()
        if part.parent.parent != run or part.parent.name not in TABLE_NAMES or not part.match(PART_GLOB):
            raise StoreError(f"{part} is not a part file of a table of run {run}")
        dest_dir = inside(run, Path(QUARANTINE_DIR) / part.parent.name)
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / part.name
        k = 1
        while dest.exists():
            dest = dest_dir / f"{part.stem}.{k}{part.suffix}"
            k += 1
        os.replace(part, dest)
        log.warning("quarantined %s -> %s", part, dest)
        moved.append((part, dest))
    return moved


def _quarantine_remote(run: Any, todo: Sequence[Any]) -> list[tuple[Any, Any]]:
    moved = []
    for item in todo:
        part = sfs.as_path(item.path if isinstance(item, CorruptPart) else item)
        if str(part.parent.parent) != str(run) or part.parent.name not in TABLE_NAMES or not part.name.startswith("part-"):
            raise StoreError(f"{part} is not a part file of a table of run {run}")
        dest = run / QUARANTINE_DIR / part.parent.name / part.name
        k = 1
        while dest.exists():
            dest = run / QUARANTINE_DIR / part.parent.name / f"{part.stem}.{k}{part.suffix}"
            k += 1
        part.fs.mv(part.path, dest.path)
        log.warning("quarantined %s -> %s", part, dest)
        moved.append((part, dest))
    return moved
