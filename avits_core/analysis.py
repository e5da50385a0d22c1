"""Questions asked of a finished run without generating anything: budgets, ablations, diagnostics.

Everything here reads the stored tables once (:func:`load_run_data`), replays selections in memory
with :func:`avits_core.selection.replay` (the same code the online run used) and evaluates the
picks on the stored metrics: SynthAV's oracle metrics (from ``candidates.truth``) and every
verifier's stored reward.

- :func:`bon_at_k`: Best-of-k for k = 1..N from the first k candidates of each prompt, any spec.
- :func:`ablate`: every non-empty subset of the verifiers x every aggregator.
- :func:`diagnostics`: gain on the guided verifiers vs gain on held-out metrics (the hacking
  indicator), Spearman correlations between verifiers and with the oracle metrics, and the Pareto
  front of each prompt's candidates over the guided verifiers.

Gains are ``selected mean - baseline mean`` in each metric's own units, and ``norm_gain`` divides by
the metric's standard deviation over all candidates of the run, so gains of metrics on different
scales can be compared; for lower-is-better metrics the sign is flipped so that a positive
``norm_gain`` is always an improvement.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avits_core.selection import SelectionSpec, replay

log = logging.getLogger(__name__)


@dataclass
class RunData:
    prompt_order: list[str]
    candidates: list[dict[str, Any]]
    rewards: list[dict[str, Any]]  # ok rows: candidate_id, verifier, value, event_seq
    values: dict[str, dict[str, float]]  # candidate_id -> metric -> value (oracle + verifier rewards)
    directions: dict[str, bool]  # metric -> higher is better
    oracle_metrics: list[str]
    verifiers: list[str]
    nfe: dict[str, int]

    def baseline(self) -> dict[str, str]:
        first: dict[str, str] = {}
        for c in sorted(self.candidates, key=lambda c: c["candidate_id"]):
            first.setdefault(c["prompt_id"], c["candidate_id"])
        return first

    def metric_std(self, metric: str) -> float:
        xs = np.array([v[metric] for v in self.values.values() if metric in v], dtype=float)
        return float(xs.std()) if xs.size > 1 else 0.0


def load_run_data(ctx) -> RunData:
    from avits_core.runner import _metric_directions
    from avits_core.store.duck import connect

    con = connect(ctx.store.path)
    cands = con.sql(
        "SELECT prompt_id, candidate_id, generation, nfe, truth FROM candidates ORDER BY candidate_id"
    ).to_arrow_table().to_pylist()
    rew = con.sql(
        "SELECT candidate_id, verifier, value, event_seq FROM rewards WHERE status = 'ok'"
    ).to_arrow_table().to_pylist()
    con.close()
    values: dict[str, dict[str, float]] = {c["candidate_id"]: {} for c in cands}
    oracle_names: list[str] = []
    if ctx.cfg.evaluation.oracle:
        from avits_core.metrics.oracle import ORACLE_METRICS, oracle_metrics

        for c in cands:
            if c["truth"]:
                values[c["candidate_id"]].update(oracle_metrics(json.loads(c["truth"])))
        if any(c["truth"] for c in cands):
            oracle_names = list(ORACLE_METRICS)
    for r in rew:
        values.setdefault(r["candidate_id"], {})[r["verifier"]] = r["value"]
    verifiers = sorted({r["verifier"] for r in rew})
    return RunData(
        prompt_order=[p.prompt_id for p in ctx.prompts],
        candidates=[{k: c[k] for k in ("prompt_id", "candidate_id", "generation")} for c in cands],
        rewards=rew,
        values=values,
        directions=_metric_directions(),
        oracle_metrics=oracle_names,
        verifiers=verifiers,
        nfe={c["candidate_id"]: int(c["nfe"]) for c in cands},
    )


def mean_metrics(data: RunData, picks: dict[str, str | None]) -> dict[str, float]:
    """Mean of every metric over the picked candidates (prompts with no pick are skipped)."""
    acc: dict[str, list[float]] = {}
    for cid in picks.values():
        if cid is None:
            continue
        for m, v in data.values.get(cid, {}).items():
            if v is not None:
                acc.setdefault(m, []).append(float(v))
    return {m: float(np.mean(v)) for m, v in acc.items()}


def run_spec(data: RunData, spec: SelectionSpec) -> dict[str, str | None]:
    from avits_core.runner import higher_is_better

    res = replay(spec, data.candidates, [r for r in data.rewards if r["verifier"] in spec.verifiers],
                 higher_is_better(spec.verifiers), data.prompt_order)
    return {s["prompt_id"]: s["candidate_id"] for s in res.selections}


def _gain_rows(data: RunData, base: dict[str, float], sel: dict[str, float], guided: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for m in sorted(set(base) | set(sel)):
        b, s = base.get(m), sel.get(m)
        hib = data.directions.get(m, True)
        std = data.metric_std(m)
        gain = None if b is None or s is None else s - b
        norm = None if gain is None or std == 0 else (gain if hib else -gain) / std
        rows.append(dict(metric=m, guided=m in guided, oracle=m in data.oracle_metrics, higher_is_better=hib,
                         baseline=b, selected=s, change=gain, norm_gain=norm))
    return rows


def bon_at_k(data: RunData, spec: SelectionSpec, ks: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One row per (k, metric): the spec's selection restricted to the first k candidates of each prompt."""
    n_max = max(sum(1 for c in data.candidates if c["prompt_id"] == p) for p in data.prompt_order)
    ks = list(ks or range(1, n_max + 1))
    rows = []
    for k in ks:
        s = SelectionSpec(spec.verifiers, spec.weights, spec.aggregator, dict(spec.params), budget=k)
        picks = run_spec(data, s)
        nfe = [sum(data.nfe[cid] for cid in sorted(c["candidate_id"] for c in data.candidates if c["prompt_id"] == p)[:k])
               for p in data.prompt_order]
        for m, v in sorted(mean_metrics(data, picks).items()):
            rows.append(dict(k=k, nfe_per_prompt=float(np.mean(nfe)), metric=m, value=v,
                             higher_is_better=data.directions.get(m, True), oracle=m in data.oracle_metrics,
                             guided=m in spec.verifiers))
    return rows


