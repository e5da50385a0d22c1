"""Stateless and simple stateful aggregators, plus the selection helper.

Every aggregator takes *oriented* scores (higher is better) of one prompt's candidates, one
float array per verifier, and returns one float64 per candidate (higher is better). Input is
validated by :meth:`Aggregator.check`: a missing verifier, a length mismatch, NaN or an infinite
value raises :class:`~avits_core.errors.ScoreError` naming the verifier and candidate index.

Decisions where the spec is silent (kept here so that a re-rank is reproducible):

* ``minmax``: a verifier whose scores are all equal within the prompt maps every candidate to 0.5
  (it carries no preference, and 0.5 keeps the aggregate in the same [0, sum w] range).
* ``rank``: ties get the mean of the ranks they span (like ``scipy.stats.rankdata(method="average")``);
  ranks 1..n are mapped to (rank - 1) / (n - 1) so the best is 1 and the worst 0; a single
  candidate gets 1. Weights must be >= 0 with a positive sum (they are normalised to sum 1).
* ``zscore_candidate``: population standard deviation (ddof = 0) over the prompt's candidates;
  a constant verifier contributes 0 to every candidate.
* ``zscore_history``: mean and *sample* standard deviation (ddof = 1) of every score observed so
  far through ``observe`` (all prompts of the stream). With fewer than two observations, or a zero
  standard deviation, std 1 is used; with no observation at all the mean is 0.
* ``zscore``: prior statistics come from the ``stats`` parameter; statistics for verifiers outside
  the set are ignored (one stats file can serve several verifier sets).
* Parameters a class does not accept raise :class:`~avits_core.errors.ConfigError` listing the
  accepted ones. Extra keys in ``observe(**event)`` are ignored. Stateless aggregators still
  validate the scores handed to ``observe`` (and otherwise ignore them).
* :func:`select_best` breaks exact ties by the lowest candidate index.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from avits_core.aggregate.base import Aggregator
from avits_core.errors import ConfigError, ScoreError

log = logging.getLogger(__name__)


def take_params(agg_name: str, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``params`` over ``defaults``; a key not in ``defaults`` raises ConfigError."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        accepted = ", ".join(sorted(defaults)) or "none"
        raise ConfigError(f"aggregator {agg_name!r}: unknown parameter(s) {unknown}; accepted: {accepted}")
    out = dict(defaults)
    out.update(params)
    return out


def select_best(aggregate: Any) -> int:
    """Index of the best candidate: argmax of ``aggregate`` (1-D, finite, non-empty).

    Exact ties are broken deterministically by the lowest candidate index.
    """
    a = np.asarray(aggregate, dtype=np.float64)
    if a.ndim != 1:
        raise ScoreError(f"select_best: aggregate must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ScoreError("select_best: aggregate is empty (no candidates)")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ScoreError(f"select_best: non-finite aggregate {a[bad[0]]!r} at candidate index {int(bad[0])}")
    return int(np.argmax(a))  # numpy returns the first maximum


class RunningMoments:
    """Count, mean and sum of squared deviations (M2) of a stream, merged batch by batch in float64
    (Chan et al.'s parallel form of Welford's update; exact up to rounding, O(batch) per update)."""

    __slots__ = ("n", "mean", "m2")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        nb = int(x.size)
        if nb == 0:
            return
        mb = float(x.mean())
        m2b = float(np.square(x - mb).sum())
        na = self.n
        n = na + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * na * nb / n
        self.n = n

    @property
    def var_pop(self) -> float:
        """Population variance (mean squared deviation); 0 for an empty stream."""
        return self.m2 / self.n if self.n else 0.0

    @property
    def std_sample(self) -> float:
        """Sample standard deviation (ddof = 1); NaN with fewer than two values."""
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else float("nan")


class _Simple(Aggregator):
    """Shared constructor: validates parameters against ``defaults``."""

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, verifiers: Sequence[str], weights: Mapping[str, float] | None = None, **params: Any):
        super().__init__(verifiers, weights)
        self.params = take_params(self.name, params, self.defaults)

    def observe(self, scores: Mapping[str, Any], **event: Any) -> None:
        """Validate the event's scores (so bad input fails at the same point for every
        aggregator); stateless aggregators learn nothing from it."""
        self.check(scores)

    def _weighted_sum(self, per_verifier: Mapping[str, np.ndarray]) -> np.ndarray:
        out = np.zeros_like(next(iter(per_verifier.values())), dtype=np.float64)
        for v in self.verifiers:
            out += self.weights[v] * per_verifier[v]
        return out


class WeightedSum(_Simple):
    """``weighted``: sum_k w_k * r_k of the raw oriented scores. Range: that of the scores."""

    name = "weighted"

    def combine(self, scores: Mapping[str, Any]) -> np.ndarray:
        return self._weighted_sum(self.check(scores))


def average_rank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` in ascending order (1 = smallest); ties get the mean of their ranks."""
    n = x.size
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], n]  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of starts+1 .. ends
    ranks_sorted = np.repeat(group_rank, ends - starts)
    out = np.empty(n, dtype=np.float64)
    out[order] = ranks_sorted
    return out


