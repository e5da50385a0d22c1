"""The benchmark comparison (``<output_root>/benchmarks/<name>/``): ``comparison.parquet`` (the rows of
:func:`avits_core.benchmark.comparison_rows`: one per config x metric), ``comparison.md`` (one column per
config: the selected mean of each metric, NFE per prompt on top) and ``comparison.png`` (one panel
per held-out metric). Every file is written atomically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from avits_core.report.format import atomic_save_figure, atomic_write_parquet, atomic_write_text, fmt_cell

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
    """Parquet + Markdown + PNG of the comparison rows in ``outdir``; returns their paths."""
    import pyarrow as pa

    outdir = Path(outdir)
    pq_path = atomic_write_parquet(outdir / "comparison.parquet", pa.Table.from_pylist(list(rows)))
    md_path = atomic_write_text(outdir / "comparison.md", comparison_markdown(rows) + "\n")
    png = plot_comparison(rows, outdir / "comparison.png")
    log.info("comparison written to %s", outdir)
    return {"parquet": pq_path, "markdown": md_path, "plot": png}


def plot_comparison(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One panel per held-out metric: baseline and each config's selected mean, NFE/prompt in the labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["label"] for r in rows))
    metrics = [m for m in dict.fromkeys(r["metric"] for r in rows) if any(r["held_out"] for r in rows if r["metric"] == m)]
    metrics = metrics or list(dict.fromkeys(r["metric"] for r in rows))
    by = {(r["label"], r["metric"]): r for r in rows}
    nfe = {r["label"]: r["nfe_per_prompt"] for r in rows}
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 3.0), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        first = next(by[(l, m)] for l in labels if (l, m) in by)
        names = ["first"] + [f"{l}\n{nfe[l]:.0f} NFE" for l in labels]
        vals = [first["baseline"] or 0.0] + [(by[(l, m)]["selected"] or 0.0) if (l, m) in by else 0.0 for l in labels]
        ax.bar(range(len(vals)), vals, color=["#999"] + ["#c53", "#36a", "#5a5", "#a5a", "#aa5"][: len(labels)])
        ax.set_xticks(range(len(vals)), names, fontsize=6, rotation=30, ha="right")
        ax.set_title(m + ("" if first["higher_is_better"] else " (↓)"), fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)
    return path
