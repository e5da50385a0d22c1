"""SynthText's picture measurements: the object's segmentation and track, colour, shape, size and
bounce count (the rules are in :mod:`avits_core.verifiers.synth_text`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from avits_core.errors import MeasurementError
from avits_core.generators.synth_world import SIZES, nearest_colour
from avits_core.media import AVClip

CUBE_RATIO = 1.062  # diagonal/axis extent ratio of the superellipse with fill FILL_THRESHOLD (p = 2.85)


@dataclass
class ObjectTrack:
    """Per-frame measurements of the segmented object (NaN where not found)."""

    rgb: np.ndarray  # (3,) object colour
    area: np.ndarray  # (T,)
    width: np.ndarray
    height: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    diag_ratio: np.ndarray  # diagonal / axis extent ratio

    @property
    def found(self) -> np.ndarray:
        return np.isfinite(self.area)


def check_video(clip: AVClip) -> np.ndarray:
    v = np.asarray(clip.video)
    if v.ndim != 4 or v.shape[0] < 1:
        raise MeasurementError(f"video has no frames (shape {v.shape})")
    if v.shape[1] < 8 or v.shape[2] < 8:
        raise MeasurementError(f"frames of {v.shape[2]}x{v.shape[1]} px are too small to measure (need >= 8x8)")
    return v


def track_object(video: np.ndarray) -> ObjectTrack | None:
    """Segment the single coloured object in every frame (see module docstring); None if absent."""
    from scipy.ndimage import uniform_filter  # scipy loads on first use: listing/checking verifiers stays light

    f = video.astype(np.float32)
    n = f.shape[0]
    blur = uniform_filter(f, size=(1, 3, 3, 1), mode="nearest")
    bg = np.median(f.reshape(n, -1, 3), axis=1)  # (T, 3)
    diff = blur - bg[:, None, None, :]
    dist = np.sqrt(np.sum(diff * diff, axis=-1))
    coarse = dist > 60.0
    if int(coarse.sum()) < 4:
        return None
    dv = dist[coarse]
    core = blur[coarse][dv >= np.median(dv)]
    rgb = np.median(core, axis=0)
    axis = rgb[None, :] - bg  # (T, 3)
    norm2 = np.maximum(np.sum(axis * axis, axis=-1), 1e-6)
    alpha = np.einsum("thwc,tc->thw", diff, axis) / norm2[:, None, None]
    mask = (alpha > 0.5).astype(np.uint8)
    area = np.full(n, np.nan)
    width, height, cx, cy, ratio = (np.full(n, np.nan) for _ in range(5))
    for i in range(n):
        k, labels, stats, cents = cv2.connectedComponentsWithStats(mask[i], connectivity=8)
        if k < 2:
            continue
        j = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        a = stats[j, cv2.CC_STAT_AREA]
        if a < 4:
            continue
        area[i] = a
        width[i] = stats[j, cv2.CC_STAT_WIDTH]
        height[i] = stats[j, cv2.CC_STAT_HEIGHT]
        cx[i], cy[i] = cents[j]
        ys, xs = np.nonzero(labels == j)
        ratio[i] = extent_ratio(xs.astype(np.float64), ys.astype(np.float64))
    if not np.any(np.isfinite(area)):
        return None
    return ObjectTrack(rgb=rgb, area=area, width=width, height=height, cx=cx, cy=cy, diag_ratio=ratio)


def extent_ratio(xs: np.ndarray, ys: np.ndarray) -> float:
    """(diagonal extents) / (axis extents) of a pixel set; extent = 98th - 2nd percentile of the
    coordinates projected on a direction. 1.0 for a disc, sqrt(2)-ish for a square."""
    def ext(v: np.ndarray) -> float:
        lo, hi = np.percentile(v, [2.0, 98.0])
        return float(hi - lo)

    axes = ext(xs) + ext(ys)
    if axes <= 0:
        return 1.0
    return (ext((xs + ys) / math.sqrt(2.0)) + ext((xs - ys) / math.sqrt(2.0))) / axes


def _trimmed_mean(v: np.ndarray, cut: float = 0.2) -> float:
    v = np.sort(v[np.isfinite(v)])
    k = int(len(v) * cut)
    core = v[k:len(v) - k] if len(v) - 2 * k > 0 else v
    return float(core.mean())


def count_bounces(cy: np.ndarray) -> int:
    """Number of lowest points of a vertical trajectory (row coordinate grows downwards)."""
    y = np.asarray(cy, dtype=np.float64)
    ok = np.isfinite(y)
    if ok.sum() < 3:
        return 0
    if not ok.all():  # interpolate frames where the object was not found
        idx = np.arange(len(y))
        y = np.interp(idx, idx[ok], y[ok])
    lo, hi = float(y.min()), float(y.max())
    rng = hi - lo
    if rng < 2.0:
        return 0
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(y, prominence=max(1.5, 0.25 * rng))
    return int(np.sum(y[peaks] >= lo + 0.5 * rng))


def measure_video(clip: AVClip, need_count: bool = True) -> dict[str, Any]:
    """Measured colour / shape / size / count of the clip's object ({} values None when absent)."""
    video = check_video(clip)
    if need_count and video.shape[0] < 3:
        raise MeasurementError(f"{video.shape[0]} frame(s) are too few to count bounces (need >= 3)")
    track = track_object(video)
    if track is None:
        return {"colour": None, "shape": None, "size": None, "count": None, "fill": None, "radius_px": None,
                "diag_ratio": None}
    ok = track.found
    fill = float(np.median(track.area[ok] / (track.width[ok] * track.height[ok])))
    diag_ratio = _trimmed_mean(track.diag_ratio[ok])
    radius = float(np.median(np.sqrt(track.width[ok] * track.height[ok]) / 2.0))
    radius_64 = radius * 64.0 / video.shape[2]
    size = min(SIZES, key=lambda k: abs(SIZES[k] - radius_64))
    return {
        "colour": nearest_colour(track.rgb),
        "rgb": [float(c) for c in track.rgb],
        "shape": "cube" if diag_ratio > CUBE_RATIO else "ball",
        "fill": fill,
        "diag_ratio": diag_ratio,
        "size": size,
        "radius_px": radius,
        "count": count_bounces(track.cy),
    }