DEFAULT_AGGREGATORS = ("weighted", "rank", "minmax", "zscore_candidate", "zscore_history", "arw")


def ablate(data: RunData, verifiers: Sequence[str], aggregators: Sequence[str] = DEFAULT_AGGREGATORS,
           params: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every non-empty subset of ``verifiers`` x every aggregator (equal weights): one row per
    (subset, aggregator, metric) with baseline, selected, change and norm_gain."""
    base = mean_metrics(data, data.baseline())
    rows = []
    for r in range(1, len(verifiers) + 1):
        for subset in itertools.combinations(verifiers, r):
            for agg in aggregators:
                spec = SelectionSpec(list(subset), [1.0] * len(subset), agg, dict((params or {}).get(agg, {})))
                sel = mean_metrics(data, run_spec(data, spec))
                for g in _gain_rows(data, base, sel, subset):
                    rows.append(dict(verifiers="+".join(subset), n_verifiers=len(subset), aggregator=agg,
                                     selection_id=spec.selection_id, **g))
    return rows


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return None
    return float(spearmanr(a[ok], b[ok]).statistic)


def diagnostics(data: RunData, spec: SelectionSpec) -> dict[str, Any]:
    """Hacking indicator, Spearman correlations (pooled over all candidates, and the mean of
    within-prompt correlations) and Pareto-front membership of the selected candidates."""
    from avits_core.aggregate.pareto import pareto_front
    from avits_core.runner import higher_is_better

    picks = run_spec(data, spec)
    gains = _gain_rows(data, mean_metrics(data, data.baseline()), mean_metrics(data, picks), spec.verifiers)
    g_guided = [g["norm_gain"] for g in gains if g["guided"] and g["norm_gain"] is not None]
    g_held = [g["norm_gain"] for g in gains if g["oracle"] and g["norm_gain"] is not None]
    names = list(data.verifiers) + list(data.oracle_metrics)
    ids = [c["candidate_id"] for c in data.candidates]
    cols = {m: np.array([data.values[c].get(m, np.nan) if data.values[c].get(m) is not None else np.nan for c in ids], float)
            for m in names}
    by_prompt: dict[str, list[int]] = {}
    for i, c in enumerate(data.candidates):
        by_prompt.setdefault(c["prompt_id"], []).append(i)
    corr = []
    for a, b in itertools.combinations(names, 2):
        within = [_spearman(cols[a][ix], cols[b][ix]) for ix in by_prompt.values()]
        within = [w for w in within if w is not None]
        corr.append(dict(a=a, b=b, pooled=_spearman(cols[a], cols[b]),
                         within_prompt=float(np.mean(within)) if within else None))
    hib = higher_is_better(spec.verifiers)
    on_front = []
    for pid, ix in by_prompt.items():
        cid = picks.get(pid)
        if cid is None:
            continue
        vals = {v: np.array([cols[v][i] * (1 if hib[v] else -1) for i in ix]) for v in spec.verifiers}
        ok = np.all([np.isfinite(x) for x in vals.values()], axis=0)
        idx = [i for i, good in zip(ix, ok) if good]
        if not idx:
            continue
        front = pareto_front({v: x[ok] for v, x in vals.items()})
        on_front.append(bool(front[[ids[i] for i in idx].index(cid)]) if cid in [ids[i] for i in idx] else False)
    return dict(
        selection_id=spec.selection_id,
        gains=gains,
        guided_norm_gain=float(np.mean(g_guided)) if g_guided else None,
        held_out_norm_gain=float(np.mean(g_held)) if g_held else None,
        hacking_gap=(float(np.mean(g_guided)) - float(np.mean(g_held))) if g_guided and g_held else None,
        correlations=corr,
        selected_on_pareto_front=float(np.mean(on_front)) if on_front else None,
    )


def write_table(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
    tmp.replace(path)
    return path


def markdown_table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    def f(x: Any) -> str:
        return "–" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(f(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out)
