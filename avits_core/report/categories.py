"""The per-category report of a JavisBench run: ``<run>/report/categories.md`` (one Markdown table per
aspect) and ``<run>/analysis/categories-<selection_id>.parquet`` (the rows of
:func:`avits_core.metrics.categories.category_table`, one per aspect x category x metric; the
computation and the meaning of every column are documented there)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from avits_core.metrics.categories import CATEGORY_COLUMNS, category_table, has_categories
from avits_core.report.format import atomic_write_parquet, atomic_write_text, markdown_table

log = logging.getLogger(__name__)

_HEADERS = ("category", "title", "metric", "better", "n", "baseline", "selected", "change")


def categories_markdown(rows: Sequence[Mapping[str, Any]], selection_id: str) -> str:
    """One Markdown table per aspect: category, title, metric, prompts, baseline, selected, change."""
    lines = [
        f"# Results per category (selection `{selection_id}`)",
        "",
        "Mean over the prompts of each JavisBench category (`cat<k>_ind`); a prompt tagged with several "
        "categories of an aspect counts in each. Baseline = the first candidate of each prompt. "
        "`n` = prompts in the category (baseline/selected values present).",
        "",
    ]
    aspects = sorted({r["aspect"] for r in rows}, key=lambda a: int(a[3:]))
    if not aspects:
        lines.append("(no categories)")
    for a in aspects:
        cells = [dict(category=r["category"], title=r["title"], better="higher" if r.get("higher_is_better", True) else "lower",
                      metric=r["metric"] + (" (held out)" if r.get("held_out") else ""),
                      n=f"{r['n_prompts']} ({r['n_baseline']}/{r['n_selected']})",
                      baseline=r["baseline"], selected=r["selected"], change=r["change"])
                 for r in rows if r["aspect"] == a]
        lines += [f"## {a}", "", markdown_table(cells, _HEADERS), ""]
    return "\n".join(lines)


def categories_arrow(rows: Sequence[Mapping[str, Any]]) -> Any:
    """The category rows as a pyarrow Table with a fixed schema (also when empty)."""
    import pyarrow as pa

    schema = pa.schema([
        ("selection_id", pa.string()), ("aspect", pa.string()), ("category", pa.int64()), ("title", pa.string()),
        ("metric", pa.string()), ("n_prompts", pa.int64()), ("n_baseline", pa.int64()), ("n_selected", pa.int64()),
        ("baseline", pa.float64()), ("selected", pa.float64()), ("change", pa.float64()),
        ("higher_is_better", pa.bool_()), ("held_out", pa.bool_()),
    ])
    return pa.Table.from_pylist([{c: r.get(c) for c in CATEGORY_COLUMNS} for r in rows], schema=schema)


def write_category_report(ctx: Any, selection_id: str) -> Path | None:
    """Write ``<run>/report/categories.md`` and ``<run>/analysis/categories-<selection_id>.parquet``.

    Returns the Markdown path, or None (and writes nothing) when the prompt set has no categories.
    Both files are written atomically.
    """
    if not has_categories(ctx.prompts):
        return None
    rows = category_table(ctx, selection_id)
    run = ctx.store.path
    pq_path = atomic_write_parquet(run / "analysis" / f"categories-{selection_id}.parquet", categories_arrow(rows))
    md_path = atomic_write_text(run / "report" / "categories.md", categories_markdown(rows, selection_id) + "\n")
    log.info("per-category results: %s, %s (%d rows)", md_path, pq_path, len(rows))
    return md_path
