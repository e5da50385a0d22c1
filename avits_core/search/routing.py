"""Modality routing: which noise (video, audio or both) a search method mutates for a given parent.

Shared by every method that mutates noise or latents (``evosearch``, ``zero_order``,
``search_over_paths``). Two options, the same name in every method's ``search.params``:

* ``modality``: ``"joint"`` (default) mutates/resamples the video and the audio latents together,
  ``"video"`` / ``"audio"`` only that modality (the other is copied from the parent).
* ``route_by_modality`` (default false): choose the modality per parent from its rewards. Each guided
  verifier reads some of the tracks (``Verifier.modalities``, from its ``min_input``): a verifier that
  reads the video and not the audio is *video-side*, one that reads the audio and not the video
  *audio-side*; one that reads both (av_align, av_sync, synth_text, ...) says nothing about which
  track is at fault and does not enter the routing.

The routing rule (:func:`route`), for a parent ``c`` among the prompt's scored candidates ``P``:

1. for each one-sided verifier ``v``, the parent's standardised reward
   ``z_v = (r_v(c) - mean_P r_v) / std_P r_v`` over the prompt's candidates with a finite reward
   (oriented: higher is better; ``z_v = 0`` when the rewards of ``P`` are all equal);
2. ``Z_video`` = mean ``z_v`` over the video-side verifiers, ``Z_audio`` over the audio-side ones;
3. both sides measured: mutate the weaker side (``Z_video < Z_audio`` -> ``"video"``, the reverse
   -> ``"audio"``; an exact tie -> the ``modality`` option);
   one side measured: mutate it when its ``Z < 0``, else the other side (the measured track is
   fine, keep it and look for the fault in the other one);
   no side measured (every guided verifier reads both tracks, or the parent has no finite one-sided
   reward): the ``modality`` option.

Where the rewards come from. The planning view (:class:`~avits_core.search.base.PromptView`) gives a
method the aggregates of the prompt's candidates, not their per-verifier rewards; routing needs the
latter. :func:`view_rewards` uses ``view.rewards()`` when the view offers it (the protocol extension
this module asks for: ``{candidate_id: {verifier: oriented reward or None}}``), and until then reads
them from the engine's :class:`~avits_core.search.engine.SearchState` that built the view (the same
guided rewards the online aggregate is fed; stored and in-memory runs alike). Verifier sides come
from the registered verifier classes (``VERIFIERS``), or from ``verifier_modalities`` in the method's
params for verifiers that are not registered (``{name: ["video"]}``).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

from pydantic import Field, model_validator

from avits_core.errors import ConfigError, EvoSearchError
from avits_core.search.base import MethodParams

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("joint", "video", "audio")
TRACKS: tuple[str, ...] = ("video", "audio")


def check_modality(field: str, value: Any) -> str:
    """``value`` if it is one of :data:`MODALITIES`, else ConfigError naming ``field``."""
    if value not in MODALITIES:
        raise ConfigError(f"{field}: must be one of {list(MODALITIES)}, got {value!r}")
    return str(value)


def check_verifier_modalities(field: str, value: Any) -> dict[str, tuple[str, ...]] | None:
    """Validate ``verifier_modalities`` (``{verifier: ["video", "audio", "text"] subset}`` or None)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{field}: must be a mapping verifier name -> list of tracks, got {value!r}")
    out: dict[str, tuple[str, ...]] = {}
    for name, mods in value.items():
        if isinstance(mods, str) or not isinstance(mods, (list, tuple)):
            raise ConfigError(f"{field}.{name}: must be a list of 'video', 'audio', 'text', got {mods!r}")
        bad = [m for m in mods if m not in ("video", "audio", "text")]
        if bad:
            raise ConfigError(f"{field}.{name}: unknown track {bad[0]!r}; known: ['video', 'audio', 'text']")
        out[str(name)] = tuple(str(m) for m in mods)
    return out


def side_of(modalities: Sequence[str]) -> str | None:
    """"video" / "audio" for a verifier reading exactly one of the two tracks, else None."""
    tracks = [t for t in TRACKS if t in modalities]
    return tracks[0] if len(tracks) == 1 else None


def verifier_sides(names: Sequence[str], overrides: Mapping[str, Sequence[str]] | None = None) -> dict[str, str | None]:
    """Side ("video", "audio" or None) of each verifier: from ``overrides`` first, else from the
    registered class's ``min_input.modalities``. An unknown verifier is a ConfigError naming
    ``search.params.verifier_modalities``."""
    from avits_core.registry import VERIFIERS

    out: dict[str, str | None] = {}
    for n in names:
        if overrides and n in overrides:
            out[n] = side_of(overrides[n])
            continue
        try:
            cls = VERIFIERS.get_class(n)
        except Exception as exc:  # UnknownNameError or a broken plugin
            raise ConfigError(
                f"search.params.verifier_modalities: route_by_modality needs the tracks verifier {n!r} reads; "
                f"it is not registered ({exc}); give them as verifier_modalities: {{{n}: [video]}}"
            ) from None
        out[n] = side_of(cls.min_input.modalities)
    return out


