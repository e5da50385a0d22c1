"""Synchformer's audio input without torchaudio: 16 kHz mono, segments, log-mel, normalisation.

Per segment of 10,240 samples (0.64 s) a power mel spectrogram as torchaudio's
``MelSpectrogram(sample_rate=16000, n_fft=1024, win_length=400, hop_length=160, n_mels=128)``
computes it: periodic Hann window of 400 samples zero-padded (centred) to 1024, ``center=True`` with
reflect padding, |STFT|^2, an HTK mel filterbank from 0 Hz to 8 kHz with no area normalisation;
then ``log(x + 1e-6)`` (65 frames), zero-padded in the log domain to 66 frames, and normalised as
``(x + 4.2677393) / (2 * 4.5689974)``. Result per segment: (n_mels, 66), frequency first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from avits_core.verifiers.synchformer.windows import SEG_SAMPLE_STEP, SEG_SAMPLES, SYNC_SR

N_FFT = 1024
WIN_LENGTH = 400
HOP_LENGTH = 160
N_MELS = 128
SPEC_FRAMES = 66
LOG_OFFSET = 1e-6
MEL_MEAN = -4.2677393
MEL_STD = 4.5689974


def hz_to_mel_htk(f: Any) -> Any:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz_htk(m: Any) -> Any:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def htk_mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SYNC_SR,
                       f_min: float = 0.0, f_max: float | None = None) -> np.ndarray:
    """Triangular HTK mel filters without normalisation, float64 (n_fft // 2 + 1, n_mels).

    Filter m rises from mel point m to m+1 and falls to m+2, the n_mels + 2 points equally spaced on
    the HTK mel scale 2595 log10(1 + f/700) between ``f_min`` and ``f_max`` (default Nyquist);
    weights are taken at the FFT bin frequencies k * sr / n_fft."""
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    pts = mel_to_hz_htk(np.linspace(hz_to_mel_htk(f_min), hz_to_mel_htk(f_max), n_mels + 2))
    diff = np.diff(pts)
    slopes = pts[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


_FB_CACHE: dict[tuple[int, str, str], Any] = {}


def _filterbank(n_mels: int, device: Any, dtype: Any) -> Any:
    import torch

    key = (n_mels, str(device), str(dtype))
    if key not in _FB_CACHE:
        _FB_CACHE[key] = torch.from_numpy(htk_mel_filterbank(n_mels)).to(device=device, dtype=dtype)
    return _FB_CACHE[key]


def log_mel(segments: Any, n_mels: int = N_MELS) -> Any:
    """``log(mel power + 1e-6)`` of float waves (..., samples) at 16 kHz -> float32 (..., n_mels, frames).

    ``frames = 1 + samples // 160`` (65 for one 10,240-sample segment). Computed in float64: in
    float32 the narrow lowest HTK filters lose ~1e-4 in the log domain against librosa."""
    import torch

    x = torch.as_tensor(segments).to(torch.float64)
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    window = torch.hann_window(WIN_LENGTH, periodic=True, device=flat.device, dtype=flat.dtype)
    spec = torch.stft(flat, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=window,
                      center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    power = spec.abs().pow(2.0)  # (N, n_freqs, frames)
    mel = torch.matmul(power.transpose(1, 2), _filterbank(n_mels, flat.device, flat.dtype)).transpose(1, 2)
    out = torch.log(mel + LOG_OFFSET).float()
    return out.reshape(*shape[:-1], n_mels, out.shape[-1])


def normalise_log_mel(lm: Any, frames: int = SPEC_FRAMES) -> Any:
    """Zero-pad (or cut) the time axis to ``frames`` in the log domain, then Synchformer's normalisation."""
    import torch

    diff = frames - lm.shape[-1]
    if diff > 0:
        lm = torch.nn.functional.pad(lm, (0, diff), mode="constant", value=0.0)
    elif diff < 0:
        lm = lm[..., :frames]
    return (lm - MEL_MEAN) / (2.0 * MEL_STD)


def cut_audio_segments(wave: Any) -> Any:
    """(S, 10240) segments with stride 5,120 of a 16 kHz wave (N,); S = (N - 10240) // 5120 + 1."""
    import torch

    w = torch.as_tensor(wave)
    if w.shape[-1] < SEG_SAMPLES:
        return w.new_zeros((0, SEG_SAMPLES))
    return w.unfold(-1, SEG_SAMPLES, SEG_SAMPLE_STEP)


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """``wave`` cut to ``n`` samples, or zero-padded at the end to ``n``."""
    w = np.asarray(wave, dtype=np.float32)
    if w.shape[0] >= n:
        return w[:n]
    return np.concatenate([w, np.zeros(n - w.shape[0], dtype=np.float32)])


def audio_input(wave16k: np.ndarray, n_samples: int, n_mels: int = N_MELS) -> Any:
    """Synchformer's audio input for one 16 kHz wave cut/padded to ``n_samples``: float32
    (S, n_mels, 66), one normalised log-mel per segment."""
    import torch

    w = torch.from_numpy(fit_length(wave16k, n_samples))
    segs = cut_audio_segments(w)
    return normalise_log_mel(log_mel(segs, n_mels))


def resampled_length(n: int, sr_in: int, sr_out: int = SYNC_SR) -> int:
    """Length of ``n`` samples at ``sr_in`` after polyphase resampling to ``sr_out`` (scipy's ceil)."""
    g = math.gcd(int(sr_in), int(sr_out))
    up, down = int(sr_out) // g, int(sr_in) // g
    return -(-n * up // down)
