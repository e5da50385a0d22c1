"""A run's candidates and ok rewards read once (:class:`RunData`), selections replayed in memory, and
the gain of a selection over the baseline (the definitions are in :mod:`avits_core.analysis`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from avits_core.errors import ConfigError
from avits_core.selection import SelectionSpec, replay


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
    """One row per metric: baseline and selected means, change and norm_gain (:mod:`avits_core.analysis`)."""
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
