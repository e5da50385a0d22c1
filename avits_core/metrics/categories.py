"""Per-category results for JavisBench prompt sets: baseline vs selected, per category and metric.

JavisBench CSVs tag every prompt along several aspects: column ``cat<k>_ind`` holds the category
index (or several, "0,1") of aspect k and ``cat<k>_title`` its title(s) ("Ambient Sounds,Biological
Sounds"). :func:`prompt_categories` reads them from ``Prompt.meta``; a prompt with several indices in
an aspect belongs to each of those categories (so an aspect's categories may hold more prompts in
total than the prompt set). Titles are matched to indices by position when the title cell lists as
many titles as there are indices; otherwise the category has no title (never a guessed one). When
prompts disagree on the title of one category, the first title seen (in prompt order) is kept and a
warning is logged.

:func:`category_rows` turns the evaluation's ``metrics`` rows (one per evaluated clip and metric;
``selection_id`` null = the baseline, the first candidate of each prompt) into one row per
(aspect, category, metric):

    aspect ("cat0"), category (int index), title (str or None), metric,
    n_prompts   prompts of the set in this category,
    n_baseline  of them with a finite baseline value of this metric,
    n_selected  of them with a finite selected value,
    baseline    mean baseline value over those n_baseline prompts (None when 0),
    selected    mean selected value over those n_selected prompts (None when 0),
    change      selected - baseline (None unless both exist), in the metric's own units,
    higher_is_better, held_out (as in the overall results table)

The means are over prompts (each prompt has one value per metric and role), exactly like the run's
overall results table restricted to the category, so a category holding every prompt reproduces the
overall numbers. Non-finite values are left out of the means and counts (the evaluation stores only
ok rewards, so this only matters for NaN oracle values). Rows are sorted by aspect number, category,
then metric.

:func:`category_table` runs this over a run's stored metrics. Writing the report (Markdown and
Parquet) is :func:`avits_core.report.categories.write_category_report`; this module computes only.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from avits_core.metrics.embedding import _CAT, category_tags
from avits_core.prompts import Prompt

log = logging.getLogger(__name__)


CATEGORY_COLUMNS = (
    "selection_id", "aspect", "category", "title", "metric", "n_prompts", "n_baseline", "n_selected",
    "baseline", "selected", "change", "higher_is_better", "held_out",
)


@dataclass(frozen=True)
class Category:
    """One JavisBench category: aspect number ``k`` (column ``cat<k>_ind``), index and title."""

    k: int
    index: int
    title: str | None

    @property
    def aspect(self) -> str:
        return f"cat{self.k}"


def prompt_categories(prompts: Sequence[Prompt]) -> dict[str, list[Category]]:
    """prompt_id -> the categories the prompt belongs to (empty list for a prompt with no tags).

    Raises ValueError naming the prompt and column for a non-integer index.
    """
    titles: dict[tuple[int, int], str] = {}
    raw: dict[str, list[tuple[int, int, str | None]]] = {}
    for p in prompts:
        mine: list[tuple[int, int, str | None]] = []
        for k, i, title in category_tags(p):
            mine.append((k, i, title))
            if title is None:
                continue
            seen = titles.setdefault((k, i), title)
            if seen != title:
                log.warning("cat%d category %d is titled %r and %r (prompt %s); keeping %r",
                            k, i, seen, title, p.prompt_id, seen)
        raw[p.prompt_id] = mine
    return {pid: sorted({Category(k, i, titles.get((k, i))) for k, i, _ in cats}, key=lambda c: (c.k, c.index))
            for pid, cats in raw.items()}


def has_categories(prompts: Sequence[Prompt]) -> bool:
    """True when any prompt has a ``cat<k>_ind`` column."""
    return any(_CAT.match(col) for p in prompts for col in p.meta)


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(float(x))


def category_rows(
    metric_rows: Sequence[Mapping[str, Any]],
    prompts: Sequence[Prompt],
    selection_id: str,
    *,
    directions: Mapping[str, bool] | None = None,
) -> list[dict[str, Any]]:
    """Per (aspect, category, metric) baseline and selected means (see the module docstring).

    ``metric_rows``: rows with ``selection_id`` (None = baseline), ``prompt_id``, ``metric``,
    ``value`` and optionally ``held_out``; rows of other selections are ignored. ``directions``:
    metric -> higher is better (default True). A row for a prompt not in ``prompts`` raises ValueError.
    """
    cats = prompt_categories(prompts)
    members: dict[Category, list[str]] = defaultdict(list)
    for p in prompts:
        for c in cats[p.prompt_id]:
            members[c].append(p.prompt_id)
    base: dict[tuple[str, str], float] = {}
    sel: dict[tuple[str, str], float] = {}
    held: dict[str, bool] = {}
    metrics: set[str] = set()
    for r in metric_rows:
        sid = r.get("selection_id")
        if sid is not None and sid != selection_id:
            continue
        pid, metric = r["prompt_id"], str(r["metric"])
        if pid not in cats:
            raise ValueError(f"metrics row for prompt_id {pid!r}, which is not in the run's prompt set")
        metrics.add(metric)
        if sid is None:
            target = base
        else:
            target = sel
            if r.get("held_out") is not None:
                held[metric] = held.get(metric, False) or bool(r["held_out"])
        if _finite(r.get("value")):
            # one value per (prompt, metric, role); a duplicate row would be a store bug
            if (pid, metric) in target and target[(pid, metric)] != float(r["value"]):
                raise ValueError(f"two different {metric!r} values for prompt {pid!r} "
                                 f"({'baseline' if sid is None else sid})")
            target[(pid, metric)] = float(r["value"])
    directions = directions or {}
    out: list[dict[str, Any]] = []
    for c in sorted(members, key=lambda c: (c.k, c.index)):
        pids = members[c]
        for metric in sorted(metrics):
            b = [base[(p, metric)] for p in pids if (p, metric) in base]
            s = [sel[(p, metric)] for p in pids if (p, metric) in sel]
            if not b and not s:
                continue
            bm = sum(b) / len(b) if b else None
            sm = sum(s) / len(s) if s else None
            out.append(dict(
                selection_id=selection_id, aspect=c.aspect, category=c.index, title=c.title, metric=metric,
                n_prompts=len(pids), n_baseline=len(b), n_selected=len(s), baseline=bm, selected=sm,
                change=(sm - bm) if bm is not None and sm is not None else None,
                higher_is_better=bool(directions.get(metric, True)), held_out=held.get(metric),
            ))
    return out


def category_table(ctx: Any, selection_id: str) -> list[dict[str, Any]]:
    """:func:`category_rows` over the run's stored ``metrics`` (baseline + ``selection_id``).

    ``ctx`` is a :class:`avits_core.runner.RunContext`. Empty when the prompt set has no categories
    or nothing has been evaluated yet.
    """
    from avits_core.runner import _metric_directions
    from avits_core.store.duck import connect

    if not has_categories(ctx.prompts):
        return []
    con = connect(ctx.store.path)
    try:
        rows = con.sql(
            "SELECT selection_id, prompt_id, metric, value, held_out FROM metrics "
            "WHERE selection_id IS NULL OR selection_id = ?",
            params=[selection_id],
        ).to_arrow_table().to_pylist()
    finally:
        con.close()
    return category_rows(rows, ctx.prompts, selection_id, directions=_metric_directions())
