"""Pre-flight checks of a run's inputs: component names, the aggregator's parameters, the output root,
an existing run folder, the prompt set. Each returns finding lines (:mod:`avits_core.checks.base`);
none loads a model or writes anything. :func:`run_folder` and :func:`read_run_json` are also what the
CLI and ``avits doctor`` use to look at a run folder without opening its tables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avits_core.checks.base import CheckState
from avits_core.errors import AvitsError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.config import RunConfig

__all__ = ["JAVISBENCH_HINT", "aggregator_lines", "names_lines", "prompt_lines", "read_run_json", "run_folder",
           "run_folder_lines", "writable_line"]

JAVISBENCH_HINT = (
    "JavisBench prompt sets (JavisBench.csv, JavisBench-mini.csv) come with the benchmark: "
    "`hf download --repo-type dataset JavisVerse/JavisBench --local-dir data/eval/JavisBench` "
    "(older huggingface_hub: `huggingface-cli download ...`), then set prompts.source to "
    "data/eval/JavisBench/JavisBench-mini.csv (or --set prompts.source=...)"
)


def names_lines(st: CheckState) -> list[str]:
    """Unknown names, from the registries' name lists (no module is imported)."""
    from avits_core.registry import GENERATORS, VERIFIERS

    out = []
    gen = st.cfg.generator.name
    if gen not in GENERATORS.names():
        out.append(f"ERROR: generator {gen!r}: unknown generator {gen!r}; known generators: "
                   f"{', '.join(GENERATORS.names())}. A plugin generator must be installed in this environment "
                   f"and declare an entry point in the group 'avits.generators' (docs/plugins.md)")
    known = VERIFIERS.names()
    for role, names in (("guided", [v.name for v in st.cfg.verifiers]),
                        ("evaluation", [n for n, _ in st.cfg.evaluation.specs()])):
        for n in names:
            if n not in known:
                out.append(f"ERROR: verifier {n} ({role}): unknown verifier {n!r}; known verifiers: {', '.join(known)}")
    return out


def aggregator_lines(st: CheckState) -> list[str]:
    from avits_core.aggregate import get_aggregator

    cfg = st.cfg
    try:
        get_aggregator(cfg.aggregator.name, [v.name for v in cfg.verifiers], cfg.weights, **cfg.aggregator.params)
    except Exception as exc:  # UnknownNameError, ConfigError, TypeError for a bad param
        return [f"ERROR: aggregator {cfg.aggregator.name!r}: {exc}"]
    return [f"ok: aggregator {cfg.aggregator.name}"]


def writable_line(root: str | Path) -> str:
    """Whether ``root`` is (or can be created as) a writable folder, checked without creating anything."""
    from avits_core.store import fs as sfs

    if sfs.is_url(root):
        return sfs.remote_root_line(root)
    p = Path(root).expanduser().absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"ERROR: output_root {str(root)!r} is not writable: {str(probe)!r} is a file, not a folder"
    if os.access(probe, os.W_OK | os.X_OK):
        return f"ok: output_root {str(p)} is writable" + ("" if probe == p else " (will be created)")
    return (f"ERROR: output_root {str(root)!r} is not writable ({str(probe)!r} denies write access); "
            f"set output_root")


def run_folder(cfg: "RunConfig") -> Path:
    """The folder a config's run lives in (it may not exist yet)."""
    from avits_core.store.fs import as_path

    return as_path(cfg.output_root) / cfg.resolved_run_id()


def read_run_json(folder: str | Path) -> dict[str, Any] | None:
    """A run folder's run.json as a dict, or None when there is none (nothing else is read). ConfigError
    naming the file when it cannot be read, is not JSON, or holds something else than a JSON object (the
    store's own rule, :func:`avits_core.store.runjson.parse`)."""
    from avits_core.errors import StoreError
    from avits_core.store import runjson
    from avits_core.store.fs import as_path, read_bytes

    p = as_path(folder) / runjson.RUN_JSON
    if not p.is_file():
        return None
    try:
        return runjson.parse(p, read_bytes(p))
    except (OSError, StoreError) as exc:
        raise ConfigError(f"{p}: unreadable run.json ({exc})") from exc


def run_folder_lines(st: CheckState) -> list[str]:
    folder = run_folder(st.cfg)
    try:
        info = read_run_json(folder)
    except ConfigError as exc:
        return [f"ERROR: run folder: {exc}"]
    if info is None:
        return [f"ok: run folder {folder} (new run)"]
    stored = info.get("config_hash")
    if stored not in (None, st.cfg.config_hash()):
        return [f"ERROR: run folder {folder} holds a run of a different config (config hash {str(stored)[:8]} "
                f"vs {st.cfg.config_hash()[:8]}); give a new --run-id to start a new run"]
    return [f"ok: run folder {folder} holds this config's run (status {info.get('status')}; it resumes)"]


def prompt_lines(st: CheckState) -> list[str]:
    from avits_core.prompts import load_prompts

    cfg = st.cfg
    src = cfg.prompts.source
    try:
        prompts = load_prompts(src, text_column=cfg.prompts.text_column, limit=cfg.prompts.limit)
    except AvitsError as exc:
        missing = isinstance(src, str) and not Path(src).exists()
        line = f"MISSING: prompts: {exc}" if missing else f"ERROR: prompts: {exc}"
        if isinstance(src, str) and "javis" in Path(src).name.lower():
            line += f". {JAVISBENCH_HINT}"
        elif missing:
            line += ". Point prompts.source at a .csv, .tsv, .txt or .jsonl file (relative paths are resolved against the config's folder)"
        return [line]
    st.prompts = prompts
    where = "inline" if not isinstance(src, str) else src
    aspects = sorted({k[: -len("_ind")] for p in prompts for k in p.meta if k.startswith("cat") and k.endswith("_ind")})
    extra = f"; JavisBench categories {', '.join(aspects)} (per-category results)" if aspects else ""
    return [f"ok: {len(prompts)} prompts from {where}{extra}"]
