"""The three primitives every report writer uses: one value formatter, one Markdown table writer,
one atomic-write helper (text, bytes, Parquet).

Decisions:
- ``fmt_value``: None -> "–" (en dash), bool -> "yes"/"no", float (numpy floats included) -> 4
  significant digits (``:.4g``), anything else -> ``str``. In a table cell a "|" is escaped as
  "\\|" so a value can never add a column.
- ``markdown_table``: a GitHub table, header row, then ``|---|`` per column, then one row per dict
  (missing keys are "–"). Columns default to the first row's keys.
- Atomic writes: the file is written to a hidden temporary name in the same folder, then renamed
  over the target (``os.replace``): a reader (or a crash) never sees half a file. The parent folder
  is created.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


def fmt_value(x: Any) -> str:
    """How every report table shows a value (module docstring)."""
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.4g}"
    return str(x)


def fmt_cell(x: Any) -> str:
    """``fmt_value`` for a Markdown table cell: a "|" inside the value is escaped."""
    return fmt_value(x).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str] | None = None,
                   headers: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` over ``cols`` (headers default to the column names)."""
    cols = list(cols) if cols is not None else (list(rows[0].keys()) if rows else [])
    heads = list(headers) if headers is not None else cols
    if len(heads) != len(cols):
        raise ValueError(f"{len(heads)} headers for {len(cols)} columns")
    out = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (:func:`avits_core.store.fs.put_bytes`).
    Returns the path. An object-store path (:mod:`avits_core.store.fs`) is written in one whole PUT."""
    from avits_core.store import fs as sfs

    p = sfs.as_path(path) if sfs.is_url(path) or sfs.is_remote(path) else Path(path)
    sfs.put_bytes(p, data)
    return p


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """``atomic_write_bytes`` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_parquet(path: str | os.PathLike[str], table: Any) -> Path:
    """Write a pyarrow Table as one Parquet file, atomically. Returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return atomic_write_bytes(path, buf.getvalue().to_pybytes())


def write_rows(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write ``rows`` (dicts) as one Parquet file, atomically; ConfigError when there are none."""
    import pyarrow as pa

    from avits_core.errors import ConfigError

    if not rows:
        raise ConfigError(f"nothing to write to {path}: no rows")
    return atomic_write_parquet(path, pa.Table.from_pylist([dict(r) for r in rows]))
