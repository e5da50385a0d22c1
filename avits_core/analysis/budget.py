"""Best-of-k for k = 1..N from the stored candidates (``avits budget``)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from avits_core.analysis.data import RunData, mean_metrics, run_spec
from avits_core.errors import ConfigError
from avits_core.selection import SelectionSpec


def bon_at_k(data: RunData, spec: SelectionSpec, ks: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One row per (k, metric): ``spec`` restricted to the first k candidates of each prompt.

    ``ks`` defaults to 1..N (N = the most candidates any prompt has). Columns: k, selection_id (of
    the spec with budget k), nfe_per_prompt (mean over prompts of the NFE of their first k
    candidates), n_prompts (prompts with a selected candidate), metric, value (mean over those
    prompts), higher_is_better, guided, held_out, oracle.
    """
    data.check_spec(spec)
    by_prompt = data.by_prompt
    if not by_prompt:
        raise ConfigError(f"run {data.run_id} has no candidates")
    n_max = max(len(ids) for ids in by_prompt.values())
    ks = list(ks) if ks is not None else list(range(1, n_max + 1))
    bad = [k for k in ks if not isinstance(k, (int, np.integer)) or k < 1]
    if bad:
        raise ConfigError(f"budgets must be integers >= 1, got {bad}")
    rows = []
    for k in ks:
        s = SelectionSpec(list(spec.verifiers), list(spec.weights), spec.aggregator, dict(spec.params), budget=int(k),
                          arw_shards=spec.arw_shards)
        picks = run_spec(data, s)
        nfe = float(np.mean([sum(data.nfe[c] for c in ids[:k]) for ids in by_prompt.values()]))
        n = sum(1 for c in picks.values() if c is not None)
        for m, v in sorted(mean_metrics(data, picks).items()):
            rows.append(dict(k=int(k), selection_id=s.selection_id, nfe_per_prompt=nfe, n_prompts=n, metric=m,
                             value=v, higher_is_better=data.directions.get(m, True), guided=m in spec.verifiers,
                             held_out=m not in spec.verifiers, oracle=m in data.oracle_metrics))
    return rows


def budget_wide(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """BoN@k rows -> one row per k: k, NFE/prompt, then one column per metric (held-out first)."""
    metrics = sorted({r["metric"] for r in rows}, key=lambda m: (not next(r["held_out"] for r in rows if r["metric"] == m), m))
    out = []
    for k in sorted({r["k"] for r in rows}):
        rs = {r["metric"]: r for r in rows if r["k"] == k}
        row: dict[str, Any] = {"k": k, "NFE/prompt": next(iter(rs.values()))["nfe_per_prompt"]}
        row.update({m: rs[m]["value"] if m in rs else None for m in metrics})
        out.append(row)
    return out


def record_budget_selections(ctx: Any, spec: SelectionSpec, ks: Sequence[int]) -> list[str]:
    """Store the selection of ``spec`` with each budget k in ``ks`` (selections, arw_trace and
    metrics rows, through :func:`avits_core.runner.select` / :func:`~avits_core.runner.evaluate`,
    exactly as ``avits rerank --budget k`` would; both skip what is already stored). This is what
    the canned ``bon_at_k`` query reads. Returns the selection_ids."""
    from avits_core import runner

    out = []
    for k in ks:
        s = SelectionSpec(list(spec.verifiers), list(spec.weights), spec.aggregator, dict(spec.params), budget=int(k),
                          arw_shards=spec.arw_shards)
        sid = runner.select(ctx, s)
        runner.evaluate(ctx, sid)
        out.append(sid)
    return out
