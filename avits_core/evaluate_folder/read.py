"""Reading one prompt's clip for the metrics: the clip with its audio and the video-only clip, as
:mod:`avits_core.media` (``avits`` protocol) or as JavisBench's evaluator reads them (OpenCV frames,
the ``.wav`` beside the mp4); an unreadable clip becomes an Exception in its place."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avits_core.errors import MediaError, MediaFormatError
from avits_core.media import AVClip

if TYPE_CHECKING:
    from avits_core.evaluate_folder.match import ClipEntry

def _probe(path: Path) -> tuple[bool, bool]:
    import av

    try:
        with av.open(str(path)) as c:
            return bool(c.streams.video), bool(c.streams.audio)
    except av.error.FFmpegError as exc:
        raise MediaFormatError(f"cannot read {path} as a media file: {exc}") from exc


def _read_cv2_video(path: Path) -> tuple[np.ndarray, float]:
    """Every frame as OpenCV decodes it (converted BGR -> RGB) and CAP_PROP_FPS, like the evaluator."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MediaFormatError(f"OpenCV cannot open {path}")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f[..., ::-1])
    finally:
        cap.release()
    if not frames:
        raise MediaFormatError(f"{path}: OpenCV decoded no frames")
    if not fps > 0:
        raise MediaFormatError(f"{path}: OpenCV reports no frame rate")
    return np.ascontiguousarray(np.stack(frames)), fps


def read_entry(entry: ClipEntry, protocol: str) -> tuple[AVClip | Exception, AVClip | Exception]:
    """(clip with video and audio, clip for video-only metrics); an Exception in place of a clip
    that cannot be read, which ``Verifier.score`` turns into that clip's error row."""
    from avits_core.media import read_mp4, read_mp4_audio, read_video, read_wav

    if entry.path is None:
        err = MediaError(entry.problem or "missing")
        return err, err
    path = entry.path
    try:
        has_video, has_audio = _probe(path)
        if not has_video:
            raise MediaFormatError(f"{path} has no video stream")
        if protocol == "javisbench":
            frames, fps = _read_cv2_video(path)
        elif has_audio:
            full = read_mp4(path)
            frames, fps = full.video, full.fps
        else:
            frames, fps = read_video(path, backend="pyav")
    except Exception as exc:  # noqa: BLE001 - becomes this clip's error row
        return exc, exc
    meta = {"path": str(path), "prompt_id": entry.prompt.prompt_id}
    silent = AVClip(frames, fps, np.zeros(1, np.float32), 1, dict(meta, no_audio=True))
    try:
        if protocol == "javisbench" and entry.wav is not None:
            audio, sr = read_wav(entry.wav)
            meta["audio_path"] = str(entry.wav)
        elif not has_audio:
            raise MediaFormatError(f"{path} has no audio stream (and no {path.with_suffix('.wav').name} beside it)")
        elif protocol == "avits":
            audio, sr = full.audio, full.sample_rate
        else:  # the frames came from OpenCV: decode only the audio (read_mp4's samples)
            audio, sr = read_mp4_audio(path)
        return AVClip(frames, fps, audio, sr, meta), silent
    except Exception as exc:  # noqa: BLE001
        return exc, silent

