"""Results: metrics rows from the cached rewards, ``summary.json`` in JavisBench's layout,
``categories.json``, ``evaluation.json``, written once per evaluation id by :func:`finish`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from avits_core.evaluate_folder.plan import describe
from avits_core.evaluate_folder.read import read_entry
from avits_core.evaluate_folder.score import latest_rewards
from avits_core.evaluate_folder.setlevel import set_level_by_category, set_level_rows
from avits_core.evaluate_folder.spec import JAVISBENCH_CATEGORIES, JAVISBENCH_KEYS
from avits_core.media import AVClip
from avits_core.store import fs as sfs

if TYPE_CHECKING:
    from avits_core.evaluate_folder.plan import EvalPlan

def metric_rows(plan: EvalPlan, store: Any) -> list[dict[str, Any]]:
    """One metrics row per (clip, metric) from the cached rewards (value None for an error)."""
    latest = latest_rewards(plan, store)
    rows = []
    for name, v in plan.verifiers.items():
        ext = describe(v, plan.spec.protocol)
        for e in plan.entries:
            r = latest.get((name, e.candidate_id))
            rows.append({"selection_id": plan.evaluation_id, "prompt_id": e.prompt.prompt_id,
                         "candidate_id": e.candidate_id, "metric": v.name,
                         "value": r["value"] if r and r["status"] == "ok" else None,
                         "held_out": True, "extractor": ext,
                         "_error": (r["error"] if r else "not scored") if not (r and r["status"] == "ok") else None})
    return rows


def _mean(vals: Sequence[float | None]) -> float | None:
    ok = [float(x) for x in vals if x is not None and math.isfinite(float(x))]
    return float(np.mean(ok)) if ok else None


def summarize(plan: EvalPlan, rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary laid out like JavisBench's evaluator JSON, per-category rows)."""
    from avits_core.metrics.categories import has_categories, prompt_categories

    verbose = has_categories(plan.prompts)
    cats = prompt_categories(plan.prompts) if verbose else {}
    aspects: dict[int, int] = {}
    for cs in cats.values():
        for c in cs:
            aspects[c.k] = max(aspects.get(c.k, 0), c.index + 1)
    if plan.spec.protocol == "javisbench":  # the evaluator's lists have one entry per category of its taxonomy
        for k in aspects:
            aspects[k] = max(aspects[k], JAVISBENCH_CATEGORIES.get(k, 0))
    order = {e.prompt.prompt_id: e.index for e in plan.entries}
    summary: dict[str, Any] = {}
    cat_rows: list[dict[str, Any]] = []
    by_metric: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_metric.setdefault(r["metric"], []).append(r)
    for metric, rs in by_metric.items():
        key = JAVISBENCH_KEYS.get(metric, metric)
        if rs[0]["prompt_id"] is None:  # set-level: {"overall", "<aspect>": [per category]} like the evaluator
            if not verbose:
                summary[key] = rs[0]["value"]
                continue
            d = {"overall": rs[0]["value"]}
            for k in sorted(aspects):
                d[str(k)] = [set_level_by_category(plan, metric, [order[pid] for pid, cs in cats.items()
                                                                  if any(c.k == k and c.index == i for c in cs)])
                             for i in range(aspects[k])]
            summary[key] = d
            continue
        rs = sorted(rs, key=lambda r: order[r["prompt_id"]])
        values = [r["value"] for r in rs]
        if not verbose:
            summary[key] = _mean(values)
            continue
        d: dict[str, Any] = {"overall": _mean(values), "all": values}
        for k in sorted(aspects):
            per = []
            for i in range(aspects[k]):
                vals = [r["value"] for r in rs if any(c.k == k and c.index == i for c in cats[r["prompt_id"]])]
                per.append(_mean(vals))
                cat_rows.append({"metric": metric, "aspect": f"cat{k}", "category": i,
                                 "title": next((c.title for cs in cats.values() for c in cs
                                                if c.k == k and c.index == i and c.title), None),
                                 "n": sum(v is not None for v in vals), "mean": per[-1],
                                 "n_failed": sum(v is None for v in vals)})
            d[str(k)] = per
        summary[key] = d
    return summary, cat_rows


def finish(plan: EvalPlan, store: Any) -> dict[str, Any]:
    """Write metrics rows (once per evaluation id), summary.json, categories.json, evaluation.json."""
    rows = metric_rows(plan, store)
    mine = [r for r in store.read("metrics").to_pylist() if r["selection_id"] == plan.evaluation_id]
    existing = {(r["metric"], r["candidate_id"]) for r in mine}
    if plan.set_metrics and not any(c is None for _, c in existing):
        readable, index = [], []
        for e in plan.entries:
            clip, _ = read_entry(e, plan.spec.protocol)
            if isinstance(clip, AVClip):
                readable.append(clip)
                index.append(e.index)
        set_rows = set_level_rows(plan, readable, index)
    else:
        set_rows = [r for r in mine if r["candidate_id"] is None]
    new = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows
           if (r["metric"], r["candidate_id"]) not in existing]
    new += [r for r in set_rows if (r["metric"], None) not in existing]
    if new:
        store.append("metrics", [{k: r[k] for k in ("selection_id", "prompt_id", "candidate_id", "metric",
                                                     "value", "held_out", "extractor")} for r in new])
    all_rows = rows + [dict(r) for r in set_rows]
    summary, cat_rows = summarize(plan, all_rows)
    errors: dict[str, dict[str, str]] = {}
    for r in rows:
        if r["_error"]:
            errors.setdefault(r["metric"], {})[r["prompt_id"]] = r["_error"]
    info = {
        "evaluation_id": plan.evaluation_id, "folder": str(Path(plan.spec.folder).resolve()),
        "prompts": str(Path(plan.spec.prompts).resolve()), "protocol": plan.spec.protocol,
        "naming": plan.naming, "n_prompts": len(plan.prompts),
        "n_missing": sum(e.path is None for e in plan.entries), "extra_files": plan.extra,
        "metrics": {n: {"version": v.cache_version, "extractor": describe(v, plan.spec.protocol),
                        "summary_key": JAVISBENCH_KEYS.get(n, n)} for n, v in plan.verifiers.items()},
        "set_metrics": {n: dict(p) for n, p in plan.set_metrics.items()},
        "reference": str(plan.spec.reference) if plan.spec.reference else None,
        "n_errors": {m: len(e) for m, e in errors.items()}, "errors": errors,
    }
    for name, obj in (("summary.json", summary), ("categories.json", cat_rows), ("evaluation.json", info)):
        sfs.put_bytes(plan.out / name,
                      (json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
    store.update_run_json(kind="evaluate", evaluation_id=plan.evaluation_id, protocol=plan.spec.protocol,
                          folder=info["folder"], prompts=info["prompts"])
    return {"summary": summary, "evaluation": info, "categories": cat_rows}

