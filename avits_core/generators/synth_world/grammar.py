"""The SynthAV prompt grammar: the attributes a prompt names, and a full scene specification
(unnamed attributes drawn from a hash of the text)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from avits_core.generators.synth_world.vocab import (
    ATTRIBUTES,
    BACKGROUNDS,
    COUNT_WORDS,
    COUNTS,
    NUMBER_WORDS,
    ONCE_WORDS,
    PALETTE,
    PITCHES,
    SHAPES,
    SIZES,
    SYNONYMS,
    TIMBRES,
)

# --------------------------------------------------------------------------------------------
# Prompt grammar
# --------------------------------------------------------------------------------------------


def normalise_text(text: str) -> str:
    return " ".join(str(text).lower().split())


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z]+|\d+", normalise_text(text).replace("-", " "))


def parse_prompt(text: str) -> dict[str, Any]:
    """Attributes the prompt text names (only those), e.g. ``{"colour": "red", "count": 3}``.

    Keys are among ``ATTRIBUTES``; values are vocabulary names (``count`` is an int). Free text
    that names nothing gives ``{}``.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt text must be a str, got {type(text).__name__}")
    toks = _tokens(text)
    out: dict[str, Any] = {}
    for i, tok in enumerate(toks):
        for attr, syn in SYNONYMS.items():
            if tok in syn and attr not in out:
                out[attr] = syn[tok]
        if "count" not in out:
            if tok in ONCE_WORDS:
                out["count"] = ONCE_WORDS[tok]
            elif tok in COUNT_WORDS and i + 1 < len(toks) and toks[i + 1] in ("time", "times", "bounce",
                                                                              "bounces"):
                out["count"] = COUNT_WORDS[tok]
    return out


def _hash_index(text: str, salt: str, n: int) -> int:
    h = hashlib.blake2b(f"synthav|{salt}|{normalise_text(text)}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") % n


def hash_choice(text: str, salt: str, options: list[Any] | tuple[Any, ...]) -> Any:
    return options[_hash_index(text, salt, len(options))]


_VOCAB: dict[str, tuple[Any, ...]] = {
    "size": tuple(SIZES), "colour": tuple(PALETTE), "shape": SHAPES, "count": COUNTS,
    "pitch": tuple(PITCHES), "timbre": TIMBRES, "background": BACKGROUNDS,
}


def scene_spec(text: str) -> dict[str, Any]:
    """The full intended scene for a prompt: named attributes as asked, the rest drawn from a hash.

    Always has every key of ``ATTRIBUTES`` plus ``audio_offset_s`` (0.0), ``picture_noise`` and
    ``sound_noise`` (``"clean"``).
    """
    named = parse_prompt(text)
    spec: dict[str, Any] = {}
    for attr in ATTRIBUTES:
        spec[attr] = named[attr] if attr in named else hash_choice(text, attr, _VOCAB[attr])
    spec.update(audio_offset_s=0.0, picture_noise="clean", sound_noise="clean")
    return spec


def describe(spec: dict[str, Any]) -> str:
    """Render a spec back into a grammar sentence (handy for tests and prompt sets)."""
    return (f"a {spec['size']} {spec['colour']} {spec['shape']} bounces {NUMBER_WORDS[spec['count']]} "
            f"with a {spec['pitch']} {spec['timbre']} over {spec['background']}")
