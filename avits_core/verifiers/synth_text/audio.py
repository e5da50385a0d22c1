"""SynthText's sound measurements: events, their spectrum and decay, pitch and timbre (the rules are in
:mod:`avits_core.verifiers.synth_text`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from avits_core.errors import MeasurementError
from avits_core.generators.synth_world import PITCHES
from avits_core.media import AVClip

EVENT_MIN_RATIO = 1.3  # an event's frame RMS must exceed 1.3 x the noise floor (~2.3 dB)
CLICK_DECAY_S = 0.025  # decay time constant below which an event is a click
BUZZ_ODD_RATIO = 0.04  # (E(3 f0) + E(5 f0)) / E(f0) above which a tonal event is a buzz


def check_audio(clip: AVClip) -> np.ndarray:
    a = np.asarray(clip.audio, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise MeasurementError(f"audio is empty (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise MeasurementError("audio contains NaN or infinite samples")
    if float(np.max(np.abs(a))) == 0.0:
        raise MeasurementError("audio is all zeros (digital silence)")
    sr = int(clip.sample_rate)
    if a.size < int(0.1 * sr):
        raise MeasurementError(f"audio of {a.size} samples ({a.size / sr:.3f} s) is too short to measure (need >= 0.1 s)")
    return a


def frame_rms(audio: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """RMS of 20 ms frames every 10 ms (frames fully inside the signal) and the hop in samples."""
    hop = max(1, int(round(0.01 * sr)))
    win = 2 * hop
    if audio.size < win:
        return np.array([math.sqrt(float(np.mean(audio * audio)))]), hop
    sq = np.concatenate([[0.0], np.cumsum(audio * audio)])
    starts = np.arange(0, audio.size - win + 1, hop)
    return np.sqrt(np.maximum(sq[starts + win] - sq[starts], 0.0) / win), hop


def event_onsets(audio: np.ndarray, sr: int) -> np.ndarray:
    """Sample indices where sound events start (see module docstring); empty if none stands out."""
    env, hop = frame_rms(audio, sr)
    floor = float(np.percentile(env, 20))
    peak = float(env.max())
    if peak <= EVENT_MIN_RATIO * floor or peak <= 0.0:
        return np.zeros(0, dtype=np.int64)
    above = env > floor + 0.3 * (peak - floor)
    rise = np.flatnonzero(above & ~np.concatenate([[False], above[:-1]]))
    return rise.astype(np.int64) * hop


def event_spectrum(audio: np.ndarray, sr: int, onsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(freqs, noise-subtracted summed event power spectrum) for the given onsets."""
    win_len = max(16, int(round(0.064 * sr)))
    lead = win_len // 4
    n_fft = 1 << int(math.ceil(math.log2(4 * win_len)))
    window = np.hanning(win_len)
    padded = np.concatenate([audio, np.zeros(win_len)])
    segs = []
    for o in onsets:
        s = max(0, int(o) - lead)
        segs.append(padded[s:s + win_len] * window)
    ev = np.sum(np.abs(np.fft.rfft(np.stack(segs), n=n_fft, axis=-1)) ** 2, axis=0)
    hop = win_len // 2
    starts = np.arange(0, max(1, audio.size - win_len + 1), hop)
    stft = np.stack([padded[s:s + win_len] * window for s in starts])
    noise = np.median(np.abs(np.fft.rfft(stft, n=n_fft, axis=-1)) ** 2, axis=0) / math.log(2.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    return freqs, np.maximum(ev - len(onsets) * noise, 0.0)


def _band_energy(freqs: np.ndarray, power: np.ndarray, centre: float, half_width: float) -> float:
    sel = np.abs(freqs - centre) <= half_width
    return float(power[sel].sum())


def event_decay_s(audio: np.ndarray, sr: int, onsets: np.ndarray) -> float:
    """Median over events of the amplitude decay time constant tau (s) of the sound events.

    Power of 4 ms frames every 2 ms; noise power = mean power of frames farther than 10 ms before /
    200 ms after every onset (the quietest half of all frames if fewer than 10 such frames); for
    each event, from its power peak (within -10..+30 ms of the onset)
    tau = 2 * sum(power - noise) * hop / (peak - noise) over 150 ms (an exponential amplitude decay
    exp(-t / tau) has power integral P0 tau / 2). Events whose 150 ms do not fit in the clip are
    used only when no event fits.
    """
    hop = max(1, int(round(0.002 * sr)))
    win = 2 * hop
    sq = np.concatenate([[0.0], np.cumsum(audio * audio)])
    starts = np.arange(0, max(1, audio.size - win + 1), hop)
    ends = np.minimum(starts + win, audio.size)
    power = (sq[ends] - sq[starts]) / np.maximum(ends - starts, 1)
    centres = starts + hop
    quiet = np.ones(power.size, dtype=bool)
    for o in onsets:
        quiet &= ~((centres >= o - 0.01 * sr) & (centres <= o + 0.2 * sr))
    if quiet.sum() >= 10:
        noise = float(power[quiet].mean())
    else:
        noise = float(np.mean(np.sort(power)[: power.size // 2 + 1]))
    span = int(round(0.15 * sr / hop))
    full, cut = [], []
    for o in onsets:
        lo = max(0, int((o - 0.01 * sr) // hop))
        hi = min(power.size, int((o + 0.03 * sr) // hop) + 1)
        if hi <= lo:
            continue
        j0 = lo + int(np.argmax(power[lo:hi]))
        peak = float(power[j0]) - noise
        if peak <= 0:
            continue
        seg = power[j0:j0 + span] - noise
        tau = 2.0 * float(seg.sum()) * hop / sr / peak
        (full if j0 + span <= power.size else cut).append(tau)
    taus = full or cut
    if not taus:
        raise MeasurementError("no sound event rises above the noise; cannot measure its decay")
    return float(np.median(taus))


def measure_audio(clip: AVClip) -> dict[str, Any]:
    """Measured pitch name/Hz and timbre of the clip's sound events (None when no event stands out)."""
    audio = check_audio(clip)
    sr = int(clip.sample_rate)
    onsets = event_onsets(audio, sr)
    if onsets.size == 0:
        return {"pitch": None, "pitch_hz": None, "timbre": None, "n_events": 0}
    freqs, power = event_spectrum(audio, sr, onsets)
    band = (freqs >= 150.0) & (freqs <= 1500.0)
    if not np.any(power[band] > 0):
        return {"pitch": None, "pitch_hz": None, "timbre": None, "n_events": int(onsets.size)}
    idx = np.flatnonzero(band)
    i = int(idx[np.argmax(power[band])])
    f0 = float(freqs[i])
    if 0 < i < len(power) - 1:  # parabolic refinement on log power
        a, b, c = np.log(power[i - 1:i + 2] + 1e-30)
        den = a - 2 * b + c
        if den < 0:
            f0 += 0.5 * (a - c) / den * float(freqs[1] - freqs[0])
    pitch = min(PITCHES, key=lambda k: abs(math.log2(PITCHES[k]) - math.log2(f0)))
    top = 0.47 * sr
    harm = [_band_energy(freqs, power, h * f0, max(35.0, 0.02 * h * f0)) for h in (1, 3, 5) if h * f0 <= top]
    odd_ratio = sum(harm[1:]) / harm[0] if harm[0] > 0 else 0.0
    decay = event_decay_s(audio, sr, onsets)
    if decay < CLICK_DECAY_S:
        timbre = "click"
    elif odd_ratio > BUZZ_ODD_RATIO:
        timbre = "buzz"
    else:
        timbre = "beep"
    return {"pitch": pitch, "pitch_hz": f0, "timbre": timbre, "decay_s": decay,
            "odd_ratio": odd_ratio, "n_events": int(onsets.size)}