def route(candidate: str, rewards: Mapping[str, Mapping[str, float | None]], sides: Mapping[str, str | None],
          fallback: str = "joint") -> str:
    """The modality to mutate for ``candidate`` (see the module docstring for the rule).

    ``rewards``: the prompt's candidates -> verifier -> oriented reward (None or NaN: missing);
    ``sides``: verifier -> "video" / "audio" / None.
    """
    z_by_side: dict[str, list[float]] = {"video": [], "audio": []}
    own = rewards.get(candidate, {})
    for v, side in sides.items():
        if side is None:
            continue
        x = own.get(v)
        if x is None or not math.isfinite(x):
            continue
        vals = [r.get(v) for r in rewards.values()]
        vals = [float(a) for a in vals if a is not None and math.isfinite(a)]
        mean = sum(vals) / len(vals)
        var = sum((a - mean) ** 2 for a in vals) / len(vals)
        z_by_side[side].append(0.0 if var <= 0.0 else (float(x) - mean) / math.sqrt(var))
    zv = sum(z_by_side["video"]) / len(z_by_side["video"]) if z_by_side["video"] else None
    za = sum(z_by_side["audio"]) / len(z_by_side["audio"]) if z_by_side["audio"] else None
    if zv is not None and za is not None:
        if zv < za:
            return "video"
        if za < zv:
            return "audio"
        return fallback
    if zv is not None:
        return "video" if zv < 0 else "audio"
    if za is not None:
        return "audio" if za < 0 else "video"
    return fallback


def _engine_state(view: Any) -> Any:
    """The engine's SearchState behind ``view`` (its aggregates callback closes over it), or None."""
    fn = getattr(view, "_aggregates", None)
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            obj = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if hasattr(obj, "rewards") and hasattr(obj, "online") and hasattr(obj, "guided"):
            return obj
    return None


def view_rewards(view: Any) -> dict[str, dict[str, float | None]]:
    """Oriented guided rewards (higher is better; None = error) of ``view``'s prompt's candidates.

    Asks for ``view.aggregates()`` first, so a missing reward is the engine's clear error (scoring
    has not run) rather than a silent gap."""
    view.aggregates()
    fn = getattr(view, "rewards", None)
    if callable(fn):
        return {c: dict(r) for c, r in fn().items()}
    state = _engine_state(view)
    if state is None:
        raise EvoSearchError(
            "route_by_modality needs the per-verifier rewards of the prompt's candidates; this planning view "
            "offers neither rewards() nor the engine state (see avits_core/search/routing.py)"
        )
    sign = getattr(state.online, "sign", {})
    ids = {c.candidate_id for c in view.candidates}
    out: dict[str, dict[str, float | None]] = {}
    with state.lock:
        for cid in ids:
            row = state.rewards.get(cid, {})
            out[cid] = {}
            for v in state.guided:
                x = row.get(v)
                ok = x is not None and math.isfinite(float(x))
                out[cid][v] = float(x) * sign.get(v, 1.0) if ok else None
    return out


class Router:
    """A method's modality choice: the fixed ``modality``, or routed per parent when ``route`` is on.

    ``for_parents(view, parents)`` returns the modality of each parent's children (one rewards read
    per plan)."""

    def __init__(self, modality: str = "joint", route: bool = False,
                 verifier_modalities: Mapping[str, Sequence[str]] | None = None):
        self.modality = check_modality("search.params.modality", modality)
        self.route = bool(route)
        self.overrides = dict(verifier_modalities or {})

    def for_parents(self, view: Any, parents: Sequence[str]) -> list[str]:
        if not self.route or not parents:
            return [self.modality] * len(parents)
        rewards = view_rewards(view)
        names = sorted({v for r in rewards.values() for v in r})
        sides = verifier_sides(names, self.overrides)
        out = [route(p, rewards, sides, self.modality) for p in parents]
        log.info("%s: routed modalities %s", view.prompt_id, dict(zip(parents, out)))
        return out


class RoutedParams(MethodParams):
    """Parameters shared by every method that can choose which track a new candidate changes
    (zero_order, search_over_paths, smc, beam; EvoSearch has its own copy in its presets)."""

    modality: str = Field(default="joint", description="joint | video | audio: the track(s) a new candidate changes "
                                                       "(a mutation's noise, a branch's re-noising, or the "
                                                       "stochastic transitions; the other track is kept)")
    route_by_modality: bool = Field(default=False, description="choose the track per parent from its video-side / "
                                                               "audio-side rewards (see this module)")
    verifier_modalities: Any = Field(default=None, description="tracks read by verifiers that are not registered "
                                                               "(routing only): {name: [video|audio|text, ...]}")

    @model_validator(mode="after")
    def _routing_fields(self) -> "RoutedParams":
        check_modality("search.params.modality", self.modality)
        check_verifier_modalities("search.params.verifier_modalities", self.verifier_modalities)
        return self

    def router(self) -> "Router":
        return Router(self.modality, self.route_by_modality, self.verifier_modalities)
