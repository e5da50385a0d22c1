"""Latent vector -> scene parameters (colour, size, shape, count, pitch, timbre, ...) and the
ground truth a rendered clip carries."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from avits_core.generators.synth_world.vocab import (
    BACKGROUNDS,
    BG_PROTOS,
    FILL_THRESHOLD,
    I_AMP,
    I_BG,
    I_BGLEVEL,
    I_COUNT,
    I_DECAY,
    I_OFFSET,
    I_PHASE,
    I_PITCH,
    I_PNOISE,
    I_RGB,
    I_SHAPE,
    I_SIZE,
    I_SNOISE,
    I_TIMBRE,
    I_TINT,
    I_TPHASE,
    I_VX,
    I_X0,
    MAX_COUNT,
    OFFSET_SCALE,
    PALETTE,
    PITCHES,
    PROTO_TEMPERATURE,
    SHAPE_GAIN,
    SIZES,
    TIMBRE_PROTOS,
    TIMBRES,
    sigmoid,
    superellipse_fill,
)

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
    rgb = 255.0 * sigmoid(x[I_RGB])
    radius = float(np.clip(8.0 + 3.0 * x[I_SIZE], 4.0, 13.0)) * scale
    shape_v = float(x[I_SHAPE])
    exponent = 2.0 * math.exp(SHAPE_GAIN * max(shape_v + 1.0, 0.0) ** 2)
    count = int(np.clip(np.round(x[I_COUNT] + 2.5), 1, MAX_COUNT))
    pnoise = float(sigmoid(2.5 * x[I_PNOISE]))
    phase = 0.15 * math.tanh(x[I_PHASE])
    period = duration / count
    bounce_times = [(k + 0.5 + phase) * period for k in range(count)]
    pitch_hz = 440.0 * 2.0 ** float(np.clip(x[I_PITCH], -2.5, 2.5))
    timbre_w = _softmax_protos(x[I_TIMBRE], TIMBRE_PROTOS)
    offset = float(np.clip(OFFSET_SCALE * x[I_OFFSET], -0.6, 0.6))
    snoise = float(sigmoid(2.5 * x[I_SNOISE]))
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
