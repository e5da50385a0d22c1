"""Oracle metrics from SynthAV ground truth (``clip.meta["truth"]``, the ``truth`` column).

They read the scene the generator actually rendered, so they say whether a selection picked a truly
better sample, not one that fooled a verifier. They are held out from selection by default.

Input: a truth dict as written by ``SynthAVGenerator.decode`` (keys used: ``audio_offset_s``,
``requested``, ``spec``, ``picture_noise``, ``sound_noise``, ``count`` and the attribute keys
``size``, ``colour``, ``shape``, ``count``, ``pitch``, ``timbre``, ``background``).

    sync_error_ms       |audio offset| * 1000: how far every sound event sits from its bounce
                        (ms, >= 0, lower is better)
    attribute_accuracy  fraction in [0, 1] of the attributes the prompt names (``requested``) whose
                        rendered value equals the request; when the prompt names none, of all
                        attributes of the intended scene (``spec``) (higher is better)
    noise_level         (picture_noise + sound_noise) / 2, each the scene's noise level in [0, 1]
                        (0 = clean sensor/hiss floor, 1 = the noisiest); lower is better
    bounce_count_correct 1.0 if the rendered bounce count equals the requested count (or, if the
                        prompt names none, the intended scene's count), else 0.0
    faithful            1.0 if the clip is right on every count: sync error < half a frame
                        (1000 / (2 fps) ms), attribute accuracy 1, bounce count correct and both
                        noise levels < 0.5; else 0.0 (higher is better)

Malformed truth (missing keys, non-numeric values) raises ``ConfigError`` naming the key.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from avits_core.errors import ConfigError
from avits_core.generators.synth_world import ATTRIBUTES

ORACLE_METRICS: dict[str, dict[str, Any]] = {
    "sync_error_ms": {
        "higher_is_better": False,
        "unit": "ms",
        "description": "|audio offset| of the rendered scene: distance of each sound event from its bounce",
    },
    "attribute_accuracy": {
        "higher_is_better": True,
        "unit": "fraction",
        "description": "fraction of prompt-named attributes (all intended ones if none named) the scene matches",
    },
    "noise_level": {
        "higher_is_better": False,
        "unit": "fraction",
        "description": "mean of the scene's picture and sound noise levels, each in [0, 1]",
    },
    "bounce_count_correct": {
        "higher_is_better": True,
        "unit": "bool",
        "description": "1 if the rendered bounce count equals the requested (else intended) count",
    },
    "faithful": {
        "higher_is_better": True,
        "unit": "bool",
        "description": "1 if in sync (< half a frame), all attributes right, count right and both noise levels < 0.5",
    },
}


def _num(truth: Mapping[str, Any], key: str) -> float:
    if key not in truth:
        raise ConfigError(f"SynthAV truth lacks key {key!r} (keys: {', '.join(sorted(truth))})")
    try:
        value = float(truth[key])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"SynthAV truth key {key!r} is not a number: {truth[key]!r}") from exc
    if not math.isfinite(value):
        raise ConfigError(f"SynthAV truth key {key!r} is not finite: {value!r}")
    return value


def _dict(truth: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = truth.get(key)
    if not isinstance(value, Mapping):
        raise ConfigError(f"SynthAV truth key {key!r} must be a dict, got {type(value).__name__}")
    return value


def oracle_metrics(truth: Mapping[str, Any]) -> dict[str, float]:
    """The ORACLE_METRICS of one rendered SynthAV scene (see the module docstring)."""
    if not isinstance(truth, Mapping):
        raise ConfigError(f"SynthAV truth must be a dict, got {type(truth).__name__}")
    requested = _dict(truth, "requested")
    spec = _dict(truth, "spec")
    target = {k: v for k, v in requested.items() if k in ATTRIBUTES} or {k: spec[k] for k in ATTRIBUTES if k in spec}
    if not target:
        raise ConfigError("SynthAV truth has neither requested nor intended attributes")
    for k in target:
        if k not in truth:
            raise ConfigError(f"SynthAV truth lacks the rendered attribute {k!r}")
    accuracy = sum(1 for k, v in target.items() if truth[k] == v) / len(target)
    want_count = requested.get("count", spec.get("count"))
    if want_count is None:
        raise ConfigError("SynthAV truth names no intended bounce count (spec.count)")
    count_ok = float(int(_num(truth, "count")) == int(want_count))
    sync_ms = abs(_num(truth, "audio_offset_s")) * 1000.0
    pn, sn = _num(truth, "picture_noise"), _num(truth, "sound_noise")
    fps = float(truth.get("fps", 12.0))
    faithful = float(sync_ms < 500.0 / fps and accuracy == 1.0 and count_ok == 1.0 and pn < 0.5 and sn < 0.5)
    return {
        "sync_error_ms": sync_ms,
        "attribute_accuracy": float(accuracy),
        "noise_level": (pn + sn) / 2.0,
        "bounce_count_correct": count_ok,
        "faithful": faithful,
    }
