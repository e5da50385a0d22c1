"""The numpy renderer: scene parameters -> frames and audio (deterministic in the latent row)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

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
