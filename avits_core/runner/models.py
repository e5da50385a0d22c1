"""Generator and verifier instances, one per (name, params) per process, held in the one process-wide
cache of :mod:`avits_core.loading` (the same cache that holds their model weights)."""

from __future__ import annotations

from typing import Any

from avits_core import loading
from avits_core.registry import GENERATORS, VERIFIERS
from avits_core.verifiers.base import Verifier


def get_generator(name: str, params: dict[str, Any]) -> Any:
    """A generator instance, loaded once per process for a given (name, params)."""
    return loading.cached_instance("generator", name, params, lambda: GENERATORS.create(name, **params))


def get_verifier(name: str, params: dict[str, Any]) -> Verifier:
    """A verifier instance, loaded once per process for a given (name, params)."""
    return loading.cached_instance("verifier", name, params, lambda: VERIFIERS.create(name, **params))
