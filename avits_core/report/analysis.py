"""Writers for the analyses of a finished run (:mod:`avits_core.analysis` computes, this module writes),
all under ``<run>/analysis/``:

- budget:      ``budget-<spec>.parquet`` (BoN@k rows with ``spec_id``), ``budget-<spec>.md`` (the wide
               table: one row per k), ``budget-<spec>.svg`` (curves against k and NFE per prompt)
- ablation:    ``ablation.parquet`` (one row per subset x aggregator x metric), ``ablation.md`` (summary)
- diagnostics: ``diagnostics-<selection>.json`` (one spec), or ``diagnostics.parquet`` + ``diagnostics.md``
               (one summary row per stored selection)

Every file is written atomically. Each writer returns a :class:`Written`: the title and the table the
CLI prints, and the paths it wrote.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from avits_core.errors import ConfigError
from avits_core.report.format import atomic_write_text, markdown_table, write_rows
from avits_core.store.fs import as_path

log = logging.getLogger(__name__)


@dataclass
class Written:
    """What a report writer produced: a ``title``, the ``table`` to show (rows), and the ``paths`` written."""

    title: str
    table: list[dict[str, Any]]
    paths: list[Path] = field(default_factory=list)


def bon_at_k_svg(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> str:
    """BoN@k curves as SVG text (:func:`avits_core.report.svg.line_grid`): one column per metric (held-out
    first), the mean over prompts of the selected candidate against k (top row) and against NFE per prompt
    (bottom row); lower-is-better metrics are marked with a down arrow, guided verifiers with [guided]."""
    from avits_core.analysis import budget_wide
    from avits_core.report import svg

    metrics = list(budget_wide(rows)[0].keys())[2:] if rows else []
    if not metrics:
        raise ConfigError("no BoN@k rows to plot")
    top, bottom = [], []
    for m in metrics:
        rs = sorted((r for r in rows if r["metric"] == m), key=lambda r: r["k"])
        ys = [r["value"] if r["value"] is not None else float("nan") for r in rs]
        color = svg.SELECTED_COLOR if rs[0]["held_out"] else "#35a"
        name = m + ("" if rs[0]["higher_is_better"] else " (↓)") + (" [guided]" if rs[0]["guided"] else "")
        top.append({"title": name, "x": [r["k"] for r in rs], "y": ys, "xlabel": "k (candidates per prompt)",
                    "color": color})
        bottom.append({"x": [r["nfe_per_prompt"] for r in rs], "y": ys, "xlabel": "NFE per prompt", "color": color})
    return svg.line_grid([top, bottom], title=title or "")


def plot_bon_at_k(rows: Sequence[Mapping[str, Any]], path: Path, title: str | None = None) -> Path:
    """:func:`bon_at_k_svg` written (atomically) to ``path``; a PNG of the same name that an older avits
    wrote beside it is removed."""
    from avits_core.store.fs import remove

    out = atomic_write_text(path, bon_at_k_svg(rows, title))
    remove(path.with_suffix(".png"))  # Path or UPath
    return out


def write_budget_report(run_path: str | Path, spec: Any, rows: Sequence[Mapping[str, Any]]) -> Written:
    """BoN@k rows of ``spec`` (from :func:`avits_core.analysis.bon_at_k`) -> Parquet, Markdown, SVG."""
    from avits_core.analysis import budget_wide

    out = as_path(run_path) / "analysis"
    stem = f"budget-{spec.selection_id}"
    pq_path = write_rows([dict(spec_id=spec.selection_id, **r) for r in rows], out / f"{stem}.parquet")
    wide = budget_wide(rows)
    title = f"BoN@k: {spec.aggregator} over {'+'.join(spec.verifiers)} (spec {spec.selection_id})"
    plot = plot_bon_at_k(rows, out / f"{stem}.svg", title=title)
    md = atomic_write_text(out / f"{stem}.md", f"# {title}\n\nMean over prompts of the selected candidate; k = candidates "
                           f"per prompt (the first k).\n\n{markdown_table(wide)}\n")
    return Written(title, wide, [pq_path, md, plot])


def write_ablation_report(run_path: str | Path, data: Any, verifiers: Sequence[str],
                          rows: Sequence[Mapping[str, Any]]) -> Written:
    """Ablation rows (from :func:`avits_core.analysis.ablate`) -> ``ablation.parquet`` and the summary
    table (:func:`avits_core.analysis.ablation_summary`) as ``ablation.md``."""
    from avits_core.analysis import ablation_summary

    out = as_path(run_path) / "analysis"
    pq_path = write_rows(rows, out / "ablation.parquet")
    wide = ablation_summary(data, rows)
    held = "oracle metrics" if data.oracle_metrics else "held-out verifiers"
    md = atomic_write_text(out / "ablation.md",
        f"# Ablation of run `{data.run_id}`\n\nEvery non-empty subset of {', '.join(verifiers)} x every aggregator. "
        f"Metric columns: mean over prompts of the selected candidate. Gains are normalised (metric sd over all "
        f"candidates; positive = better): guided_gain over the subset's verifiers, held_out_gain over the {held}, "
        f"hacking_gap = their difference.\n\n{markdown_table(wide)}\n")
    return Written("ablation: mean over prompts of the selected candidates", wide, [pq_path, md])


def write_diagnostics_table(run_path: str | Path, table: Sequence[Mapping[str, Any]]) -> Written:
    """One summary row per stored selection (:func:`avits_core.analysis.diagnostics_table`) -> Parquet + Markdown."""
    out = as_path(run_path) / "analysis"
    pq_path = write_rows(table, out / "diagnostics.parquet")
    md = atomic_write_text(out / "diagnostics.md", markdown_table(table) + "\n")
    return Written("every stored selection (normalised gains; positive = better)", [dict(r) for r in table], [pq_path, md])


def write_diagnostics(run_path: str | Path, d: Mapping[str, Any]) -> Path:
    """The diagnostics of one spec (:func:`avits_core.analysis.diagnostics`) as ``diagnostics-<selection>.json``."""
    return atomic_write_text(as_path(run_path) / "analysis" / f"diagnostics-{d['selection_id']}.json",
                             json.dumps(d, indent=1, default=str))
