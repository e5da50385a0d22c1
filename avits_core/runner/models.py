"""The process-wide model cache: one generator / verifier instance per (name, params) per process."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from avits_core.registry import GENERATORS, VERIFIERS
from avits_core.verifiers.base import Verifier

log = logging.getLogger(__name__)

_MODEL_CACHE: dict[tuple[str, str, str], Any] = {}
_MODEL_LOCK = threading.Lock()


def _cache_key(kind: str, name: str, params: dict[str, Any]) -> tuple[str, str, str]:
    return (kind, name, json.dumps(params, sort_keys=True, default=str))


def get_generator(name: str, params: dict[str, Any]) -> Any:
    """A generator instance, loaded once per process for a given (name, params)."""
    key = _cache_key("generator", name, params)
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            log.info("loading generator %s %s", name, params)
            _MODEL_CACHE[key] = GENERATORS.create(name, **params)
        return _MODEL_CACHE[key]


def get_verifier(name: str, params: dict[str, Any]) -> Verifier:
    """A verifier instance, loaded once per process for a given (name, params)."""
    key = _cache_key("verifier", name, params)
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = VERIFIERS.create(name, **params)
        return _MODEL_CACHE[key]
