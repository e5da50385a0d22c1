"""Every verifier subset x every aggregator (``avits ablate``)."""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

from avits_core.analysis.data import RunData, gain_rows, gain_summary, mean_metrics, run_spec
from avits_core.errors import ConfigError
from avits_core.selection import SelectionSpec

#: Aggregators an ablation runs by default: every built-in one that needs no prior statistics.
DEFAULT_AGGREGATORS: tuple[str, ...] = ("weighted", "rank", "minmax", "zscore_candidate", "zscore_history", "arw")


def ablation_specs(data: RunData, verifiers: Sequence[str], aggregators: Sequence[str] = DEFAULT_AGGREGATORS,
                   params: Mapping[str, Mapping[str, Any]] | None = None) -> list[SelectionSpec]:
    """Every non-empty subset of ``verifiers`` x every aggregator (weights and params: :mod:`avits_core.analysis`)."""
    from avits_core.aggregate import get_aggregator

    if not verifiers:
        raise ConfigError("an ablation needs at least one verifier")
    if len(set(verifiers)) != len(verifiers):
        raise ConfigError(f"verifier listed twice in {list(verifiers)}")
    if not aggregators:
        raise ConfigError("an ablation needs at least one aggregator")
    specs = []
    for r in range(1, len(verifiers) + 1):
        for subset in itertools.combinations(verifiers, r):
            w = [data.run_weights.get(v, 1.0) for v in subset]
            if sum(w) <= 0:  # a subset of zero-weight (evaluation-only) verifiers: equal weights
                w = [1.0] * len(subset)
            for agg in aggregators:
                p = dict((params or {}).get(agg, data.run_params if agg == data.run_aggregator else {}))
                spec = SelectionSpec(list(subset), w, agg, p)
                get_aggregator(agg, spec.verifiers, spec.weight_map, **spec.params)  # validate before any work
                specs.append(spec)
    return specs


def ablate(data: RunData, verifiers: Sequence[str], aggregators: Sequence[str] = DEFAULT_AGGREGATORS,
           params: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every non-empty subset of ``verifiers`` x every aggregator: one row per (subset, aggregator,
    metric) with verifiers ('+'-joined), n_verifiers, aggregator, selection_id, metric, guided,
    held_out, oracle, higher_is_better, baseline, selected, change, norm_gain, n_prompts.
    (2^V - 1) x len(aggregators) x (number of metrics) rows."""
    specs = ablation_specs(data, verifiers, aggregators, params)
    for spec in specs:
        data.check_spec(spec)
    base = mean_metrics(data, data.baseline())
    rows = []
    for spec in specs:
        picks = run_spec(data, spec)
        n = sum(1 for c in picks.values() if c is not None)
        for g in gain_rows(data, base, mean_metrics(data, picks), spec.verifiers):
            rows.append(dict(verifiers="+".join(spec.verifiers), n_verifiers=len(spec.verifiers),
                             aggregator=spec.aggregator, selection_id=spec.selection_id, n_prompts=n, **g))
    return rows


def ablation_summary(data: RunData, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The wide ablation table: a ``(baseline)`` row, then one row per (subset, aggregator) in the
    order of ``rows``: the selected mean of each held-out metric (oracle metrics when the run has
    them, else every metric), guided_gain, held_out_gain and hacking_gap (:mod:`avits_core.analysis`)."""
    if not rows:
        return []
    shown = list(data.oracle_metrics) or sorted({r["metric"] for r in rows})
    first = [r for r in rows if (r["verifiers"], r["aggregator"]) == (rows[0]["verifiers"], rows[0]["aggregator"])]
    base = {r["metric"]: r["baseline"] for r in first}
    out: list[dict[str, Any]] = [dict(verifiers="(baseline)", aggregator="–", **{m: base.get(m) for m in shown},
                                      guided_gain=None, held_out_gain=None, hacking_gap=None)]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["verifiers"], r["aggregator"]), []).append(r)
    for (v, a), rs in groups.items():
        sel = {r["metric"]: r["selected"] for r in rs}
        row: dict[str, Any] = dict(verifiers=v, aggregator=a, **{m: sel.get(m) for m in shown})
        row.update(gain_summary(data, rs, v.split("+")))
        out.append(row)
    return out
