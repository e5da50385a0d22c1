"""Frames placed by their timestamps: a frame's (time, duration) and :func:`constant_rate`, which turns a
variable-frame-rate stream into a constant-rate one as FFmpeg's ``fps`` filter does."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from avits_core.errors import MediaFormatError

log = logging.getLogger("avits_core.media")  # one logger name for the package, as before the split

#: Frame intervals within this fraction of the median interval count as constant (timestamps are
#: rounded to the container's time base, e.g. 1/12800 s or 1 ms).
VFR_TOLERANCE = 0.1


def frame_stamp(frame: Any) -> tuple[float, float]:
    """(presentation time in s, duration in s) of a decoded frame; NaN where the file has none."""
    t = np.nan if frame.time is None else float(frame.time)
    dur = getattr(frame, "duration", None)
    d = np.nan if dur in (None, 0) or frame.time_base is None else float(dur * frame.time_base)
    return t, d


def frame_times(stamps: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(stamps, dtype=np.float64).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def constant_rate(images: list[np.ndarray], times: np.ndarray, nominal_fps: Any, path: Path | str,
                  durations: np.ndarray | None = None) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Frames at a constant rate from frames with presentation ``times`` (s): ``(video, fps, info)``.

    ``nominal_fps``: the stream's declared rate, or several (e.g. FFmpeg's guessed, average and base
    rates), best first. The output rate is the first of them within VFR_TOLERANCE of the median frame
    interval, else 1 / median (a fraction with denominator <= 1001). Constant-rate input (every
    interval within VFR_TOLERANCE of the median) is returned as is. Variable-rate input (phone and
    screen recordings) is resampled by timestamp to that rate, as FFmpeg's ``fps`` filter does: each
    source frame goes to the output slot nearest its timestamp (round((t - t0) * fps)), and output
    frame j is the latest frame whose slot is <= j (a frame is repeated until the next one; of two
    frames in one slot the later wins), up to the last frame's end (its own duration, or the
    median interval). ``info`` says what was done
    (``{"vfr": bool, "source_frames": n, ...}``). Frames without timestamps are taken as constant-rate.
    """
    n = len(images)
    info: dict[str, Any] = {"vfr": False, "source_frames": n}
    cands = [float(x) for x in (nominal_fps if isinstance(nominal_fps, (list, tuple)) else [nominal_fps])
             if x is not None and float(x) > 0]
    nominal_fps = cands[0] if cands else None
    if n == 0:
        raise MediaFormatError(f"{path}: the video stream decoded to no frames")
    t = np.asarray(times, dtype=np.float64)
    if n < 3 or not np.all(np.isfinite(t)):
        if nominal_fps is None or not nominal_fps > 0:
            raise MediaFormatError(f"{path}: cannot determine the video frame rate (no timestamps, no rate)")
        return np.stack(images), float(nominal_fps), info
    order = np.argsort(t, kind="stable")
    t = t[order]
    images = [images[i] for i in order]
    d = np.diff(t)
    if np.any(d <= 0):
        keep = np.concatenate([[True], d > 0])  # duplicate timestamps: keep the first frame of each
        images = [im for im, k in zip(images, keep) if k]
        t = t[keep]
        info["dropped_duplicate_timestamps"] = int((~keep).sum())
        d = np.diff(t)
        if d.size == 0:
            raise MediaFormatError(f"{path}: every video frame has the same timestamp")
    med = float(np.median(d))
    agree = [c for c in cands if abs(1.0 / c - med) <= VFR_TOLERANCE * med]
    fps = agree[0] if agree else float(Fraction(1.0 / med).limit_denominator(1001))
    if np.all(np.abs(d - med) <= VFR_TOLERANCE * med):
        return np.stack(images), fps, info
    last = float(durations[order][-1]) if durations is not None and np.isfinite(durations[order][-1]) else med
    span = float(t[-1] - t[0]) + last
    m = max(1, int(round(span * fps)))
    slots = np.rint((t - t[0]) * fps)  # each frame to its nearest output slot (timestamps jitter by a tick)
    idx = np.searchsorted(slots, np.arange(m), side="right") - 1
    idx = np.clip(idx, 0, len(images) - 1)
    info.update(vfr=True, fps=fps, output_frames=m, min_interval_s=float(d.min()), max_interval_s=float(d.max()))
    log.warning("%s: variable frame rate (intervals %.1f-%.1f ms); resampled by timestamp to %.3f fps "
                "(%d -> %d frames)", path, 1e3 * d.min(), 1e3 * d.max(), fps, len(images), m)
    return np.stack([images[i] for i in idx]), fps, info
