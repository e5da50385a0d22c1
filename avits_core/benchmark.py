"""Comparison tables across runs (the benchmark flow's output).

One row per (config label, metric): baseline mean, selected mean, change, plus each run's compute:
``nfe_per_prompt`` (denoiser forward passes actually spent per prompt: run.json's ``nfe_total``
where the search records it, else the sum of the candidates' nfe) and ``candidates_per_prompt``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


def run_compute(run_path: str | Path) -> dict[str, float]:
    from avits_core.store.duck import connect

    run_path = Path(run_path)
    con = connect(run_path)
    r = con.sql(
        "SELECT count(*) AS n, count(DISTINCT prompt_id) AS p, sum(nfe) AS nfe FROM candidates"
    ).to_arrow_table().to_pylist()[0]
    con.close()
    info = json.loads((run_path / "run.json").read_text())
    p = max(int(r["p"] or 0), 1)
    nfe_total = info.get("nfe_total", r["nfe"] or 0)
    return {"nfe_per_prompt": float(nfe_total) / p, "candidates_per_prompt": float(r["n"] or 0) / p}


def comparison_rows(outs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for o in outs:
        comp = run_compute(o["run_path"])
        info = json.loads((Path(o["run_path"]) / "run.json").read_text())
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


def comparison_markdown(rows: Sequence[dict[str, Any]]) -> str:
    labels = list(dict.fromkeys(r["label"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    by = {(r["label"], r["metric"]): r for r in rows}
    head = "| metric | baseline | " + " | ".join(labels) + " |"
    lines = [head, "|" + "---|" * (len(labels) + 2)]
    comp = {r["label"]: r for r in rows}
    lines.append("| NFE / prompt | – | " + " | ".join(f"{comp[l]['nfe_per_prompt']:.0f}" for l in labels) + " |")
    for m in metrics:
        first = next(by[(l, m)] for l in labels if (l, m) in by)
        arrow = "↑" if first["higher_is_better"] else "↓"
        cells = []
        for l in labels:
            r = by.get((l, m))
            cells.append("–" if r is None or r["selected"] is None else f"{r['selected']:.4g}")
        base = "–" if first["baseline"] is None else f"{first['baseline']:.4g}"
        lines.append(f"| {m} {arrow}{' (held out)' if first['held_out'] else ''} | {base} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_comparison(rows: Sequence[dict[str, Any]], outdir: str | Path) -> dict[str, Path]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows))
    pq_path = outdir / "comparison.parquet"
    tmp = outdir / ".comparison.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(pq_path)
    md_path = outdir / "comparison.md"
    md_path.write_text(comparison_markdown(rows) + "\n", encoding="utf-8")
    log.info("comparison written to %s", outdir)
    return {"parquet": pq_path, "markdown": md_path}
