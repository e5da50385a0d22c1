"""ImageBind's audio input without torchaudio: a Kaldi-compatible log-mel filterbank and the 2 s clips
ImageBind cuts a wave into (see the package docstring for the recipe)."""

from __future__ import annotations

from typing import Any

import numpy as np

from avits_core.verifiers import hf

#: ImageBind's fbank normalisation (its data.py).
IB_AUDIO_MEAN = -4.268
IB_AUDIO_STD = 9.138


def kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float = 20.0,
                    high_freq: float | None = None) -> Any:
    """Kaldi's triangular mel filters on the mel scale 1127 ln(1 + f/700): (num_bins, n_fft//2 + 1).

    The last column (the Nyquist bin) is zero, as in Kaldi."""
    import torch

    high = sample_rate / 2.0 if not high_freq else float(high_freq)
    mel = lambda f: 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)  # noqa: E731
    mel_low, mel_high = mel(low_freq), mel(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64)[:, None]
    left = mel_low + b * delta
    center = left + delta
    right = center + delta
    m = mel(sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float64))[None, :]
    up = (m - left) / (center - left)
    down = (right - m) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1)).float()


def kaldi_fbank(wave: np.ndarray, sample_rate: int, num_mel_bins: int = 128,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
                preemphasis: float = 0.97, low_freq: float = 20.0) -> Any:
    """Kaldi-compatible log-mel filterbank (as torchaudio.compliance.kaldi.fbank with a Hanning
    window, dither 0, snip_edges, power spectrum, no energy): float32 tensor (frames, num_mel_bins).

    Per frame: remove the DC offset, pre-emphasise (x[i] - 0.97 x[i-1], x[-1] = x[0]), apply a
    symmetric Hann window, zero-pad to the next power of two, |rfft|^2, mel filters, log(max(., eps)).
    Audio shorter than one frame gives zero frames."""
    import torch

    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    win = int(sample_rate * frame_length_ms / 1000.0)
    shift = int(sample_rate * frame_shift_ms / 1000.0)
    if x.numel() < win:
        return torch.zeros((0, num_mel_bins), dtype=torch.float32)
    frames = x.unfold(0, win, shift)  # (n, win), snip_edges
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - preemphasis * prev) * torch.hann_window(win, periodic=False)
    n_fft = 1 << (win - 1).bit_length()
    power = torch.fft.rfft(frames, n=n_fft).abs().pow(2)
    mel = power @ kaldi_mel_banks(num_mel_bins, n_fft, sample_rate, low_freq).T
    return torch.clamp(mel, min=torch.finfo(torch.float32).eps).log()


def _even_clip_starts(duration: float, clip_duration: float, clips: int) -> list[float]:
    """Evenly spaced clip starts over [0, duration - clip_duration] (pytorchvideo's constant sampler)."""
    max_start = max(duration - clip_duration, 0.0)
    step = max_start / max(clips - 1, 1)
    return [i * step for i in range(clips)]


def ib_audio_input(wave: np.ndarray, sample_rate: int, *, target_rate: int = 16000, clip_duration: float = 2.0,
                   clips_per_audio: int = 3, num_mel_bins: int = 128, target_length: int = 204) -> Any:
    """ImageBind's audio input for one wave: float32 (clips_per_audio, 1, num_mel_bins, target_length)."""
    import torch

    w = hf.resample_audio(wave, int(sample_rate), target_rate)
    if w.size == 0:
        raise ValueError("the audio is empty")
    out = []
    for s in _even_clip_starts(w.shape[0] / target_rate, clip_duration, clips_per_audio):
        seg = w[int(s * target_rate): int((s + clip_duration) * target_rate)]
        seg = seg - seg.mean() if seg.size else seg
        fb = kaldi_fbank(seg, target_rate, num_mel_bins).T  # (bins, frames)
        n = fb.shape[1]
        if n < target_length:
            fb = torch.nn.functional.pad(fb, (0, target_length - n))
        else:
            fb = fb[:, :target_length]
        out.append(((fb - IB_AUDIO_MEAN) / IB_AUDIO_STD)[None])
    return torch.stack(out)
