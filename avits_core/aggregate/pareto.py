"""Pareto front of a prompt's candidates over several verifiers.

Candidate i is *dominated* when some candidate j is at least as good on every verifier and strictly
better on at least one (scores are oriented: higher is better). Candidates with identical score
vectors do not dominate each other, so duplicates of a front member are all on the front.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from avits_core.aggregate.base import score_columns
from avits_core.errors import ScoreError


def pareto_front(scores: Mapping[str, Any]) -> np.ndarray:
    """Boolean mask (n_candidates,): True for the non-dominated candidates.

    ``scores`` maps verifier name -> 1-D array of oriented scores (equal lengths, finite, at least
    one verifier and one candidate). Cost O(n^2 K) in time, O(n^2) memory per verifier pass.
    """
    if not scores:
        raise ScoreError("pareto_front: no verifiers given")
    cols, n = score_columns("pareto_front", scores.items())
    if not n:
        raise ScoreError("pareto_front: no candidates")
    ge_all = np.ones((n, n), dtype=bool)  # ge_all[j, i]: j >= i on every verifier
    gt_any = np.zeros((n, n), dtype=bool)  # gt_any[j, i]: j > i on some verifier
    for a in cols.values():
        ge_all &= a[:, None] >= a[None, :]
        gt_any |= a[:, None] > a[None, :]
    dominated = (ge_all & gt_any).any(axis=0)
    return ~dominated
