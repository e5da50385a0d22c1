"""``avits doctor [CONFIG | RUN_FOLDER]``: what this machine, a config or a run needs, and what is wrong.

Every finding is one line starting with ``ok:``, ``WARNING:``, ``MISSING:`` or ``ERROR:``; the
overall result is not ok when any MISSING or ERROR line is present (the CLI then exits 1). Nothing
is downloaded and nothing is written (the output root is checked for write access without creating
it), except that ``--quarantine`` moves corrupt part files of a run aside.

Without an argument: Python, torch and CUDA, PyAV's H.264/AAC encoders, CPU cores and RAM. torch is
imported only where an NVIDIA driver is present (``/proc/driver/nvidia``); elsewhere its version
comes from the package metadata and CUDA is reported as unavailable, which keeps the bare doctor
well under two seconds.

With a config: every pre-flight check of :mod:`avits_core.preflight` (the same checks ``avits run``
and the ``its`` flow apply), each on its own so that one problem does not hide the next: the config
(a broken config stops here), the prompt set (a missing JavisBench CSV says where to download it),
the generator (parameters; ``ltx2`` weights and device; a plugin's ``doctor()`` hook), every guided
and evaluation verifier (constructed, ``check_ready()``, device), the aggregator, the search budget,
the output root, and whether an existing run folder of this config holds the same config.

With a run folder (a folder holding ``run.json``): run.json, the owner lock
(:mod:`avits_core.lock`: held, stale, or free), and every Parquet part of every table, opened and
read; a part that cannot be read is listed by name (ERROR), and with ``quarantine`` moved to
``<run>/quarantine/<table>/`` so that the rest of the run stays queryable (the rows it held are
lost: a resume regenerates or rescores them).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
from pathlib import Path
from typing import Any

from avits_core.checks.base import PREFIXES, is_failure  # noqa: F401 - PREFIXES: the line prefixes of avits doctor
from avits_core.preflight import collect

log = logging.getLogger(__name__)


def _torch_lines() -> list[str]:
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return ["ERROR: torch is not installed; run `make setup`"]
    if not (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")):
        return [f"ok: torch {version}; CUDA not available (no NVIDIA driver on this machine; CPU only)"]
    try:
        import torch

        cuda = torch.cuda.is_available()
        out = [f"ok: torch {torch.__version__}; CUDA "
               f"{'available: ' + torch.cuda.get_device_name(0) if cuda else 'not available (CPU only)'}"]
        if cuda:
            free, total = torch.cuda.mem_get_info()
            out.append(f"ok: GPU memory {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")
        return out
    except Exception as exc:  # noqa: BLE001
        return [f"ERROR: torch cannot be imported ({exc}); run `make setup`"]


def _system_lines() -> list[str]:
    out = [f"ok: python {platform.python_version()} on {platform.machine()}"]
    out += _torch_lines()
    try:
        import av

        codecs = av.codecs_available
        for c in ("libx264", "aac"):
            out.append(f"ok: PyAV {av.__version__} has encoder {c}" if c in codecs
                       else f"ERROR: PyAV lacks encoder {c}; reinstall PyAV from its wheels (`pip install --force-reinstall av`)")
    except Exception as exc:  # noqa: BLE001
        out.append(f"ERROR: PyAV cannot be imported ({exc}); run `make setup`")
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        out.append(f"ok: {os.cpu_count()} CPU cores, {pages * size / 2**30:.1f} GiB RAM")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        pass
    return out


# --------------------------------------------------------------------------- a run folder


def _rel(run: Any, p: Any) -> str:
    """``p`` relative to the run folder when it lies inside it (local or object store), else ``p``."""
    run_s, p_s = str(run).rstrip("/"), str(p)
    return p_s[len(run_s) + 1:] if p_s.startswith(run_s + "/") else p_s


def corrupt_parts(run_path: str | Path) -> list[tuple[Any, str]]:
    """(part file, reason) for every unreadable part of the run, local or on an object store
    (:func:`avits_core.store.parts.corrupt_parts`)."""
    from avits_core.store import fs as sfs
    from avits_core.store import parts as pqstore

    return [(c.path, str(c.reason)) for c in pqstore.corrupt_parts(sfs.as_path(run_path))]


def quarantine_part(run_path: str | Path, part: Any) -> Any:
    """Move ``part`` to ``<run>/quarantine/<table>/`` (out of the table's glob); returns the new path
    (:func:`avits_core.store.parts.quarantine_parts`: a rename locally, copy + delete on S3)."""
    from avits_core.store import fs as sfs
    from avits_core.store import parts as pqstore

    return pqstore.quarantine_parts(sfs.as_path(run_path), [part])[0][1]


def run_folder_lines(run_path: str | Path, *, quarantine: bool = False) -> list[str]:
    """Findings about a run folder (a local folder or an ``s3://`` run, through the store's fs layer):
    run.json, the owner lock, unreadable Parquet parts."""
    from avits_core import lock as runlock
    from avits_core.checks.inputs import read_run_json
    from avits_core.store import fs as sfs
    from avits_core.store.parts import PART_GLOB

    run_path = sfs.as_path(run_path)
    out: list[str] = []
    try:
        info = read_run_json(run_path)
    except Exception as exc:  # noqa: BLE001
        info = None
        out.append(f"ERROR: {exc}")
    else:
        if info is None:
            out.append(f"ERROR: {run_path}: no run.json (not a run folder)")
        else:
            fail = info.get("failure") or {}
            extra = f"; failed at {fail.get('step')}: {fail.get('cause')}" if fail else ""
            out.append(f"ok: run {info.get('run_id', run_path.name)}: status {info.get('status')}{extra}")
    holder = runlock.read_lock(run_path)
    if holder is None:
        out.append("ok: lock: no command holds this run")
    else:
        state = runlock.lock_state(holder)
        level = "WARNING" if state != "held" else "ok"
        out.append(f"{level}: lock: {runlock.describe(holder)} ({state})"
                   + ("; `--break-lock` on the next command breaks it" if state == "stale" else ""))
    bad = corrupt_parts(run_path)
    n_parts = sum(1 for _ in run_path.glob(f"*/{PART_GLOB}"))
    if not bad:
        out.append(f"ok: {n_parts} Parquet part files, all readable")
    where = run_path if sfs.is_remote(run_path) else run_path.resolve()
    for part, why in bad:
        rel = _rel(where, part if sfs.is_remote(run_path) else Path(part).resolve())
        if quarantine:
            dest = quarantine_part(run_path, part)
            dest = _rel(where, dest if sfs.is_remote(run_path) else Path(dest).resolve())
            out.append(f"WARNING: corrupt part {rel} ({why}) moved to {dest}; "
                       f"rerun the run's command to regenerate or rescore its rows")
        else:
            out.append(f"ERROR: corrupt part {rel}: {why}; `avits doctor {run_path} --quarantine` moves it aside")
    return out


def is_run_folder(path: str | Path) -> bool:
    """A folder (or object-store prefix) holding ``run.json`` or a ``candidates`` table."""
    from avits_core.store import fs as sfs

    try:
        p = sfs.as_path(path)
        return (p / "run.json").is_file() or (p / "candidates").is_dir()
    except Exception as exc:  # noqa: BLE001 - an unreachable store is not a run folder; the caller says so
        log.debug("%s: not readable as a run folder (%s)", path, exc)
        return False


def run_doctor(config: str | Path | None = None, *, quarantine: bool = False) -> tuple[list[str], bool]:
    """Findings about this machine and (optionally) a run config or a run folder; ``ok`` is False on
    any MISSING/ERROR line."""
    from avits_core.errors import AvitsError

    lines = _system_lines()
    if config is not None and is_run_folder(config):
        lines += run_folder_lines(config, quarantine=quarantine)
    elif config is not None:
        from avits_core.config import load_config

        try:
            cfg = load_config(config)
            lines.append(f"ok: config {config} parses (generator {cfg.generator.name}, "
                         f"{len(cfg.verifiers)} guided verifiers)")
        except AvitsError as exc:
            lines.append(f"ERROR: {exc}")
            return lines, False
        lines += collect(cfg)
    ok = not any(is_failure(line) for line in lines)
    return lines, ok
