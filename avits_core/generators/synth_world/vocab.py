"""The SynthAV vocabulary (palette, sizes, pitches, ...), the latent layout (which dimension holds
what), the scene modes' prior weights and the shape rule shared by the renderer and ``synth_text``."""

from __future__ import annotations

import math

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

SYNONYMS: dict[str, dict[str, str]] = {
    "size": {"small": "small", "tiny": "small", "medium": "medium", "large": "large", "big": "large"},
    "colour": {**{c: c for c in PALETTE}, "violet": "purple"},
    "shape": {"ball": "ball", "sphere": "ball", "cube": "cube", "box": "cube", "block": "cube"},
    "pitch": {"low": "low", "deep": "low", "mid": "mid", "middle": "mid", "high": "high"},
    "timbre": {"click": "click", "tick": "click", "beep": "beep", "tone": "beep", "buzz": "buzz",
               "buzzer": "buzz"},
    "background": {"rain": "rain", "rainy": "rain", "wind": "wind", "windy": "wind", "hum": "hum",
                   "silence": "silence", "silent": "silence", "quiet": "silence"},
}
ONCE_WORDS = {"once": 1, "twice": 2, "thrice": 3}

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
ATTR_STD = {
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


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
