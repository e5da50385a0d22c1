"""The benchmark comparison (``<output_root>/benchmarks/<name>/``): ``comparison.parquet`` (the rows of
:func:`avits_core.benchmark.comparison_rows`: one per config x metric), ``comparison.md`` (one column per
config: the selected mean of each metric, NFE per prompt on top) and ``comparison.svg`` (one panel
per held-out metric; no matplotlib). Every file is written atomically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from avits_core.report.format import atomic_write_parquet, atomic_write_text, fmt_cell

log = logging.getLogger(__name__)


def comparison_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Metrics down, configs across: baseline (first candidate) then each config's selected mean."""
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
        cells = [fmt_cell(by[(l, m)]["selected"] if (l, m) in by else None) for l in labels]
        lines.append(f"| {m} {arrow}{' (held out)' if first['held_out'] else ''} | {fmt_cell(first['baseline'])} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_comparison(rows: Sequence[dict[str, Any]], outdir: str | Path) -> dict[str, Path]:
    """Parquet + Markdown + SVG of the comparison rows in ``outdir``; returns their paths."""
    import pyarrow as pa

    from avits_core.store.fs import as_path

    outdir = as_path(outdir)  # a local folder or an object store (a UPath stays one)
    pq_path = atomic_write_parquet(outdir / "comparison.parquet", pa.Table.from_pylist(list(rows)))
    md_path = atomic_write_text(outdir / "comparison.md", comparison_markdown(rows) + "\n")
    plot = plot_comparison(rows, outdir / "comparison.svg")
    log.info("comparison written to %s", outdir)
    return {"parquet": pq_path, "markdown": md_path, "plot": plot}


def comparison_svg(rows: Sequence[dict[str, Any]]) -> str:
    """One panel per held-out metric (every metric when none is held out): the baseline (first candidate)
    and each config's selected mean as bars, NFE per prompt in the labels (:func:`avits_core.report.svg.bar_groups`)."""
    from avits_core.report import svg

    labels = list(dict.fromkeys(r["label"] for r in rows))
    metrics = [m for m in dict.fromkeys(r["metric"] for r in rows) if any(r["held_out"] for r in rows if r["metric"] == m)]
    metrics = metrics or list(dict.fromkeys(r["metric"] for r in rows))
    by = {(r["label"], r["metric"]): r for r in rows}
    nfe = {r["label"]: r["nfe_per_prompt"] for r in rows}
    panels = []
    for m in metrics:
        first = next(by[(l, m)] for l in labels if (l, m) in by)
        panels.append({
            "title": m + ("" if first["higher_is_better"] else " (↓)"),
            "labels": ["first"] + [f"{l} ({nfe[l]:.0f} NFE)" for l in labels],
            "values": [first["baseline"]] + [by[(l, m)]["selected"] if (l, m) in by else None for l in labels],
            "colors": [svg.BASE_COLOR] + [svg.LINE_COLORS[k % len(svg.LINE_COLORS)] for k in range(len(labels))]})
    return svg.bar_groups(panels)


def plot_comparison(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """:func:`comparison_svg` written (atomically) to ``path``; a ``comparison.png`` an older avits wrote
    beside it is removed."""
    from avits_core.store.fs import remove

    out = atomic_write_text(path, comparison_svg(rows))
    remove(path.with_suffix(".png"))  # Path or UPath (write_comparison's folder went through as_path)
    return out
