"""Pareto front of a prompt's candidates over several verifiers.

Candidate i is *dominated* when some candidate j is at least as good on every verifier and strictly
better on at least one (scores are oriented: higher is better). Candidates with identical score
vectors do not dominate each other, so duplicates of a front member are all on the front.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from avits_core.errors import ScoreError


def pareto_front(scores: Mapping[str, Any]) -> np.ndarray:
    """Boolean mask (n_candidates,): True for the non-dominated candidates.

    ``scores`` maps verifier name -> 1-D array of oriented scores (equal lengths, finite, at least
    one verifier and one candidate). Cost O(n^2 K) in time, O(n^2) memory per verifier pass.
    """
    if not scores:
        raise ScoreError("pareto_front: no verifiers given")
    cols = []
    n = None
    for v, x in scores.items():
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 1:
            raise ScoreError(f"pareto_front: scores of {v!r} must be 1-D, got shape {a.shape}")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ScoreError(f"pareto_front: {v!r} has {a.shape[0]} scores, expected {n}")
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise ScoreError(f"pareto_front: verifier {v!r} has non-finite score {a[bad[0]]!r} at candidate index {int(bad[0])}")
        cols.append(a)
    if not n:
        raise ScoreError("pareto_front: no candidates")
    ge_all = np.ones((n, n), dtype=bool)  # ge_all[j, i]: j >= i on every verifier
    gt_any = np.zeros((n, n), dtype=bool)  # gt_any[j, i]: j > i on some verifier
    for a in cols:
        ge_all &= a[:, None] >= a[None, :]
        gt_any |= a[:, None] > a[None, :]
    dominated = (ge_all & gt_any).any(axis=0)
    return ~dominated
