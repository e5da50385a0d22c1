"""The video track alone (:func:`read_video`: decord or PyAV), for clips that need not carry sound."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from avits_core.errors import MediaFileNotFoundError, MediaFormatError
from avits_core.media._store import read_remote
from avits_core.media.timing import VFR_TOLERANCE, constant_rate, frame_stamp, frame_times
from avits_core.store import fs as sfs

log = logging.getLogger("avits_core.media")  # one logger name for the package, as before the split


class _VariableRate(Exception):
    """decord found a variable frame rate: read_video takes the PyAV path, which resamples by timestamp."""


def read_video(path: str | os.PathLike[str], *, backend: str = "auto") -> tuple[np.ndarray, float]:
    """Only the video track of a file: ``(frames uint8 (T, H, W, 3) RGB, fps)``. No audio needed.

    ``backend``: ``"decord"`` (batched decoding, fast on long real videos; the x86-64 wheels only),
    ``"pyav"``, or ``"auto"`` (decord when importable, else PyAV). Frames are placed by their
    timestamps: a variable-frame-rate file is resampled to a constant rate as in :func:`read_mp4`
    (decord detects it and hands the file to PyAV). Used for reference videos (FVD),
    which need not carry sound. Both backends decode with FFmpeg; their RGB conversions may differ
    by a few levels per pixel (measured in tests/test_media.py).
    """
    if sfs.is_remote(path):
        return read_remote(path, lambda local: read_video(local, backend=backend))
    path = Path(path)
    if not path.is_file():
        raise MediaFileNotFoundError(f"media file not found: {path}")
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"read_video backend must be auto, decord or pyav, got {backend!r}")
    if backend in ("auto", "decord"):
        try:
            import decord
        except ImportError:
            if backend == "decord":
                raise MediaFormatError("decord is not installed (it has x86-64 wheels only); use backend='pyav'") from None
        else:
            try:
                vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
                n = len(vr)
                stamps = np.asarray(vr.get_frame_timestamp(list(range(n))), dtype=np.float64) if n else None
                if stamps is not None and n >= 3:
                    d = np.diff(stamps[:, 0])
                    med = float(np.median(d))
                    if not (med > 0 and np.all(np.abs(d - med) <= VFR_TOLERANCE * med)):
                        raise _VariableRate  # resampled by timestamp on the PyAV path
                frames = vr.get_batch(list(range(n))).asnumpy()
                return np.ascontiguousarray(frames, dtype=np.uint8), float(vr.get_avg_fps())
            except _VariableRate:
                log.debug("%s: variable frame rate; reading it with PyAV", path)
            except decord.DECORDError as exc:
                # decord 0.6 fails on some frame widths (it pads rows to an alignment); "auto" then
                # falls back to PyAV, an explicit "decord" says so.
                if backend == "decord":
                    raise MediaFormatError(f"cannot decode {path} with decord: {exc}") from exc
                log.debug("decord failed on %s (%s); reading it with PyAV", path, exc)
    import av

    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise MediaFormatError(f"{path} has no video stream")
            vs = container.streams.video[0]
            frames, stamps = [], []
            for f in container.decode(vs):
                frames.append(f.to_ndarray(format="rgb24"))
                stamps.append(frame_stamp(f))
            fps_q, guessed, base = vs.average_rate, vs.guessed_rate, vs.base_rate
            times, durs = frame_times(stamps)
    except av.error.FFmpegError as exc:
        raise MediaFormatError(f"cannot read {path} as a video file: {exc}") from exc
    if not frames:
        raise MediaFormatError(f"{path}: the video stream decoded to no frames")
    video, fps, _ = constant_rate(frames, times, [fps_q, guessed, base], path, durs)
    return video.astype(np.uint8, copy=False), fps
