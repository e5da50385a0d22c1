"""SynthAV world: prompt grammar, scene modes, latent layout and the numpy renderer.

This module holds everything about the *world* (what a scene is, how a prompt asks for one, how
a latent vector maps to a scene, how a scene is drawn and sounded). The sampler that moves latents
through the rectified-flow ODE lives in :mod:`avits_core.generators.synth`.

Scene
    One object (``ball`` or ``cube``; a palette ``colour``; a ``size``) bouncing ``count`` times on
    a floor during the clip; each bounce makes a short decaying tone burst (``pitch``, ``timbre``);
    a background sound texture (``background``); sensor noise in the picture and hiss in the
    sound. Defaults: 2 s, 12 fps, 64x64 RGB uint8 frames, 16 kHz mono float32 audio.

Prompt grammar (case-insensitive, words anywhere in the text; the first match of each attribute
wins, later conflicting words are ignored)::

    size        small | tiny -> small, medium, large | big -> large
    colour      red green blue yellow purple (violet) orange white
    shape       ball | sphere -> ball, cube | box | block -> cube
    count       once | twice | thrice, or <one..five | 1..5> time(s)   (1..4 are sampled by the hash)
    pitch       low | deep -> low, mid | middle -> mid, high          (also "low-pitched" ...)
    timbre      click | tick -> click, beep | tone -> beep, buzz | buzzer -> buzz
    background  rain | rainy -> rain, wind | windy -> wind, hum -> hum, silence | silent | quiet -> silence

``parse_prompt(text)`` returns only the attributes the text names. ``scene_spec(text)`` returns a
full specification: named attributes as asked, every other attribute drawn deterministically from
BLAKE2b of the normalised text (lower case, single spaces) salted with the attribute name.

Latent layout (joint vector x = [video (12) | audio (10)], D = 22)::

    video  0-2  colour logits        rgb = 255 * sigmoid(v)              (palette means = logit(rgb/255))
           3    size                 radius_px = clip(8 + 3 v, 4, 13)     (small -1 / medium 0 / large +1)
           4    shape                superellipse exponent p = 2 exp(0.354 max(v + 1, 0)^2) (2 at -1, 2.85 at 0, 8.2 at +1);
                                     the truth says "cube" iff it fills > FILL_THRESHOLD (0.87) of its bounding box (iff v > 0)
           5    bounce count         count = clip(round(v + 2.5), 1, 5)
           6    picture noise        level = sigmoid(2.5 v); pixel noise std = 2 + 40 level (uint8 units)
           7    bounce phase         phi = 0.15 tanh(v) (fraction of the bounce period)   [nuisance]
           8    start x              cx0 = W/2 + W/4 tanh(v)                                [nuisance]
           9    horizontal speed     vx = 12 tanh(v) px/s (reflects off the walls)          [nuisance]
           10   background level     grey = 45 + 12 tanh(v)                                 [nuisance]
           11   background tint      +-6 tanh(v) on red/blue                                [nuisance]
    audio  12   pitch                f0 = 440 * 2^clip(v, -2.5, 2.5) Hz  (low -1 / mid 0 / high +1)
           13-14 timbre              softmax(-|v - p_j|^2 / 0.1) over beep (1,0), buzz (-.5,.866), click (-.5,-.866)
           15   audio offset         offset_s = clip(0.4 v, -0.6, 0.6)
           16   sound noise          level = sigmoid(2.5 v); hiss std = 0.003 + 0.08 level
           17-18 background          softmax(-|v - p_j|^2 / 0.1) over rain (1,1), wind (1,-1), hum (-1,1), silence (-1,-1)
           19   loudness             amplitude = 0.45 (1 + 0.2 tanh(v))                     [nuisance]
           20   decay                tau = 0.05 * 2^(0.3 tanh(v)) s                          [nuisance]
           21   texture phase        phase of the wind modulation and hum                    [nuisance]

Scene modes (the components of the prompt-conditional Gaussian mixture; prior weights)::

    faithful        0.30   the scene the prompt asks for, in sync, clean
    av_offset       0.16   audio shifted by -0.25 s or +0.25 s (two components, 0.08 each): 3 frames
                           at 12 fps, and, for every count 1..4 (period >= 0.5 s), at least 0.25 s
                           from any bounce, so even a periodic cross-correlation cannot alias it to 0
    wrong_colour    0.10   another palette colour (chosen by hash)
    wrong_pitch     0.07   another pitch (hash)
    wrong_timbre    0.07   another timbre (hash)
    missing_bounce  0.07   count - 1 (absent when count == 1; weights renormalised)
    extra_bounce    0.07   count + 1 (up to 5)
    noisy_picture   0.08   picture noise level ~0.98 (pixel noise std ~41)
    noisy_sound     0.08   hiss level ~0.98 (hiss std ~0.08, about -22 dBFS)

Every component is a diagonal Gaussian: attribute dimensions sit at the mode's value with a small
std (below), nuisance dimensions are N(0, 1) in every mode (sample diversity that no verifier should
care about).

Rendering (numpy, vectorised over frames)
    Picture: dark grey background (level and tint are nuisance dims) with a lighter floor band (the
    bottom 8/64 of the frame); the object is an anti-aliased superellipse of the decoded colour. Its
    bottom follows parabolic arcs between bounces at t_k = (k + 0.5 + phi) * P, P = duration / count
    (exactly ``count`` impacts inside the clip) of height min(room, 20 px/s * P) (at size 64), so
    |vertical speed| is largest at each impact, 80 px/s whatever the count; it squashes (area preserving, up to 30 %) within 0.6 frame of an impact; it drifts horizontally and
    reflects off the walls. Gaussian pixel noise of the decoded std is added, then clipped to uint8.
    Sound: at t_k + offset (events falling outside the clip are dropped; ``audio_event_times_s`` lists
    the rendered ones) a 0.3 s tone burst with a 2 ms attack: beep = sine, decay tau; buzz = odd
    harmonics 1..9 with amplitudes 1/n (square-ish; partials below 0.45 sr), peak-normalised, decay
    tau; click = 0.6 (sine + white noise), decay 0.16 tau (~8 ms); timbres blend by their weights.
    Background textures, blended by their weights: rain = first-differenced (high-passed) white noise
    std 0.01; wind = one-pole 300 Hz low-passed noise std 0.015 with a 0.7 Hz swell; hum = 0.012
    (sin 100 Hz + 0.5 sin 200 Hz); silence = nothing. Plus white hiss of the decoded std; clipped to
    [-1, 1].
    Picture noise, click noise and noise textures use a numpy Generator seeded from BLAKE2b of the
    latent row's float32 bytes, so the same latent always renders the same clip, whatever batch it is in.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

#: Palette: colour name -> RGB (uint8). Every entry is saturated or bright, far from the grey background.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (230, 220, 40),
    "purple": (150, 50, 200),
    "orange": (250, 140, 30),
    "white": (235, 235, 235),
}
SIZES: dict[str, float] = {"small": 5.0, "medium": 8.0, "large": 11.0}  # radius in px at size 64
SHAPES: tuple[str, ...] = ("ball", "cube")
COUNTS: tuple[int, ...] = (1, 2, 3, 4)  # counts a prompt may ask for; renderer allows 1..5
MAX_COUNT = 5
PITCHES: dict[str, float] = {"low": 220.0, "mid": 440.0, "high": 880.0}
TIMBRES: tuple[str, ...] = ("beep", "buzz", "click")
BACKGROUNDS: tuple[str, ...] = ("rain", "wind", "hum", "silence")
ATTRIBUTES: tuple[str, ...] = ("size", "colour", "shape", "count", "pitch", "timbre", "background")

COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5}
NUMBER_WORDS = {1: "once", 2: "twice", 3: "three times", 4: "four times", 5: "five times"}

_SYNONYMS: dict[str, dict[str, str]] = {
    "size": {"small": "small", "tiny": "small", "medium": "medium", "large": "large", "big": "large"},
    "colour": {**{c: c for c in PALETTE}, "violet": "purple"},
    "shape": {"ball": "ball", "sphere": "ball", "cube": "cube", "box": "cube", "block": "cube"},
    "pitch": {"low": "low", "deep": "low", "mid": "mid", "middle": "mid", "high": "high"},
    "timbre": {"click": "click", "tick": "click", "beep": "beep", "tone": "beep", "buzz": "buzz",
               "buzzer": "buzz"},
    "background": {"rain": "rain", "rainy": "rain", "wind": "wind", "windy": "wind", "hum": "hum",
                   "silence": "silence", "silent": "silence", "quiet": "silence"},
}
_ONCE = {"once": 1, "twice": 2, "thrice": 3}

# --------------------------------------------------------------------------------------------
# Latent layout
# --------------------------------------------------------------------------------------------

VIDEO_DIM = 12
AUDIO_DIM = 10
LATENT_DIM = VIDEO_DIM + AUDIO_DIM

I_RGB = slice(0, 3)
I_SIZE, I_SHAPE, I_COUNT, I_PNOISE, I_PHASE, I_X0, I_VX, I_BGLEVEL, I_TINT = 3, 4, 5, 6, 7, 8, 9, 10, 11
I_PITCH = 12
I_TIMBRE = slice(13, 15)
I_OFFSET, I_SNOISE = 15, 16
I_BG = slice(17, 19)
I_AMP, I_DECAY, I_TPHASE = 19, 20, 21

TIMBRE_PROTOS = np.array([[1.0, 0.0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]])
BG_PROTOS = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
PROTO_TEMPERATURE = 0.1

NOISE_CLEAN, NOISE_NOISY = -1.5, 1.5
OFFSET_SHIFT_S = 0.25  # |audio offset| of the av_offset mode (see the mode table)
OFFSET_SCALE = 0.4  # offset_s = OFFSET_SCALE * latent

#: per-dimension std of attribute dimensions inside a mode (nuisance dims have std 1)
_ATTR_STD = {
    "rgb": 0.12, "size": 0.10, "shape": 0.12, "count": 0.08, "pnoise": 0.15,
    "pitch": 0.04, "timbre": 0.10, "offset": 0.05, "snoise": 0.15, "bg": 0.10,
}

#: prior weight of each mode (before removing impossible modes and renormalising)
MODE_WEIGHTS: dict[str, float] = {
    "faithful": 0.30,
    "av_offset": 0.16,
    "wrong_colour": 0.10,
    "wrong_pitch": 0.07,
    "wrong_timbre": 0.07,
    "missing_bounce": 0.07,
    "extra_bounce": 0.07,
    "noisy_picture": 0.08,
    "noisy_sound": 0.08,
}
MODES: tuple[str, ...] = tuple(MODE_WEIGHTS)


#: fill ratio (area / bounding-box area) above which a superellipse counts as a cube
#: (a disc fills pi/4 = 0.785, p = 2.85 (latent 0) 0.87, the cube mode (p ~ 8.2) 0.98); synth_text uses the same rule on pixels
FILL_THRESHOLD = 0.87
SHAPE_GAIN = 0.354  # p(0) = 2 exp(0.354) = 2.85, whose fill is 0.87


def superellipse_fill(p: float) -> float:
    """Area of |x|^p + |y|^p <= 1 divided by its bounding box area 4: Gamma(1+1/p)^2 / Gamma(1+2/p)."""
    return math.exp(2 * math.lgamma(1 + 1 / p) - math.lgamma(1 + 2 / p))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


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
        for attr, syn in _SYNONYMS.items():
            if tok in syn and attr not in out:
                out[attr] = syn[tok]
        if "count" not in out:
            if tok in _ONCE:
                out["count"] = _ONCE[tok]
            elif tok in COUNT_WORDS and i + 1 < len(toks) and toks[i + 1] in ("time", "times", "bounce",
                                                                              "bounces"):
                out["count"] = COUNT_WORDS[tok]
    return out


def _hash_index(text: str, salt: str, n: int) -> int:
    h = hashlib.blake2b(f"synthav|{salt}|{normalise_text(text)}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") % n


def _hash_choice(text: str, salt: str, options: list[Any] | tuple[Any, ...]) -> Any:
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
        spec[attr] = named[attr] if attr in named else _hash_choice(text, attr, _VOCAB[attr])
    spec.update(audio_offset_s=0.0, picture_noise="clean", sound_noise="clean")
    return spec


def describe(spec: dict[str, Any]) -> str:
    """Render a spec back into a grammar sentence (handy for tests and prompt sets)."""
    return (f"a {spec['size']} {spec['colour']} {spec['shape']} bounces {NUMBER_WORDS[spec['count']]} "
            f"with a {spec['pitch']} {spec['timbre']} over {spec['background']}")


# --------------------------------------------------------------------------------------------
# Modes and the mixture
# --------------------------------------------------------------------------------------------


def spec_to_gaussian(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (both (D,), float64) of the diagonal Gaussian component for a scene spec."""
    mu = np.zeros(LATENT_DIM)
    sd = np.ones(LATENT_DIM)
    s = _ATTR_STD
    if spec["colour"] not in PALETTE:
        raise ValueError(f"unknown colour {spec['colour']!r}; known: {', '.join(PALETTE)}")
    mu[I_RGB] = _logit(np.asarray(PALETTE[spec["colour"]], dtype=np.float64) / 255.0)
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
        colour=_hash_choice(text, "wrong_colour", [c for c in PALETTE if c != spec["colour"]]))
    add("wrong_pitch", weights.get("wrong_pitch", 0.0),
        pitch=_hash_choice(text, "wrong_pitch", [p for p in PITCHES if p != spec["pitch"]]))
    add("wrong_timbre", weights.get("wrong_timbre", 0.0),
        timbre=_hash_choice(text, "wrong_timbre", [t for t in TIMBRES if t != spec["timbre"]]))
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


