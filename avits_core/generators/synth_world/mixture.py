"""The scene modes as a prompt-conditional Gaussian mixture over the latent (``Mixture``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avits_core.generators.synth_world.grammar import hash_choice, scene_spec
from avits_core.generators.synth_world.vocab import (
    ATTR_STD,
    BACKGROUNDS,
    BG_PROTOS,
    I_BG,
    I_COUNT,
    I_OFFSET,
    I_PITCH,
    I_PNOISE,
    I_RGB,
    I_SHAPE,
    I_SIZE,
    I_SNOISE,
    I_TIMBRE,
    LATENT_DIM,
    MAX_COUNT,
    MODE_WEIGHTS,
    MODES,
    NOISE_CLEAN,
    NOISE_NOISY,
    OFFSET_SCALE,
    OFFSET_SHIFT_S,
    PALETTE,
    PITCHES,
    SIZES,
    TIMBRE_PROTOS,
    TIMBRES,
    logit,
)

# --------------------------------------------------------------------------------------------
# Modes and the mixture
# --------------------------------------------------------------------------------------------


def spec_to_gaussian(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (both (D,), float64) of the diagonal Gaussian component for a scene spec."""
    mu = np.zeros(LATENT_DIM)
    sd = np.ones(LATENT_DIM)
    s = ATTR_STD
    if spec["colour"] not in PALETTE:
        raise ValueError(f"unknown colour {spec['colour']!r}; known: {', '.join(PALETTE)}")
    mu[I_RGB] = logit(np.asarray(PALETTE[spec["colour"]], dtype=np.float64) / 255.0)
    sd[I_RGB] = s["rgb"]
    mu[I_SIZE] = (SIZES[spec["size"]] - 8.0) / 3.0
    sd[I_SIZE] = s["size"]
    mu[I_SHAPE] = -1.0 if spec["shape"] == "ball" else 1.0
    sd[I_SHAPE] = s["shape"]
    count = int(spec["count"])
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"bounce count must be in 1..{MAX_COUNT}, got {count}")
    mu[I_COUNT] = count - 2.5
    sd[I_COUNT] = s["count"]
    mu[I_PNOISE] = NOISE_NOISY if spec["picture_noise"] == "noisy" else NOISE_CLEAN
    sd[I_PNOISE] = s["pnoise"]
    mu[I_PITCH] = math.log2(PITCHES[spec["pitch"]] / 440.0)
    sd[I_PITCH] = s["pitch"]
    mu[I_TIMBRE] = TIMBRE_PROTOS[TIMBRES.index(spec["timbre"])]
    sd[I_TIMBRE] = s["timbre"]
    mu[I_OFFSET] = float(spec["audio_offset_s"]) / OFFSET_SCALE
    sd[I_OFFSET] = s["offset"]
    mu[I_SNOISE] = NOISE_NOISY if spec["sound_noise"] == "noisy" else NOISE_CLEAN
    sd[I_SNOISE] = s["snoise"]
    mu[I_BG] = BG_PROTOS[BACKGROUNDS.index(spec["background"])]
    sd[I_BG] = s["bg"]
    return mu, sd


@dataclass
class Mixture:
    """A diagonal Gaussian mixture over the joint latent: one component per scene mode variant."""

    names: list[str]  # mode name of each component (av_offset has two components)
    specs: list[dict[str, Any]]
    means: np.ndarray  # (K, D) float64
    stds: np.ndarray  # (K, D) float64
    weights: np.ndarray  # (K,) float64, sums to 1
    spec: dict[str, Any] = field(default_factory=dict)  # the faithful (intended) spec

    @property
    def log_weights(self) -> np.ndarray:
        return np.log(self.weights)

    def with_weights(self, weights: np.ndarray) -> "Mixture":
        w = np.asarray(weights, dtype=np.float64)
        return Mixture(self.names, self.specs, self.means, self.stds, w / w.sum(), self.spec)

    def mode_weights(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for n, w in zip(self.names, self.weights):
            out[n] = out.get(n, 0.0) + float(w)
        return out


def build_mixture(text: str, mode_weights: dict[str, float] | None = None) -> Mixture:
    """The prompt-conditional mixture over scene modes for ``text`` (see the module docstring)."""
    weights = dict(MODE_WEIGHTS if mode_weights is None else mode_weights)
    unknown = set(weights) - set(MODES)
    if unknown:
        raise ValueError(f"unknown SynthAV mode(s) {sorted(unknown)}; known: {', '.join(MODES)}")
    if any((not math.isfinite(w)) or w < 0 for w in weights.values()):
        raise ValueError(f"mode weights must be finite and >= 0, got {weights}")
    spec = scene_spec(text)
    comps: list[tuple[str, dict[str, Any], float]] = []

    def add(name: str, w: float, **changes: Any) -> None:
        if w > 0:
            comps.append((name, {**spec, **changes}, w))

    add("faithful", weights.get("faithful", 0.0))
    w_off = weights.get("av_offset", 0.0)
    add("av_offset", w_off / 2, audio_offset_s=-OFFSET_SHIFT_S)
    add("av_offset", w_off / 2, audio_offset_s=+OFFSET_SHIFT_S)
    add("wrong_colour", weights.get("wrong_colour", 0.0),
        colour=hash_choice(text, "wrong_colour", [c for c in PALETTE if c != spec["colour"]]))
    add("wrong_pitch", weights.get("wrong_pitch", 0.0),
        pitch=hash_choice(text, "wrong_pitch", [p for p in PITCHES if p != spec["pitch"]]))
    add("wrong_timbre", weights.get("wrong_timbre", 0.0),
        timbre=hash_choice(text, "wrong_timbre", [t for t in TIMBRES if t != spec["timbre"]]))
    if spec["count"] > 1:
        add("missing_bounce", weights.get("missing_bounce", 0.0), count=spec["count"] - 1)
    if spec["count"] < MAX_COUNT:
        add("extra_bounce", weights.get("extra_bounce", 0.0), count=spec["count"] + 1)
    add("noisy_picture", weights.get("noisy_picture", 0.0), picture_noise="noisy")
    add("noisy_sound", weights.get("noisy_sound", 0.0), sound_noise="noisy")
    if not comps:
        raise ValueError(f"all SynthAV mode weights are zero: {weights}")
    gauss = [spec_to_gaussian(c[1]) for c in comps]
    w = np.array([c[2] for c in comps], dtype=np.float64)
    return Mixture(
        names=[c[0] for c in comps],
        specs=[c[1] for c in comps],
        means=np.stack([g[0] for g in gauss]),
        stds=np.stack([g[1] for g in gauss]),
        weights=w / w.sum(),
        spec=spec,
    )


def component_log_likelihood(x: np.ndarray, mix: Mixture) -> np.ndarray:
    """log(w_k) + log N(x; mu_k, diag(s_k^2)) for x (B, D) -> (B, K)."""
    z = (x[:, None, :] - mix.means[None]) / mix.stds[None]
    ll = -0.5 * np.sum(z * z, axis=-1) - np.sum(np.log(mix.stds), axis=-1)[None] \
        - 0.5 * LATENT_DIM * math.log(2 * math.pi)
    return ll + mix.log_weights[None]
