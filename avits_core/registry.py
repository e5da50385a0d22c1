"""Name -> class registries for generators, verifiers, aggregators and search methods (built-ins plus
entry points), all in this one module.

Third-party packages register through the entry-point groups ``avits.generators``,
``avits.verifiers``, ``avits.aggregators`` and ``avits.search``: ``my_model = "my_pkg.module:MyGenerator"``.
A class whose ``name`` attribute differs from the key it is registered under is an error at load
(the name is what the tables record). Built-ins are listed here as
import paths so that heavy optional dependencies (transformers, diffusers) are imported only when
that component is asked for.
"""

from __future__ import annotations

import importlib
import logging
import sys
from importlib.metadata import entry_points
from typing import Any

from avits_core.errors import ConfigError, UnknownNameError

log = logging.getLogger(__name__)


_EP_CACHE: tuple[tuple[str, ...], Any] | None = None


def _all_entry_points() -> Any:
    """Every installed entry point, read once per ``sys.path`` (a scan of all installed distributions'
    metadata costs ~25 ms; registries ask several times per command). A plugin installed into a folder
    added to ``sys.path`` is seen at once; one installed into a folder already on it, after the first
    scan, is seen by the next process."""
    global _EP_CACHE
    key = tuple(sys.path)
    if _EP_CACHE is None or _EP_CACHE[0] != key:
        _EP_CACHE = (key, entry_points())
    return _EP_CACHE[1]


class Registry:
    def __init__(self, kind: str, group: str, builtins: dict[str, str]):
        self.kind = kind
        self.group = group
        self._paths: dict[str, str] = dict(builtins)
        self._builtins = frozenset(builtins)
        self._classes: dict[str, type] = {}

    def register(self, name: str, obj: type | str) -> None:
        if isinstance(obj, str):
            self._paths[name] = obj
        else:
            self._classes[name] = obj

    def _entry_points(self) -> dict[str, Any]:
        try:
            return {ep.name: ep for ep in _all_entry_points().select(group=self.group)}
        except Exception as exc:  # pragma: no cover - broken metadata
            log.warning("could not read entry points %s: %s", self.group, exc)
            return {}

    def names(self) -> list[str]:
        return sorted(set(self._paths) | set(self._classes) | set(self._entry_points()))

    def builtin_names(self) -> list[str]:
        """The names shipped with avits (not registered later by a plugin, an entry point or a test)."""
        return sorted(self._builtins)

    def get_class(self, name: str) -> type:
        if name in self._classes:
            return self._classes[name]
        if name in self._paths:
            mod, _, attr = self._paths[name].partition(":")
            try:
                cls = getattr(importlib.import_module(mod), attr)
            except ImportError as exc:
                raise ConfigError(
                    f"{self.kind} {name!r} cannot be imported ({exc}); is its optional dependency installed? "
                    f"(pip install -e '.[models]' for learned verifiers, '.[ltx2]' for LTX-2)"
                ) from exc
        else:
            eps = self._entry_points()
            if name not in eps:
                raise UnknownNameError(
                    f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}"
                )
            try:
                cls = eps[name].load()
            except Exception as exc:  # a broken plugin must not crash the CLI with a traceback
                raise ConfigError(
                    f"plugin {self.kind} {name!r} ({eps[name].value}, group {self.group}) failed to load: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        declared = getattr(cls, "name", None)
        if isinstance(declared, str) and declared and declared != name:
            raise ConfigError(
                f"{self.kind} {name!r} is registered under a name its class does not have: "
                f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}.name = {declared!r}; "
                f"rename the entry point (group {self.group}) or the class attribute so that they agree"
            )
        self._classes[name] = cls
        return cls

    def create(self, name: str, **params: Any) -> Any:
        return self.get_class(name)(**params)


GENERATORS = Registry(
    "generator",
    "avits.generators",
    {
        "synth": "avits_core.generators.synth:SynthAVGenerator",
        "ltx2": "avits_core.generators.ltx2:LTX2Generator",
    },
)

VERIFIERS = Registry(
    "verifier",
    "avits.verifiers",
    {
        "av_align": "avits_core.verifiers.av_align:AVAlign",
        "av_sync": "avits_core.verifiers.av_sync:AVSync",
        "synth_text": "avits_core.verifiers.synth_text:SynthText",
        "quality": "avits_core.verifiers.quality:Quality",
        "temporal_flickering": "avits_core.metrics.flicker:TemporalFlickering",
        "clap": "avits_core.verifiers.clap:ClapScore",
        "clip": "avits_core.verifiers.clip:ClipScore",
        "ib_tv": "avits_core.verifiers.imagebind:IBTextVideo",
        "ib_ta": "avits_core.verifiers.imagebind:IBTextAudio",
        "ib_av": "avits_core.verifiers.imagebind:IBAudioVideo",
        "avh_score": "avits_core.verifiers.imagebind:AVHScore",
        "javis_score": "avits_core.verifiers.imagebind:JavisScore",
        "vqascore": "avits_core.verifiers.vqascore:VQAScore",
        "videoreward": "avits_core.verifiers.videoreward:VideoReward",
        "desync": "avits_core.verifiers.synchformer:DeSync",
    },
)

AGGREGATORS = Registry(
    "aggregator",
    "avits.aggregators",
    {
        "weighted": "avits_core.aggregate.simple:WeightedSum",
        "rank": "avits_core.aggregate.simple:RankAggregator",
        "minmax": "avits_core.aggregate.simple:MinMax",
        "zscore": "avits_core.aggregate.simple:ZScorePrior",
        "zscore_candidate": "avits_core.aggregate.simple:ZScoreCandidate",
        "zscore_history": "avits_core.aggregate.simple:ZScoreHistory",
        "arw": "avits_core.aggregate.arw:AdaptiveRewardWeighting",
    },
)

SEARCH_METHODS = Registry(
    "search method",
    "avits.search",
    {
        "best_of_n": "avits_core.search.best_of_n:BestOfN",
        "evosearch": "avits_core.search.evosearch:EvoSearch",
        "smc": "avits_core.search.smc:SMC",
        "beam": "avits_core.search.beam:BeamSearch",
        "prune": "avits_core.search.prune:PrunedBestOfN",
        "zero_order": "avits_core.search.zero_order:ZeroOrder",
        "search_over_paths": "avits_core.search.paths:SearchOverPaths",
    },
)
