"""Guided vs held-out gain (verifier hacking), Spearman correlations and Pareto membership
(``avits diagnose``)."""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

import numpy as np

from avits_core.analysis.data import RunData, gain_rows, gain_summary, mean_metrics, run_spec
from avits_core.selection import SelectionSpec


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation over the pairs where both are finite; None with < 3 pairs or a
    constant side. Range [-1, 1]."""
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return None
    r = float(spearmanr(a[ok], b[ok]).statistic)
    return max(-1.0, min(1.0, r))


def correlations(data: RunData, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Spearman correlation of every pair of ``names`` (default: every verifier, then the oracle
    metrics): a, b, kind ('verifier-verifier', 'verifier-oracle', 'oracle-oracle'), pooled (all
    candidates), within_prompt (mean of the defined per-prompt correlations), n_prompts (how many
    prompts defined one)."""
    names = list(names) if names is not None else list(data.verifiers) + list(data.oracle_metrics)
    ids = [c["candidate_id"] for c in data.candidates]
    cols = {m: np.array([np.nan if data.values[c].get(m) is None else data.values[c][m] for c in ids], float)
            for m in names}
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(data.candidates):
        groups.setdefault(c["prompt_id"], []).append(i)
    ix = [np.array(g) for g in groups.values()]
    out = []
    for a, b in itertools.combinations(names, 2):
        within = [w for w in (spearman(cols[a][g], cols[b][g]) for g in ix) if w is not None]
        kind = "-".join(sorted(("oracle" if m in data.oracle_metrics else "verifier") for m in (a, b))[::-1])
        out.append(dict(a=a, b=b, kind=kind, pooled=spearman(cols[a], cols[b]),
                        within_prompt=float(np.mean(within)) if within else None, n_prompts=len(within)))
    return out


def pareto_membership(data: RunData, spec: SelectionSpec, picks: Mapping[str, str | None] | None = None
                      ) -> list[dict[str, Any]]:
    """Per prompt: whether the selected candidate lies on the Pareto front of the prompt's eligible
    candidates (within the budget) over the spec's verifiers; prompt_id, selected, on_front,
    front_size, n_eligible. Prompts with no selection are left out."""
    from avits_core.aggregate.pareto import pareto_front
    from avits_core.runner import higher_is_better

    picks = picks if picks is not None else run_spec(data, spec)
    sign = {v: 1.0 if h else -1.0 for v, h in higher_is_better(spec.verifiers).items()}
    out = []
    for pid, ids in data.by_prompt.items():
        cid = picks.get(pid)
        if cid is None:
            continue
        pool = ids[: spec.budget] if spec.budget else ids
        elig = [c for c in pool if all(data.values[c].get(v) is not None and math.isfinite(data.values[c][v])
                                       for v in spec.verifiers)]
        front = pareto_front({v: np.array([sign[v] * data.values[c][v] for c in elig]) for v in spec.verifiers})
        out.append(dict(prompt_id=pid, selected=cid, on_front=bool(front[elig.index(cid)]),
                        front_size=int(front.sum()), n_eligible=len(elig)))
    return out


def diagnostics(data: RunData, spec: SelectionSpec) -> dict[str, Any]:
    """The diagnostics of one selection spec: selection_id, gains (one row per metric),
    guided_gain, held_out_gain, hacking_gap, correlations, pareto (per prompt) and
    selected_on_pareto_front (fraction of prompts whose winner is on the front)."""
    picks = run_spec(data, spec)
    gains = gain_rows(data, mean_metrics(data, data.baseline()), mean_metrics(data, picks), spec.verifiers)
    pareto = pareto_membership(data, spec, picks)
    return dict(
        selection_id=spec.selection_id,
        spec=spec.to_dict(),
        gains=gains,
        **gain_summary(data, gains, spec.verifiers),
        correlations=correlations(data),
        pareto=pareto,
        selected_on_pareto_front=float(np.mean([p["on_front"] for p in pareto])) if pareto else None,
        mean_front_size=float(np.mean([p["front_size"] for p in pareto])) if pareto else None,
    )


def diagnostics_table(data: RunData, specs: Sequence[SelectionSpec]) -> list[dict[str, Any]]:
    """One row per spec (e.g. every stored selection): the hacking indicator and Pareto membership."""
    out = []
    for spec in specs:
        picks = run_spec(data, spec)
        gains = gain_rows(data, mean_metrics(data, data.baseline()), mean_metrics(data, picks), spec.verifiers)
        pareto = pareto_membership(data, spec, picks)
        out.append(dict(selection_id=spec.selection_id, aggregator=spec.aggregator, verifiers="+".join(spec.verifiers),
                        budget=spec.budget, **gain_summary(data, gains, spec.verifiers),
                        selected_on_pareto_front=float(np.mean([p["on_front"] for p in pareto])) if pareto else None))
    return out
