"""Comparison tables across runs (the benchmark flow's output).

One row per (config label, metric): baseline mean, selected mean, change, plus each run's compute:
``nfe_per_prompt`` (denoiser forward passes actually spent per prompt: the sum of the candidates'
own passes, ``nfe_own`` where the search records it, else ``nfe``) and ``candidates_per_prompt``.
This module computes the rows and parses benchmark files; writing them (Parquet, Markdown, plot) is
:func:`avits_core.report.benchmark.write_comparison`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from avits_core.errors import ConfigError

log = logging.getLogger(__name__)


def run_compute(run_path: str | Path) -> dict[str, float]:
    from avits_core.store.duck import connect

    run_path = Path(run_path)
    con = connect(run_path)
    # each candidate's *own* passes: an EvoSearch child's nfe includes its parent's prefix, which was
    # spent once, by the parent
    r = con.sql(
        "SELECT count(*) AS n, count(DISTINCT prompt_id) AS p, sum(coalesce(nfe_own, nfe)) AS nfe FROM candidates"
    ).to_arrow_table().to_pylist()[0]
    con.close()
    p = max(int(r["p"] or 0), 1)
    return {"nfe_per_prompt": float(r["nfe"] or 0) / p, "candidates_per_prompt": float(r["n"] or 0) / p}


def matched_n(run_path: str | Path) -> int:
    """Best-of-N size with the same NFE per prompt as the run at ``run_path`` (see flows/benchmark.py)."""
    from avits_core.store.duck import connect

    con = connect(Path(run_path))
    full = con.sql("SELECT avg(nfe) AS f FROM candidates WHERE generation = 0 AND step = 0").to_arrow_table().to_pylist()[0]["f"]
    con.close()
    if not full:
        raise ValueError(f"{run_path}: no generation-0 candidates to measure the NFE of one candidate")
    per_prompt = run_compute(run_path)["nfe_per_prompt"]
    return max(1, int(round(per_prompt / float(full))))


def comparison_rows(outs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    from avits_core.checks.inputs import read_run_json

    rows = []
    for o in outs:
        comp = run_compute(o["run_path"])
        info = read_run_json(o["run_path"])  # a local folder or an object store (a Path would only be local)
        if info is None:
            raise ConfigError(f"{o['run_path']}: no run.json (label {o['label']!r})")
        for r in o["results"]:
            rows.append(
                dict(
                    label=o["label"],
                    run_id=o.get("run_id") or Path(o["run_path"]).name,
                    search=info["config"]["search"]["method"],
                    selection_id=o["selection_id"],
                    metric=r["metric"],
                    held_out=bool(r.get("held_out")),
                    higher_is_better=bool(r.get("higher_is_better", True)),
                    baseline=r.get("baseline"),
                    selected=r.get("selected"),
                    change=r.get("change"),
                    **comp,
                )
            )
    return rows


def load_benchmark(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"benchmark file not found: {path}")
    from avits_core.config import load_yaml_text
    from avits_core.names import check_name
    from avits_core.prompts import read_text_file

    data = load_yaml_text(read_text_file(path, "benchmark file"), str(path)) or {}  # BOM, duplicate keys, safe
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
        bad = set(c) - {"path", "label", "set", "match_nfe"}
        if bad:
            raise ConfigError(f"{path}: configs.{i}: unknown key(s) {sorted(bad)}")
        cpath = (path.parent / c["path"]).resolve()
        if not cpath.exists():
            raise ConfigError(f"{path}: configs.{i}.path: file not found: {cpath}")
        items.append({"path": str(cpath), "label": c.get("label") or Path(c["path"]).stem,
                      "set": list(data.get("set") or []) + list(c.get("set") or []),
                      "match_nfe": c.get("match_nfe")})
    labels = [it["label"] for it in items]
    for i, lab in enumerate(labels):
        check_name(lab, "label", where=f"{path}: configs.{i}.label")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: labels must be unique, got {labels}")
    for i, it in enumerate(items):
        m = it["match_nfe"]
        if m is not None and m not in labels[:i]:
            raise ConfigError(f"{path}: configs.{i}.match_nfe: {m!r} must name an earlier config's label")
    name = data.get("name") or path.stem
    check_name(name, "benchmark name", where=f"{path}: name")  # becomes <output_root>/benchmarks/<name>/
    return {"name": name, "configs": items}
