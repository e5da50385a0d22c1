"""run.json: a run's resolved config, versions, timings and status, one JSON object per run folder.

:func:`write` replaces it atomically (local: temp + fsync + replace; object store: one whole PUT).
:func:`modify` replaces it by ``change(current)`` atomically with respect to every other writer:
locally under an exclusive file lock (``fcntl.flock`` on ``<run>/.run.json.lock``, plus a
process-local lock per folder; the process-local lock alone where fcntl is missing); on an object
store as a compare-and-swap on the object's ETag (a conditional PUT with ``If-Match``, retried on a
conflict), so concurrent writers on several machines each get their change in. :func:`deep_merge`
merges dict values recursively, so concurrent tasks can each add their own ``timings`` entry
(``RunStore.update_run_json``).

Content is serialised with ``allow_nan=False`` (NaN is not JSON); paths, datetimes, sets and numpy
values are converted (:func:`_json_default`); anything else is a StoreError naming the file.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from avits_core.store import fs as sfs
from avits_core.store.schemas import StoreError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RUN_JSON", "deep_merge", "modify", "parse", "read", "serialise", "write"]

RUN_JSON = "run.json"
_local_locks: dict[str, threading.Lock] = {}
_local_locks_guard = threading.Lock()


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


def deep_merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``new``; a dict value merges into a dict value recursively."""
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def serialise(path: Any, data: Mapping[str, Any]) -> bytes:
    """The bytes of run.json ``path`` holding ``data`` (indented UTF-8 JSON + newline)."""
    if not isinstance(data, Mapping):
        raise StoreError(f"run.json content must be a dict, got {type(data).__name__}")
    try:
        text = json.dumps(dict(data), indent=2, default=_json_default, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{path}: cannot serialise to JSON: {exc}") from exc
    return text.encode("utf-8") + b"\n"


def parse(path: Any, raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw`` (the bytes of ``path``); StoreError when not valid JSON or not an object."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise StoreError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def write(path: Any, data: Mapping[str, Any]) -> None:
    """Atomically replace run.json ``path`` with ``data`` (creating its folder locally)."""
    sfs.put_bytes(path, serialise(path, data))


def read(path: Any, run_folder: Any) -> dict[str, Any]:
    """The content of run.json ``path`` of ``run_folder`` (StoreError when missing or not a JSON object)."""
    try:
        return parse(path, sfs.read_bytes(path))
    except FileNotFoundError:
        raise StoreError(f"{path} does not exist (is {run_folder} a run folder?)") from None


def modify(run_folder: Any, change: Callable[[dict[str, Any]], Mapping[str, Any]], *,
           attempts: int = 50) -> dict[str, Any]:
    """Replace ``<run_folder>/run.json`` by ``change(current)`` ({} when missing) atomically (module
    docstring); on an object store up to ``attempts`` tries on conflicts. Returns the new content."""
    p = run_folder / RUN_JSON
    if not sfs.is_remote(run_folder):
        with _file_lock(run_folder):
            current = read(p, run_folder) if p.exists() else {}
            new = change(current)
            write(p, new)
        return new
    for i in range(attempts):
        got = sfs.read_with_etag(p)
        if got is None:
            etag, current = None, {}
        else:
            etag, current = got[1], parse(p, got[0])
        new = change(current)
        if sfs.put_conditional(p, serialise(p, new), if_match=etag):
            return new
        time.sleep(0.05 * (1 + i % 5))
    raise StoreError(f"{p}: gave up after {attempts} conflicting concurrent updates")


@contextmanager
def _file_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on a local run folder's run.json: process-local lock, then ``flock``."""
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _local_locks_guard:
        local = _local_locks.setdefault(key, threading.Lock())
    with local:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with sfs.flock_exclusive(folder / ".run.json.lock"):
            yield
