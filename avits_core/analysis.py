"""Questions asked of a finished run without generating anything: budgets, ablations, diagnostics.

Everything here reads the stored tables once (:func:`load_run_data`), replays selections in memory
with :func:`avits_core.selection.replay` (the same code the online run and every re-rank use) and
evaluates the picks on per-candidate values: SynthAV's oracle metrics (computed from
``candidates.truth``) and every verifier's stored reward. Nothing is written to the run's tables
(:mod:`avits_core.report.analysis` writes the results under ``<run>/analysis/``), except by
:func:`record_budget_selections`,
which stores budgeted selections through the runner exactly as a re-rank does.

- :func:`bon_at_k`: Best-of-k for k = 1..N from the first k candidates of each prompt (candidate_id
  order, the selection's budget rule), for any selection spec, with the NFE spent per prompt.
- :func:`ablate`: every non-empty subset of the verifiers x every aggregator, one row per
  (subset, aggregator, metric); :func:`ablation_summary` makes the wide table (one row per
  (subset, aggregator), a baseline row first).
- :func:`diagnostics`: gain on the guided verifiers vs gain on the held-out metrics (the
  verifier-hacking indicator), Spearman correlations between verifiers and with the oracle
  metrics, and the Pareto front of each prompt's candidates over the guided verifiers.

Definitions (documented decisions):

- *Baseline*: the first candidate of each prompt (lowest candidate_id), i.e. no search; the same
  baseline the ``metrics`` table uses.
- *Gain* of a metric: ``selected mean - baseline mean`` in the metric's own units, over the prompts
  with a selected candidate (a prompt whose selection is null is left out of the selected mean).
  ``norm_gain`` divides the gain by the metric's population standard deviation over all candidates
  of the run and flips its sign for lower-is-better metrics, so that a positive ``norm_gain`` is
  always an improvement and metrics on different scales can be averaged; it is null when the
  metric is constant over the run.
- *Guided* metrics are the verifiers the selection combined. *Held-out* metrics are the others
  (``held_out`` = not used for selection, as in the ``metrics`` table). The single held-out summary
  number (``held_out_gain``) averages the ``norm_gain`` of the oracle metrics when the run has
  them (SynthAV: ground truth, the only measure that no verifier can be hacked into), else of the
  held-out verifier metrics. ``hacking_gap = guided_gain - held_out_gain``: a large positive gap
  means the search improved what it optimised much more than what it should have improved.
- *Ablation weights*: a subset keeps the run's own (relative) weights of its verifiers, and an
  aggregator that is the run's own keeps the run's parameters, so the full-set row of the run's
  aggregator is exactly the online selection. Other aggregators get their default parameters
  (``zscore``, which needs prior statistics, is therefore not in :data:`DEFAULT_AGGREGATORS`).
- *Several versions of a verifier*: the most recently scored ok value of each (candidate, verifier)
  is used.
- *Spearman correlation*: over the candidates where both values exist; null with fewer than 3
  such candidates or when either side is constant. ``pooled`` uses every candidate of the run,
  ``within_prompt`` is the mean of the per-prompt correlations that are defined.
- *Pareto front*: over the guided verifiers (oriented: higher is better) among the prompt's
  eligible candidates (those with every guided reward, within the budget). With strictly positive
  weights, weighted/minmax/rank/zscore*/arw aggregates are strictly increasing in every verifier,
  so their winner always lies on the front; a winner off the front means a zero weight.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from avits_core.errors import ConfigError
from avits_core.selection import SelectionSpec, replay

log = logging.getLogger(__name__)

#: Aggregators an ablation runs by default: every built-in one that needs no prior statistics.
DEFAULT_AGGREGATORS: tuple[str, ...] = ("weighted", "rank", "minmax", "zscore_candidate", "zscore_history", "arw")


@dataclass
class RunData:
    """What the analyses need from one run, read once.

    ``rewards`` holds the ok reward rows as columns (candidate_id, verifier, value, event_seq), one
    row per (candidate, verifier); ``values[candidate_id][metric]`` holds every oracle metric and
    every verifier's reward of each candidate.
    """

    run_id: str
    prompt_order: list[str]
    candidates: list[dict[str, Any]]  # prompt_id, candidate_id, generation (sorted by candidate_id)
    rewards: dict[str, np.ndarray]
    values: dict[str, dict[str, float]]
    directions: dict[str, bool]  # metric -> higher is better
    oracle_metrics: list[str]
    verifiers: list[str]  # every verifier with at least one ok reward
    nfe: dict[str, int]  # candidate_id -> NFE spent on it (nfe_own when recorded, else nfe)
    run_weights: dict[str, float] = field(default_factory=dict)  # guided verifier -> config (relative) weight
    run_aggregator: str = "arw"
    run_params: dict[str, Any] = field(default_factory=dict)
    _std: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def by_prompt(self) -> dict[str, list[str]]:
        """prompt_id -> its candidate_ids in candidate_id order."""
        out: dict[str, list[str]] = {}
        for c in self.candidates:
            out.setdefault(c["prompt_id"], []).append(c["candidate_id"])
        return out

    @property
    def metrics(self) -> list[str]:
        """Oracle metrics, then verifier metrics."""
        return list(self.oracle_metrics) + [v for v in self.verifiers if v not in self.oracle_metrics]

    def baseline(self) -> dict[str, str]:
        """prompt_id -> its first candidate (no search)."""
        return {p: ids[0] for p, ids in self.by_prompt.items() if ids}

    def metric_std(self, metric: str) -> float:
        """Population standard deviation of ``metric`` over every candidate of the run (0 if < 2)."""
        if metric not in self._std:
            xs = np.array([v[metric] for v in self.values.values() if v.get(metric) is not None], dtype=float)
            self._std[metric] = float(xs.std()) if xs.size > 1 else 0.0
        return self._std[metric]

    def check_spec(self, spec: SelectionSpec) -> None:
        """ConfigError when the spec names a verifier this run has no reward for."""
        missing = [v for v in spec.verifiers if v not in self.verifiers]
        if missing:
            raise ConfigError(
                f"run {self.run_id} has no rewards for verifier(s) {missing} (scored: {self.verifiers}); "
                "score them first with `avits rerank RUN --verifiers ...`"
            )


def load_run_data(ctx: Any) -> RunData:
    """Read the candidates and the ok rewards of a run (a :class:`avits_core.runner.RunContext`)."""
    from avits_core import runner
    from avits_core.store.duck import connect

    con = connect(ctx.store.path)
    try:
        cands = con.sql(
            "SELECT prompt_id, candidate_id, generation, kind, nfe, nfe_own, truth FROM candidates ORDER BY candidate_id"
        ).to_arrow_table().to_pylist()
        rew = con.sql(
            "SELECT candidate_id, verifier, arg_max(value, scored_at) AS value, arg_max(event_seq, scored_at) AS event_seq "
            "FROM rewards WHERE status = 'ok' GROUP BY candidate_id, verifier ORDER BY candidate_id, verifier"
        ).to_arrow_table()
    finally:
        con.close()
    values: dict[str, dict[str, float]] = {c["candidate_id"]: {} for c in cands}
    oracle_names: list[str] = []
    if ctx.cfg.evaluation.oracle and any(c["truth"] for c in cands):
        from avits_core.metrics.oracle import ORACLE_METRICS, oracle_metrics

        for c in cands:
            if c["truth"]:
                values[c["candidate_id"]].update(oracle_metrics(json.loads(c["truth"])))
        oracle_names = list(ORACLE_METRICS)
    cid = rew.column("candidate_id").to_pylist()
    ver = rew.column("verifier").to_pylist()
    val = rew.column("value").to_pylist()
    for c, v, x in zip(cid, ver, val):
        values.setdefault(c, {})[v] = x
    cfg = ctx.cfg
    return RunData(
        run_id=ctx.run_id,
        prompt_order=[p.prompt_id for p in ctx.prompts],
        candidates=[{k: c[k] for k in ("prompt_id", "candidate_id", "generation", "kind")} for c in cands],
        rewards={
            "candidate_id": np.array(cid, dtype=object),
            "verifier": np.array(ver, dtype=object),
            "value": np.array(val, dtype=float),
            "event_seq": rew.column("event_seq").to_numpy(zero_copy_only=False),
        },
        values=values,
        directions=runner._metric_directions(),
        oracle_metrics=oracle_names,
        verifiers=sorted(set(ver)),
        nfe={c["candidate_id"]: int(c["nfe_own"] if c["nfe_own"] is not None else c["nfe"]) for c in cands},
        run_weights={v.name: float(v.weight) for v in cfg.verifiers},
        run_aggregator=cfg.aggregator.name,
        run_params=dict(cfg.aggregator.params),
    )


def spec_of_selection(ctx: Any, selection_id: str) -> SelectionSpec:
    """The SelectionSpec of a stored selection (from its ``spec`` JSON); ConfigError if unknown."""
    t = ctx.store.read("selections", ["selection_id", "spec"])
    for sid, spec in zip(t.column("selection_id").to_pylist(), t.column("spec").to_pylist()):
        if sid == selection_id:
            return SelectionSpec(**json.loads(spec))
    known = sorted(set(t.column("selection_id").to_pylist()))
    raise ConfigError(f"no selection {selection_id!r} in run {ctx.run_id}; stored: {', '.join(known) or 'none'}")


def stored_specs(ctx: Any) -> list[SelectionSpec]:
    """The specs of every selection stored in the run, in the order they were first written."""
    t = ctx.store.read("selections", ["selection_id", "spec", "created_at"]).sort_by("created_at")
    seen: dict[str, SelectionSpec] = {}
    for sid, spec in zip(t.column("selection_id").to_pylist(), t.column("spec").to_pylist()):
        if sid not in seen:
            seen[sid] = SelectionSpec(**json.loads(spec))
    return list(seen.values())


# --------------------------------------------------------------------------- selection in memory


def run_spec(data: RunData, spec: SelectionSpec) -> dict[str, str | None]:
    """prompt_id -> the candidate ``spec`` selects (None when no candidate is eligible)."""
    return replay_spec(data, spec).picks


@dataclass
class _Replayed:
    picks: dict[str, str | None]
    aggregates: dict[str, float]


def replay_spec(data: RunData, spec: SelectionSpec) -> _Replayed:
    from avits_core.runner import higher_is_better

    data.check_spec(spec)
    mask = np.isin(data.rewards["verifier"], spec.verifiers)
    rew = {k: v[mask] for k, v in data.rewards.items()}
    res = replay(spec, data.candidates, rew, higher_is_better(spec.verifiers), data.prompt_order)
    return _Replayed({s["prompt_id"]: s["candidate_id"] for s in res.selections}, res.aggregates)


def mean_metrics(data: RunData, picks: Mapping[str, str | None]) -> dict[str, float]:
    """Mean of every metric over the picked candidates (prompts with no pick are skipped)."""
    acc: dict[str, list[float]] = {}
    for cid in picks.values():
        if cid is None:
            continue
        for m, v in data.values.get(cid, {}).items():
            if v is not None and math.isfinite(v):
                acc.setdefault(m, []).append(float(v))
    return {m: float(np.mean(v)) for m, v in acc.items()}


def _held_out_for_summary(data: RunData, guided: Sequence[str]) -> list[str]:
    if data.oracle_metrics:
        return list(data.oracle_metrics)
    return [v for v in data.verifiers if v not in guided]


def gain_rows(data: RunData, base: Mapping[str, float], sel: Mapping[str, float],
              guided: Sequence[str]) -> list[dict[str, Any]]:
    """One row per metric: baseline and selected means, change and norm_gain (module docstring)."""
    rows = []
    for m in sorted(set(base) | set(sel)):
        b, s = base.get(m), sel.get(m)
        hib = data.directions.get(m, True)
        std = data.metric_std(m)
        gain = None if b is None or s is None else s - b
        norm = None if gain is None or std == 0 else (gain if hib else -gain) / std
        rows.append(dict(metric=m, guided=m in guided, held_out=m not in guided, oracle=m in data.oracle_metrics,
                         higher_is_better=hib, baseline=b, selected=s, change=gain, norm_gain=norm))
    return rows


def gain_summary(data: RunData, gains: Sequence[Mapping[str, Any]], guided: Sequence[str]) -> dict[str, float | None]:
    """guided_gain, held_out_gain (oracle metrics when present) and hacking_gap from gain rows."""
    held = set(_held_out_for_summary(data, guided))
    g = [r["norm_gain"] for r in gains if r["guided"] and r["norm_gain"] is not None]
    h = [r["norm_gain"] for r in gains if r["metric"] in held and r["norm_gain"] is not None]
    gg = float(np.mean(g)) if g else None
    hh = float(np.mean(h)) if h else None
    return dict(guided_gain=gg, held_out_gain=hh, hacking_gap=None if gg is None or hh is None else gg - hh)


# --------------------------------------------------------------------------- budgets


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


# --------------------------------------------------------------------------- ablations


def ablation_specs(data: RunData, verifiers: Sequence[str], aggregators: Sequence[str] = DEFAULT_AGGREGATORS,
                   params: Mapping[str, Mapping[str, Any]] | None = None) -> list[SelectionSpec]:
    """Every non-empty subset of ``verifiers`` x every aggregator (weights and params: module docstring)."""
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
    them, else every metric), guided_gain, held_out_gain and hacking_gap (module docstring)."""
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


# --------------------------------------------------------------------------- diagnostics


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