# --------------------------------------------------------------------------------------------
# Latent -> scene parameters
# --------------------------------------------------------------------------------------------


def _softmax_protos(v: np.ndarray, protos: np.ndarray) -> np.ndarray:
    d2 = np.sum((v[None, :] - protos) ** 2, axis=-1)
    logits = -d2 / PROTO_TEMPERATURE
    logits -= logits.max()
    e = np.exp(logits)
    return e / e.sum()


def _nearest(value: float, table: dict[str, float], log: bool = False) -> str:
    f = (lambda a: math.log2(a)) if log else (lambda a: a)
    return min(table, key=lambda k: abs(f(table[k]) - f(value)))


def nearest_colour(rgb: np.ndarray | tuple[float, float, float]) -> str:
    """Palette name nearest (Euclidean RGB) to ``rgb``."""
    c = np.asarray(rgb, dtype=np.float64)
    return min(PALETTE, key=lambda k: float(np.sum((np.asarray(PALETTE[k], dtype=np.float64) - c) ** 2)))


def decode_params(x: np.ndarray, duration: float, size: int) -> dict[str, Any]:
    """Scene parameters of one joint latent row ``x`` (D,) (continuous map, see module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    scale = size / 64.0
    rgb = 255.0 * _sigmoid(x[I_RGB])
    radius = float(np.clip(8.0 + 3.0 * x[I_SIZE], 4.0, 13.0)) * scale
    shape_v = float(x[I_SHAPE])
    exponent = 2.0 * math.exp(SHAPE_GAIN * max(shape_v + 1.0, 0.0) ** 2)
    count = int(np.clip(np.round(x[I_COUNT] + 2.5), 1, MAX_COUNT))
    pnoise = float(_sigmoid(2.5 * x[I_PNOISE]))
    phase = 0.15 * math.tanh(x[I_PHASE])
    period = duration / count
    bounce_times = [(k + 0.5 + phase) * period for k in range(count)]
    pitch_hz = 440.0 * 2.0 ** float(np.clip(x[I_PITCH], -2.5, 2.5))
    timbre_w = _softmax_protos(x[I_TIMBRE], TIMBRE_PROTOS)
    offset = float(np.clip(OFFSET_SCALE * x[I_OFFSET], -0.6, 0.6))
    snoise = float(_sigmoid(2.5 * x[I_SNOISE]))
    bg_w = _softmax_protos(x[I_BG], BG_PROTOS)
    return {
        "rgb": rgb,
        "radius": radius,
        "radius_64": radius / scale,
        "shape_value": shape_v,
        "exponent": exponent,
        "count": count,
        "period": period,
        "phase": phase,
        "bounce_times": bounce_times,
        "picture_noise": pnoise,
        "pixel_noise_std": 2.0 + 40.0 * pnoise,
        "cx0": size / 2 + size / 4 * math.tanh(x[I_X0]),
        "vx": 12.0 * scale * math.tanh(x[I_VX]),
        "bg_level": 45.0 + 12.0 * math.tanh(x[I_BGLEVEL]),
        "tint": 6.0 * math.tanh(x[I_TINT]),
        "pitch_hz": pitch_hz,
        "timbre_w": timbre_w,
        "audio_offset_s": offset,
        "sound_noise": snoise,
        "hiss_std": 0.003 + 0.08 * snoise,
        "bg_w": bg_w,
        "amplitude": 0.45 * (1.0 + 0.2 * math.tanh(x[I_AMP])),
        "decay": 0.05 * 2.0 ** (0.3 * math.tanh(x[I_DECAY])),
        "texture_phase": float(math.pi * math.tanh(x[I_TPHASE])),
    }


def scene_truth(p: dict[str, Any], audio_times: list[float]) -> dict[str, Any]:
    """JSON-serialisable description of the rendered scene (attributes by name + raw parameters)."""
    return {
        "colour": nearest_colour(p["rgb"]),
        "rgb": [round(float(c), 2) for c in p["rgb"]],
        "shape": "cube" if superellipse_fill(p["exponent"]) > FILL_THRESHOLD else "ball",
        "size": _nearest(p["radius_64"], SIZES),
        "radius_px": round(float(p["radius"]), 3),
        "count": int(p["count"]),
        "bounce_times_s": [round(float(t), 5) for t in p["bounce_times"]],
        "audio_event_times_s": [round(float(t), 5) for t in audio_times],
        "audio_offset_s": round(float(p["audio_offset_s"]), 5),
        "pitch": _nearest(p["pitch_hz"], PITCHES, log=True),
        "pitch_hz": round(float(p["pitch_hz"]), 3),
        "timbre": TIMBRES[int(np.argmax(p["timbre_w"]))],
        "timbre_weights": {n: round(float(w), 4) for n, w in zip(TIMBRES, p["timbre_w"])},
        "background": BACKGROUNDS[int(np.argmax(p["bg_w"]))],
        "picture_noise": round(float(p["picture_noise"]), 5),
        "pixel_noise_std": round(float(p["pixel_noise_std"]), 3),
        "sound_noise": round(float(p["sound_noise"]), 5),
        "hiss_std": round(float(p["hiss_std"]), 5),
    }


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


#: bounce arcs: height = drop * (1 - |1 - 2 d / P|^ARC_EXPONENT) (2 = parabola), d = time to the nearest
#: impact; drop = min(room above the floor, DROP_PER_S * P) px (at size 64), so the impact speed
#: 4 * DROP_PER_S px/s (~6.7 px per frame at 12 fps) is the same for every count: dense optical flow
#: (Farneback) tracks it, and motion-energy peaks fall within a frame of the impacts
ARC_EXPONENT = 2.0
DROP_PER_S = 20.0
#: largest squash (area preserving) at an impact
SQUASH = 0.3


def latent_rng(x_row: np.ndarray) -> np.random.Generator:
    """numpy Generator seeded from BLAKE2b of the float32 bytes of one latent row."""
    h = hashlib.blake2b(np.ascontiguousarray(x_row, dtype=np.float32).tobytes(), digest_size=8)
    return np.random.default_rng(int.from_bytes(h.digest(), "little"))


def render_video(p: dict[str, Any], rng: np.random.Generator, duration: float, fps: float,
                 size: int) -> np.ndarray:
    """(T, size, size, 3) uint8 frames of the scene ``p``."""
    n_frames = int(round(duration * fps))
    t = np.arange(n_frames, dtype=np.float64) / fps
    dt = 1.0 / fps
    r = p["radius"]
    period = p["period"]
    floor_y = size - 8.0 * size / 64.0
    drop = max(min(floor_y - 2.0 * r - 4.0 * size / 64.0, DROP_PER_S * size / 64.0 * period), 1.0)
    u = t / period - 0.5 - p["phase"]
    d = np.abs(u - np.round(u)) * period  # time to the nearest bounce
    height = drop * (1.0 - np.abs(1.0 - 2.0 * d / period) ** ARC_EXPONENT)
    squash = SQUASH * np.clip(1.0 - d / (0.6 * dt), 0.0, 1.0)
    sx = 1.0 + squash
    sy = 1.0 / sx
    cy = floor_y - height - r * sy
    lo = r + 1.0
    span = max(size - 2.0 * r - 2.0, 1e-6)
    pos = np.mod(p["cx0"] - lo + p["vx"] * t, 2.0 * span)
    cx = lo + np.where(pos > span, 2.0 * span - pos, pos)

    grid = np.arange(size, dtype=np.float32) + 0.5
    ex = np.float32(p["exponent"])
    dx = np.abs((grid[None, None, :] - cx[:, None, None].astype(np.float32))
                / (r * sx[:, None, None]).astype(np.float32))
    dy = np.abs((grid[None, :, None] - cy[:, None, None].astype(np.float32))
                / (r * sy[:, None, None]).astype(np.float32))
    np.minimum(dx, 50.0, out=dx)
    np.minimum(dy, 50.0, out=dy)
    dist = (dx ** ex + dy ** ex) ** (1.0 / ex)  # (T, H, W)
    scale_px = (r * np.minimum(sx, sy)).astype(np.float32)[:, None, None]
    alpha = np.clip((1.0 - dist) * scale_px + 0.5, 0.0, 1.0)[..., None]

    bg = np.full((size, size, 3), p["bg_level"], dtype=np.float32)
    bg[..., 0] += p["tint"]
    bg[..., 2] -= p["tint"]
    bg[int(math.ceil(floor_y)):] += 22.0
    rgb = np.asarray(p["rgb"], dtype=np.float32)
    frames = bg[None] + alpha * (rgb - bg[None])
    noise = rng.standard_normal(frames.shape, dtype=np.float32)
    frames += noise * np.float32(p["pixel_noise_std"])
    np.clip(frames, 0.0, 255.0, out=frames)
    return np.rint(frames).astype(np.uint8)


def render_audio(p: dict[str, Any], rng: np.random.Generator, duration: float,
                 sample_rate: int) -> tuple[np.ndarray, list[float]]:
    """(N,) float32 waveform of the scene ``p`` and the audio event times actually rendered."""
    sr = int(sample_rate)
    n = int(round(duration * sr))
    audio = np.zeros(n, dtype=np.float64)
    f0 = p["pitch_hz"]
    tau = p["decay"]
    length = min(int(0.3 * sr), n)
    tr = np.arange(length) / sr
    attack = np.minimum(1.0, tr / 0.002)
    env = np.exp(-tr / tau) * attack
    env_click = np.exp(-tr / (0.16 * tau)) * attack
    w_beep, w_buzz, w_click = (float(w) for w in p["timbre_w"])
    sine = np.sin(2 * np.pi * f0 * tr)
    template = np.zeros(length)
    if w_beep > 1e-4:
        template += w_beep * sine * env
    if w_buzz > 1e-4:
        sq = np.zeros(length)
        for h in range(1, 10, 2):
            if h * f0 < 0.45 * sr:
                sq += np.sin(2 * np.pi * h * f0 * tr) / h
        sq /= max(np.max(np.abs(sq)), 1e-9)
        template += w_buzz * sq * env
    if w_click > 1e-4:
        template += w_click * 0.6 * (sine + rng.standard_normal(length)) * env_click
    template *= p["amplitude"]
    times: list[float] = []
    for tb in p["bounce_times"]:
        te = tb + p["audio_offset_s"]
        i0 = int(round(te * sr))
        if 0 <= te < duration and i0 < n:
            m = min(length, n - i0)
            audio[i0:i0 + m] += template[:m]
            times.append(float(te))
    t = np.arange(n) / sr
    w_rain, w_wind, w_hum, _ = (float(w) for w in p["bg_w"])
    ph = p["texture_phase"]
    if w_rain > 1e-3:
        white = rng.standard_normal(n + 1)
        audio += w_rain * 0.01 * np.diff(white) / math.sqrt(2.0)
    if w_wind > 1e-3:
        a = math.exp(-2 * math.pi * 300.0 / sr)
        from scipy.signal import lfilter  # on first use: importing the world (prompt grammar) stays light

        lp = lfilter([1.0 - a], [1.0, -a], rng.standard_normal(n))
        lp /= math.sqrt((1.0 - a) / (1.0 + a))
        audio += w_wind * 0.015 * lp * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t + ph))
    if w_hum > 1e-3:
        audio += w_hum * 0.012 * (np.sin(2 * np.pi * 100.0 * t + ph) + 0.5 * np.sin(2 * np.pi * 200.0 * t + ph))
    audio += p["hiss_std"] * rng.standard_normal(n)
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio.astype(np.float32), times
