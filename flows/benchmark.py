"""The ``benchmark`` flow: several run configs over one prompt set, then one comparison table.

A benchmark file (YAML) lists configs, each a path (relative to the benchmark file) with optional
``set`` overrides, plus shared overrides applied to all of them::

    name: nightly
    set: [output_root=runs]          # applied to every config
    configs:
      - path: demo.yaml
      - {path: evosearch-demo.yaml, label: evo}
      - {path: demo.yaml, label: bon-equal-nfe, set: [search.n=13]}

Each config runs as an ``its`` subflow (resuming if its run exists). The comparison table (one row
per config x metric: baseline, selected, change, total NFE) is written as Parquet and Markdown
under ``<output_root>/benchmarks/<name>/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger

from avits_core.errors import ConfigError


def load_benchmark(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"benchmark file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("configs"), list) or not data["configs"]:
        raise ConfigError(f"{path}: needs a non-empty 'configs' list")
    unknown = set(data) - {"name", "set", "configs", "output_root"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}")
    items = []
    for i, c in enumerate(data["configs"]):
        if isinstance(c, str):
            c = {"path": c}
        if not isinstance(c, dict) or "path" not in c:
            raise ConfigError(f"{path}: configs.{i} needs a 'path'")
        bad = set(c) - {"path", "label", "set"}
        if bad:
            raise ConfigError(f"{path}: configs.{i}: unknown key(s) {sorted(bad)}")
        cpath = (path.parent / c["path"]).resolve()
        if not cpath.exists():
            raise ConfigError(f"{path}: configs.{i}.path: file not found: {cpath}")
        items.append({"path": str(cpath), "label": c.get("label") or Path(c["path"]).stem,
                      "set": list(data.get("set") or []) + list(c.get("set") or [])})
    labels = [it["label"] for it in items]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: labels must be unique, got {labels}")
    return {"name": data.get("name") or path.stem, "configs": items}


@flow(name="its-benchmark", log_prints=False)
def benchmark(benchmark_path: str = "data/configs/benchmark.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Run every config of a benchmark file and write one comparison table."""
    from avits_core.benchmark import comparison_rows, write_comparison
    from avits_core.config import load_config
    from flows.its import its

    logger = get_run_logger()
    bench = load_benchmark(benchmark_path)
    cfgs = [load_config(it["path"], it["set"] + list(overrides or [])) for it in bench["configs"]]  # validate all first
    outs = []
    for it in bench["configs"]:
        out = its(config_path=it["path"], overrides=it["set"] + list(overrides or []))
        outs.append({"label": it["label"], **out})
        logger.info("%s -> %s", it["label"], out["run_path"])
    rows = comparison_rows(outs)
    root = Path(cfgs[0].output_root) / "benchmarks" / bench["name"]
    paths = write_comparison(rows, root)
    return {"name": bench["name"], "rows": rows, "paths": {k: str(v) for k, v in paths.items()},
            "runs": [o["run_path"] for o in outs]}
