"""Audio files (wav and whatever libsndfile reads) and resampling."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from avits_core.errors import MediaFileNotFoundError, MediaFormatError
from avits_core.media._store import read_remote
from avits_core.store import fs as sfs


def write_wav(audio: np.ndarray, sample_rate: int, path: str | os.PathLike[str], *,
              subtype: str = "FLOAT") -> Path:
    """Write mono float audio to a wav file (32-bit float by default; ``subtype`` as soundfile names it).

    Atomic (temp file + os.replace). Raises MediaFormatError for non-mono or non-finite audio.
    """
    import soundfile as sf

    path = Path(path)
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise MediaFormatError(f"cannot write {path}: audio must be mono (N,), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise MediaFormatError(f"cannot write {path}: the audio contains NaN or infinite samples")
    if int(sample_rate) <= 0:
        raise MediaFormatError(f"cannot write {path}: sample_rate must be > 0, got {sample_rate}")
    if not path.parent.is_dir():
        raise MediaFileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    with sfs.atomic_path(path) as tmp:
        sf.write(str(tmp), a, int(sample_rate), subtype=subtype, format="WAV")
    return path


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read an audio file (wav, flac, ogg: whatever libsndfile reads) as float32 mono (channels averaged) and its rate."""
    if sfs.is_remote(path):
        return read_remote(path, read_wav, "audio")
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise MediaFileNotFoundError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise MediaFormatError(f"cannot read {path} as audio: {exc}") from exc
    return data.mean(axis=1).astype(np.float32, copy=False), int(sr)


def resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Resample mono audio from ``sr_from`` to ``sr_to`` Hz; returns float32 of length ceil(N * sr_to / sr_from).

    Polyphase FIR resampling (scipy.signal.resample_poly, Kaiser window beta 5) with up/down the
    exact reduced ratio of the two integer rates (e.g. 44100 -> 16000 is up 160, down 441); a
    non-integer rate is approximated by a fraction with denominator <= 1000.
    """
    from scipy.signal import resample_poly

    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"resample: audio must be mono (N,), got shape {a.shape}")
    if sr_from <= 0 or sr_to <= 0:
        raise ValueError(f"resample: sample rates must be > 0, got {sr_from} -> {sr_to}")
    if sr_from == sr_to:
        return a.copy()
    if float(sr_from).is_integer() and float(sr_to).is_integer():
        ratio = Fraction(int(sr_to), int(sr_from))
    else:
        ratio = Fraction(sr_to / sr_from).limit_denominator(1000)
    out = resample_poly(a, ratio.numerator, ratio.denominator)
    return np.asarray(out, dtype=np.float32)
