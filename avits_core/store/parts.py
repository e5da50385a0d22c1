"""Part files: how one table's rows live on disk, and what happens to a part nobody can read.

Writes. :func:`write_part` writes ONE new part file ``part-<uuid>.parquet`` (zstd) into a table's
folder. Locally it is written under a hidden temporary name (``.part-<uuid>.parquet.<pid>.<hex>.tmp``),
fsynced and ``os.replace``-d onto its name (:func:`avits_core.store.fs.write_atomic`): a crash leaves at
most a hidden temp file, which every reader ignores (readers only look at :data:`PART_GLOB`) and
:meth:`~avits_core.store.parquet.RunStore.cleanup_temp` removes. On an object store the part is
serialised in memory and written in ONE PUT (atomic on S3: readers see the whole object or nothing).
Concurrent writers (threads, processes, machines) never collide because every part has its own uuid.
Nothing is ever rewritten: every table is append-only.

Reads. :func:`read_part` reads one part conformed to a schema (a part written before a nullable
column existed gets nulls there; unknown extra columns are dropped); StoreError names the file when
it cannot be read or a column has an incompatible type. Parts are read with one GET each on an
object store (:func:`parquet_source`).

One bad file. A part that cannot be read (truncated, overwritten, not Parquet, a column of an
incompatible type) is skipped by ``RunStore.read`` with a warning naming the file (:func:`warn_skip`:
once per file and process) and listed in ``RunStore.skipped_parts``: the rest of the table stays
readable (``read(table, strict=True)`` raises instead). :func:`corrupt_parts` lists every such part
of a run with the reason (it reads each part in full), and :func:`quarantine_parts` moves them aside
to ``<run>/quarantine/<table>/`` where no reader looks (``avits doctor RUN --quarantine``; on an object
store with the filesystem's ``mv``: copy + delete, not atomic, nothing is lost). The rows of a skipped
part are missing from every reader until it is repaired and moved back; a resumed run redoes what
they held (scores are recomputed, a missing candidate is generated again).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from avits_core.names import inside
from avits_core.store import fs as sfs
from avits_core.store.schemas import TABLE_NAMES, StoreError, schema as table_schema

log = logging.getLogger(__name__)

__all__ = ["PART_GLOB", "QUARANTINE_DIR", "CorruptPart", "corrupt_parts", "parquet_source", "part_problem",
           "quarantine_parts", "read_part", "warn_skip", "write_part"]

PART_GLOB = "part-*.parquet"
QUARANTINE_DIR = "quarantine"
_warned_parts: set[str] = set()
_warned_guard = threading.Lock()


class CorruptPart(NamedTuple):
    """A part file no reader can use: its path, why, and its table."""

    path: Path
    reason: str
    table: str


def warn_skip(path: Path, reason: str) -> None:
    """Log that unreadable part ``path`` is skipped: once per file and process."""
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


def write_part(folder: Any, tbl: pa.Table) -> Any:
    """Write ``tbl`` as one new part file in table folder ``folder`` (created locally); returns its path."""
    final = folder / f"part-{uuid.uuid4().hex}.parquet"
    if sfs.is_remote(folder):
        buf = pa.BufferOutputStream()
        pq.write_table(tbl, buf, compression="zstd")
        sfs.put_bytes(final, buf.getvalue().to_pybytes())
    else:
        folder.mkdir(parents=True, exist_ok=True)
        sfs.write_atomic(final, lambda f: pq.write_table(tbl, f, compression="zstd"))
    return final


def read_part(path: Path, sch: pa.Schema) -> pa.Table:
    """Part file ``path`` conformed to schema ``sch`` (missing columns as nulls); StoreError naming the file."""
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


def part_problem(path: str | os.PathLike[str], table: str | None = None) -> str | None:
    """Why part file ``path`` cannot be read in full (conformed to ``table``'s schema when given), or None."""
    sch = table_schema(table) if table else None
    try:
        path = sfs.as_path(path)
        if sch is None:
            pq.read_table(parquet_source(path))
        else:
            read_part(path, sch)
    except StoreError as exc:
        return str(exc).split(": ", 1)[-1] if str(exc).startswith("cannot read part file") else str(exc)
    except (OSError, pa.ArrowException, ValueError) as exc:
        return " ".join(f"{type(exc).__name__}: {exc}".split())
    return None


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
