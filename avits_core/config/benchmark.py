"""A benchmark file loaded and validated as a whole: its name and one validated :class:`RunConfig` per entry.

The file's format (``name``, ``set``, ``configs`` of ``{path, label, set, match_nfe}``) and its checks
are :func:`avits_core.benchmark.load_benchmark`; here every entry's config is then loaded with its
overrides (the file's shared ``set``, the entry's ``set``, then the command line's ``--set``), so a
bad entry is refused before any run starts. A ``match_nfe`` entry must be a ``best_of_n`` config:
its ``search.n`` is fixed later, from the NFE the named earlier run actually spent
(``flows/benchmark.py``).

``avits benchmark`` loads the plan once, runs the pre-flight checks on every config, and hands the
plan itself to the ``its-benchmark`` flow; a flow started by a deployment loads it from the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pydantic import BaseModel

from avits_core.config.load import load_config
from avits_core.config.schema import RunConfig
from avits_core.errors import ConfigError

__all__ = ["BenchmarkEntry", "BenchmarkPlan", "load_benchmark_plan"]


class BenchmarkEntry(BaseModel):
    """One config of a benchmark: its label, its file, the label whose NFE it matches (or None), the config."""

    label: str
    path: str
    match_nfe: str | None = None
    config: RunConfig


class BenchmarkPlan(BaseModel):
    """A benchmark file, validated: its name and its entries in file order."""

    name: str
    entries: list[BenchmarkEntry]


def load_benchmark_plan(path: str | Path, overrides: Sequence[str] = ()) -> BenchmarkPlan:
    """Load benchmark file ``path`` and every config it lists (``overrides`` apply to each);
    ConfigError naming the file, the entry and the field at the first problem."""
    from avits_core.benchmark import load_benchmark

    bench = load_benchmark(path)
    cfgs = [load_config(it["path"], it["set"] + list(overrides)) for it in bench["configs"]]  # every file first
    for it, cfg in zip(bench["configs"], cfgs):
        if it["match_nfe"] and cfg.search.method != "best_of_n":
            raise ConfigError(f"{it['label']}: match_nfe needs a best_of_n config, got {cfg.search.method}")
    return BenchmarkPlan(name=bench["name"], entries=[
        BenchmarkEntry(label=it["label"], path=it["path"], match_nfe=it["match_nfe"], config=cfg)
        for it, cfg in zip(bench["configs"], cfgs)])