class RankAggregator(_Simple):
    """``rank``: per verifier, the average rank of each candidate among the prompt's candidates
    (ties share the mean rank), scaled to [0, 1] with best = 1 (a single candidate gets 1); the
    aggregate is the weighted mean over verifiers with weights normalised to sum 1. Range [0, 1]."""

    name = "rank"

    def __init__(self, verifiers: Sequence[str], weights: Mapping[str, float] | None = None, **params: Any):
        super().__init__(verifiers, weights, **params)
        neg = {v: w for v, w in self.weights.items() if w < 0}
        if neg:
            raise ScoreError(f"rank: weights must be >= 0, got {neg}")
        total = sum(self.weights.values())
        if total <= 0:
            raise ScoreError(f"rank: weights must have a positive sum, got {self.weights}")
        self.norm_weights = {v: w / total for v, w in self.weights.items()}

    def combine(self, scores: Mapping[str, Any]) -> np.ndarray:
        s = self.check(scores)
        n = next(iter(s.values())).size
        out = np.zeros(n, dtype=np.float64)
        for v in self.verifiers:
            r = np.ones(n) if n == 1 else (average_rank(s[v]) - 1.0) / (n - 1)
            out += self.norm_weights[v] * r
        return out


class MinMax(_Simple):
    """``minmax``: per verifier (x - min) / (max - min) over the prompt's candidates, in [0, 1]
    (a constant verifier gives 0.5 to every candidate), then sum_k w_k * normalised_k."""

    name = "minmax"

    def combine(self, scores: Mapping[str, Any]) -> np.ndarray:
        s = self.check(scores)
        norm: dict[str, np.ndarray] = {}
        for v in self.verifiers:
            x = s[v]
            lo, hi = float(x.min()), float(x.max())
            norm[v] = np.full_like(x, 0.5) if hi == lo else (x - lo) / (hi - lo)
        return self._weighted_sum(norm)


class ZScorePrior(_Simple):
    """``zscore``: per verifier (x - mean_k) / std_k with *prior* statistics given as
    ``stats={verifier: {"mean": m, "std": s}}`` (std > 0), then sum_k w_k * z_k. Unbounded."""

    name = "zscore"
    defaults: ClassVar[dict[str, Any]] = {"stats": None}

    def __init__(self, verifiers: Sequence[str], weights: Mapping[str, float] | None = None, **params: Any):
        super().__init__(verifiers, weights, **params)
        stats = self.params["stats"]
        if not isinstance(stats, Mapping):
            raise ConfigError(
                "zscore: needs parameter stats={verifier: {'mean': m, 'std': s}} for verifiers "
                f"{self.verifiers}; got {stats!r}"
            )
        self.stats: dict[str, tuple[float, float]] = {}
        for v in self.verifiers:
            if v not in stats:
                raise ConfigError(f"zscore: stats has no entry for verifier {v!r} (has {sorted(stats)})")
            st = stats[v]
            if not isinstance(st, Mapping) or "mean" not in st or "std" not in st:
                raise ConfigError(f"zscore: stats[{v!r}] must be a mapping with 'mean' and 'std', got {st!r}")
            try:
                m, sd = float(st["mean"]), float(st["std"])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"zscore: stats[{v!r}] mean/std are not numbers: {st!r}") from exc
            if not math.isfinite(m):
                raise ConfigError(f"zscore: stats[{v!r}]['mean'] is not finite: {m}")
            if not (math.isfinite(sd) and sd > 0):
                raise ConfigError(f"zscore: stats[{v!r}]['std'] must be finite and > 0, got {sd}")
            self.stats[v] = (m, sd)

    def combine(self, scores: Mapping[str, Any]) -> np.ndarray:
        s = self.check(scores)
        return self._weighted_sum({v: (s[v] - self.stats[v][0]) / self.stats[v][1] for v in self.verifiers})


class ZScoreCandidate(_Simple):
    """``zscore_candidate``: per verifier (x - mean) / std over the prompt's candidates (population
    std; a constant verifier gives 0 to all), then sum_k w_k * z_k. Unbounded."""

    name = "zscore_candidate"

    def combine(self, scores: Mapping[str, Any]) -> np.ndarray:
        s = self.check(scores)
        z: dict[str, np.ndarray] = {}
        for v in self.verifiers:
            x = s[v]
            sd = float(x.std())
            z[v] = np.zeros_like(x) if sd == 0.0 else (x - x.mean()) / sd
        return self._weighted_sum(z)


class ZScoreHistory(_Simple):
    """``zscore_history``: per verifier (x - mean_H) / std_H where mean_H and the sample std_H run
    over every score observed so far in the stream (all prompts, via ``observe``); std 1 before two
    observations or when std_H is 0, mean 0 before any. Then sum_k w_k * z_k. Unbounded."""

    name = "zscore_history"
    stateful = True

    def __init__(self, verifiers: Sequence[str], weights: Mapping[str, float] | None = None, **params: Any):
        super().__init__(verifiers, weights, **params)
        self.moments = {v: RunningMoments() for v in self.verifiers}

    def observe(self, scores: Mapping[str, Any], **event: Any) -> None:
        s = self.check(scores)
        for v in self.verifiers:
            self.moments[v].update(s[v])

    def combine(self, scores: Mapping[str, Any]) -> np.ndarray:
        s = self.check(scores)
        z: dict[str, np.ndarray] = {}
        for v in self.verifiers:
            m = self.moments[v]
            sd = m.std_sample if m.n > 1 else 1.0
            if sd == 0.0:
                sd = 1.0
            z[v] = (s[v] - m.mean) / sd
        return self._weighted_sum(z)

    def reset(self) -> None:
        super().reset()
        self.moments = {v: RunningMoments() for v in self.verifiers}
