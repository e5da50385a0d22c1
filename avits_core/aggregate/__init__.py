"""Aggregators: per-verifier rewards of one prompt's candidates -> one score per candidate.

``AGGREGATORS`` is the name -> class registry (built-ins below plus third-party classes from the
``avits.aggregators`` entry-point group); ``get_aggregator(name, verifiers, weights, **params)``
builds one. An unknown name raises :class:`~avits_core.errors.UnknownNameError` listing the known
ones; a parameter the aggregator does not take raises :class:`~avits_core.errors.ConfigError`
listing the accepted ones.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from avits_core.aggregate.base import Aggregator
from avits_core.aggregate.pareto import pareto_front
from avits_core.aggregate.simple import select_best
from avits_core.errors import UnknownNameError
from avits_core.registry import AGGREGATORS


def get_aggregator(
    name: str, verifiers: Sequence[str], weights: Mapping[str, float] | None = None, **params: Any
) -> Aggregator:
    """Build the aggregator registered as ``name`` over ``verifiers`` (weights default to 1/K)."""
    if not isinstance(name, str):
        raise UnknownNameError(f"aggregator name must be a string, got {name!r}; known: {', '.join(AGGREGATORS.names())}")
    cls = AGGREGATORS.get_class(name)
    return cls(verifiers, weights, **params)


__all__ = ["AGGREGATORS", "Aggregator", "get_aggregator", "pareto_front", "select_best"]
