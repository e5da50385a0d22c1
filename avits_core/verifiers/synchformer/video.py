"""Synchformer's video input without torchvision: 25 fps by frame timestamps, resize, crop, normalise.

25 fps resampling follows FFmpeg's ``fps`` filter (what av-benchmark and JavisBench decode with), on
the frame timestamps i / fps of the clip: each source frame's start time is rescaled to the 25 fps
grid with round-half-up (FFmpeg's default ``round=near`` for positive times), output frame n shows
the last source frame whose rounded time is <= n (frames are dropped or repeated), and the output
ends at the clip's end time N / fps, likewise rounded: ``round(25 N / fps)`` frames.

Each frame is then resized so that its shorter side is ``size`` (224) with antialiased bicubic
interpolation on uint8 (``torch.nn.functional.interpolate(..., mode="bicubic", antialias=True)``,
what torchvision's ``Resize(224, BICUBIC)`` runs on a uint8 tensor; the longer side becomes
``int(size * long / short)``), centre-cropped to size x size (offsets ``round((h - size) / 2)``),
scaled to [0, 1] and normalised with mean = std = 0.5 to [-1, 1]. Zero padding frames (JavisBench)
are black frames, i.e. -1 after normalisation.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from avits_core.verifiers.synchformer.windows import SEG_FRAME_STEP, SEG_FRAMES, SYNC_FPS

SIZE = 224


def _fraction(fps: float) -> Fraction:
    return Fraction(float(fps)).limit_denominator(100_000)


def _round_half_up(q: Fraction) -> int:
    return int((q * 2 + 1) // 2)


def fps_resample_indices(n_frames: int, fps: float, fps_out: float = SYNC_FPS) -> np.ndarray:
    """Source frame index of every output frame when ``n_frames`` frames at ``fps`` are resampled to
    ``fps_out`` like FFmpeg's fps filter (see the module docstring). int64 (round(N * fps_out / fps),)."""
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    ratio = _fraction(fps_out) / _fraction(fps)
    ticks = np.array([_round_half_up(i * ratio) for i in range(n_frames)], dtype=np.int64)
    n_out = _round_half_up(n_frames * ratio)
    # output tick t shows the last source frame whose rounded tick is <= t
    return np.searchsorted(ticks, np.arange(n_out), side="right").astype(np.int64) - 1


def resize_crop(frames: np.ndarray, size: int = SIZE) -> Any:
    """uint8 (T, H, W, 3) -> uint8 tensor (T, 3, size, size): shorter side to ``size`` (bicubic,
    antialias, on uint8), centre crop."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_h, new_w) != (h, w):
        x = torch.nn.functional.interpolate(x.contiguous(), size=(new_h, new_w), mode="bicubic",
                                            align_corners=False, antialias=True)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return x[:, :, top:top + size, left:left + size]


def normalise(x: Any) -> Any:
    """uint8 -> float32 in [-1, 1]: (x / 255 - 0.5) / 0.5."""
    return (x.float() / 255.0 - 0.5) / 0.5


def video_input(video: np.ndarray, fps: float, n_frames: int, size: int = SIZE) -> Any:
    """Synchformer's video input for one clip cut or zero-padded to ``n_frames`` frames at 25 fps:
    float32 (S, 3, 16, size, size), one 16-frame segment (stride 8) each."""
    import torch

    idx = fps_resample_indices(video.shape[0], fps)[:n_frames]
    x = normalise(resize_crop(video[idx], size))  # (T, 3, size, size)
    if x.shape[0] < n_frames:  # black frames -> -1
        pad = torch.full((n_frames - x.shape[0], *x.shape[1:]), -1.0, dtype=x.dtype)
        x = torch.cat([x, pad])
    if n_frames < SEG_FRAMES:
        return x.new_zeros((0, 3, SEG_FRAMES, size, size))
    segs = x.unfold(0, SEG_FRAMES, SEG_FRAME_STEP)  # (S, 3, size, size, 16)
    return segs.permute(0, 1, 4, 2, 3).contiguous()
