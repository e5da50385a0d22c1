"""RunStore: one run folder of atomic Parquet part files, plus run.json.

Layout::

    <root>/<run_id>/
        run.json                      resolved config, versions, timings, status
        media/                        clips (paths in the tables are relative to the run folder)
        candidates/part-<uuid>.parquet
        rewards/part-<uuid>.parquet
        arw_trace/ selections/ metrics/

The store is split by job; this module holds the run folder and its table operations:

- :mod:`~avits_core.store.validate`: ``append(table, rows)`` first makes the rows conform to the
  table's schema and checks the table's rules (every refusal names table, column, row and value);
- :mod:`~avits_core.store.parts`: then writes them as ONE new part file (atomic locally and on an
  object store; append-only, concurrent writers never collide), reads parts back, and deals with a
  part nobody can read (skipped with a warning, listed, quarantined);
- :mod:`~avits_core.store.runjson`: run.json (atomic replace; merged updates under a file lock
  locally, compare-and-swap on the ETag on an object store);
- :mod:`~avits_core.store.fs`: local disk or object store.

Reads. ``read(table)`` concatenates every part, conformed to the current schema (a part written
before a nullable column existed gets nulls there; unknown extra columns are dropped). Row order
is not meaningful; sort explicitly. An unreadable part is skipped with a warning naming the file
and recorded in ``RunStore.skipped_parts`` (``read(table, strict=True)`` raises instead).

Cache. ``scored_pairs(verifier, version)`` returns the candidate_ids that already have a rewards
row for that verifier and version, 'ok' or 'error' (so a clip that deterministically fails is not
retried forever); pass ``include_errors=False`` to retry errors. The DuckDB ``rewards`` view then
shows one row per (run_id, candidate_id, verifier, verifier_version): the latest 'ok' row if any,
else the latest 'error' row (see :mod:`avits_core.store.duck`).

Object storage. ``root`` may be an object-store URL (``s3://bucket/prefix``; see
:mod:`avits_core.store.fs`): ``self.path`` is then a ``UPath``; folders do not exist apart from
their objects, and whole-object PUTs leave no temp files for ``cleanup_temp`` to remove.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from avits_core.names import NAME_MAX, UnsafePathError, check_components, inside, is_safe_name
from avits_core.store import fs as sfs
from avits_core.store import runjson
from avits_core.store.parts import PART_GLOB, CorruptPart, corrupt_parts, read_part, warn_skip, write_part
from avits_core.store.runjson import RUN_JSON
from avits_core.store.schemas import TABLE_NAMES, StoreError, schema as table_schema
from avits_core.store.validate import build_table, check_rules

log = logging.getLogger(__name__)

__all__ = ["RunStore", "list_runs", "MEDIA_DIR"]

MEDIA_DIR = "media"
_TMP_GLOB = ".*.tmp"


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
            check_components(r)  # names.py: a too-long component or a Windows device name
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
        tbl = build_table(table, rows, self.run_id)
        if tbl is None:
            return None
        existing = (known_ids if known_ids is not None else self.candidate_ids()) if table == "candidates" else None
        tbl = check_rules(table, tbl, self.run_id, existing)
        final = write_part(self.table_dir(table), tbl)
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
                parts.append(read_part(p, sch))
            except StoreError as exc:
                if strict:
                    raise
                reason = str(exc).removeprefix(f"cannot read part file {p}: ")
                if not any(c.path == p for c in self.skipped_parts):
                    self.skipped_parts.append(CorruptPart(p, reason, table))
                warn_skip(p, reason)
        if not parts:
            return sch.empty_table()
        return pa.concat_tables(parts)

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
        runjson.write(self.run_json_path, data)

    def read_run_json(self) -> dict[str, Any]:
        """The content of run.json (StoreError when missing or not a JSON object)."""
        return runjson.read(self.run_json_path, self.path)

    def update_run_json(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into run.json under a lock (dicts merge recursively); returns the new content."""
        return self.modify_run_json(lambda current: runjson.deep_merge(current, fields))

    def modify_run_json(self, change: Any, *, attempts: int = 50) -> dict[str, Any]:
        """Replace run.json by ``change(current)`` ({} when missing) atomically with respect to every other
        writer: locally under the file lock; on an object store as a compare-and-swap on the object's
        ETag (conditional PUT, retried up to ``attempts`` times on a conflict). Returns the new content."""
        return runjson.modify(self.path, change, attempts=attempts)


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

