"""The Aggregator interface: per-verifier rewards of one prompt's candidates -> one score each.

Input to every call is ``scores``: a mapping verifier name -> float array (n_candidates,) of
*oriented* rewards (higher is better; the caller negates lower-is-better verifiers first).
Aggregators are strict: a missing verifier, a length mismatch, NaN or an infinite value raises
ScoreError naming the verifier and candidate index. (What to do with candidates whose reward is
missing is the selection layer's policy, not the aggregator's.)

A *scoring event* is one prompt's batch of candidates at one generation. Stateful aggregators
(``zscore_history``, ``arw``) learn from the stream of events: the caller calls ``observe(scores)``
once per event, in ``event_seq`` order, then ``combine(scores)`` to rank. ``combine`` never changes
state. Stateless aggregators ignore ``observe``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np

from avits_core.errors import ScoreError


def score_columns(who: str, columns: Iterable[tuple[str, Any]]) -> tuple[dict[str, np.ndarray], int]:
    """Validate (verifier, scores) pairs: each a 1-D float64 array, all of one length, all finite.

    Returns the arrays by verifier and their common length (0 when there are no columns). Raises
    ScoreError prefixed with ``who``, naming the verifier (and candidate index of a non-finite value).
    """
    out: dict[str, np.ndarray] = {}
    n = None
    for v, x in columns:
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 1:
            raise ScoreError(f"{who}: scores of {v!r} must be 1-D, got shape {a.shape}")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ScoreError(f"{who}: {v!r} has {a.shape[0]} scores, expected {n}")
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise ScoreError(f"{who}: verifier {v!r} has non-finite score {a[bad[0]]!r} at candidate index {int(bad[0])}")
        out[v] = a
    return out, n or 0


class Aggregator(ABC):
    name: ClassVar[str] = ""
    stateful: ClassVar[bool] = False

    def __init__(self, verifiers: Sequence[str], weights: Mapping[str, float] | None = None, **params: Any):
        if not verifiers:
            raise ScoreError(f"{self.name}: needs at least one verifier")
        self.verifiers = list(verifiers)
        if weights is None:
            weights = {v: 1.0 / len(self.verifiers) for v in self.verifiers}
        unknown = set(weights) - set(self.verifiers)
        if unknown:
            raise ScoreError(f"{self.name}: weights name verifiers not in the set: {sorted(unknown)}")
        self.weights = {v: float(weights.get(v, 0.0)) for v in self.verifiers}
        for v, w in self.weights.items():
            if not np.isfinite(w):
                raise ScoreError(f"{self.name}: weight of {v!r} is {w}")
        #: rows for the arw_trace table (only stateful aggregators that fit something append here)
        self.trace: list[dict[str, Any]] = []

    def check(self, scores: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate and convert ``scores`` to float64 arrays of equal length."""
        missing = [v for v in self.verifiers if v not in scores]
        if missing:
            raise ScoreError(f"{self.name}: scores lack verifier(s) {missing}; got {sorted(scores)}")
        out, n = score_columns(self.name, ((v, scores[v]) for v in self.verifiers))
        if not n:
            raise ScoreError(f"{self.name}: no candidates to aggregate")
        return out

    def observe(self, scores: Mapping[str, Any], **event: Any) -> None:
        """Feed one scoring event (stateless aggregators ignore it). ``event`` carries trace keys
        (event_seq, prompt_id, generation)."""

    @abstractmethod
    def combine(self, scores: Mapping[str, Any]) -> np.ndarray:
        """One aggregate per candidate (float64, higher is better)."""

    def reset(self) -> None:
        self.trace = []
