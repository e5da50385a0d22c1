"""Quality: no-reference cleanliness of the picture and the sound, in [0, 1] (higher is cleaner).

Input: an AVClip (uint8 RGB frames, mono float audio). No prompt, no reference, no weights.

Picture noise sigma_pic (uint8 grey levels): Immerkaer's fast noise-variance estimate
(J. Immerkaer, "Fast Noise Variance Estimation", CVIU 64(2), 1996) on each colour channel of each
frame: sigma = sqrt(pi / 2) / (6 (W - 2) (H - 2)) * sum |I * M| with the 3x3 mask
M = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] (valid convolution), which cancels smooth image structure
and keeps white noise; sigma_pic = the median over frames of the mean over channels.
    q_pic = 1 / (1 + (sigma_pic / 8)^2)        (sigma 0 -> 1, 8 grey levels -> 0.5, 40 -> 0.04)

Sound noise: the signal-to-noise ratio of the events over the background, from frame RMS (20 ms
windows every 10 ms): SNR_dB = 20 log10(peak / floor), peak = the largest frame RMS, floor = the 20th
percentile (sound events fill well under 80 % of a clip); a floor of exactly 0 caps SNR at 80 dB.
    q_snd = 1 / (1 + exp(-(SNR_dB - 15) / 3))   (15 dB -> 0.5, 25 dB -> 0.97, 6 dB -> 0.05)

Score = sqrt(q_pic * q_snd): the geometric mean, so a clip is clean only if both channels are.
The constants (8 grey levels, 15 dB, 3 dB) are set for SynthAV (sensor noise ~3 grey levels,
"noisy picture" ~40; event SNR ~30 dB, "noisy sound" ~10 dB) and documented here; other worlds may
subclass and change them (bump ``version``).

Raises ``MeasurementError`` (never returns a placeholder) for no frames, frames smaller than 3x3,
empty / non-finite / all-zero audio, or audio shorter than one 20 ms frame.
"""

from __future__ import annotations

import math

import numpy as np

from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import MinInput, Verifier
from avits_core.verifiers.synth_text import MeasurementError, frame_rms

PIC_SIGMA_HALF = 8.0
SNR_MID_DB = 15.0
SNR_SCALE_DB = 3.0
SNR_CAP_DB = 80.0


def immerkaer_sigma(video: np.ndarray) -> float:
    """Median over frames of the channel-mean Immerkaer noise std (uint8 units) of (T, H, W, 3) frames."""
    v = np.asarray(video)
    if v.ndim != 4 or v.shape[0] < 1:
        raise MeasurementError(f"video has no frames (shape {v.shape})")
    t, h, w, _ = v.shape
    if h < 3 or w < 3:
        raise MeasurementError(f"frames of {w}x{h} px are too small for a noise estimate (need >= 3x3)")
    f = v.astype(np.float32)
    # valid 3x3 convolution with [[1,-2,1],[-2,4,-2],[1,-2,1]] = outer([1,-2,1], [1,-2,1]) (separable)
    rows = f[:, :-2] - 2.0 * f[:, 1:-1] + f[:, 2:]
    conv = rows[:, :, :-2] - 2.0 * rows[:, :, 1:-1] + rows[:, :, 2:]
    per = np.abs(conv).sum(axis=(1, 2)) * (math.sqrt(math.pi / 2.0) / (6.0 * (w - 2) * (h - 2)))  # (T, 3)
    return float(np.median(per.mean(axis=1)))


def sound_snr_db(audio: np.ndarray, sample_rate: int) -> float:
    """Event-to-floor ratio in dB of frame RMS (20 ms / 10 ms hop): 20 log10(max / 20th percentile)."""
    a = np.asarray(audio, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise MeasurementError(f"audio is empty (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise MeasurementError("audio contains NaN or infinite samples")
    if float(np.max(np.abs(a))) == 0.0:
        raise MeasurementError("audio is all zeros (digital silence); its noise cannot be estimated")
    if a.size < 2 * max(1, int(round(0.01 * sample_rate))):
        raise MeasurementError(f"audio of {a.size} samples is shorter than one 20 ms frame")
    env, _ = frame_rms(a, int(sample_rate))
    peak = float(env.max())
    floor = float(np.percentile(env, 20))
    if floor <= 0.0:
        return SNR_CAP_DB
    return float(min(SNR_CAP_DB, 20.0 * math.log10(peak / floor)))


class Quality(Verifier):
    """No-reference cleanliness in [0, 1], higher is cleaner: sqrt(q_pic * q_snd) from the picture's
    Immerkaer noise std and the sound's event-to-floor SNR (see the module docstring)."""

    name = "quality"
    version = "1"
    higher_is_better = True
    value_range = (0.0, 1.0)
    #: Immerkaer's 3x3 mask needs 3x3 px; the sound SNR needs one 20 ms RMS frame.
    min_input = MinInput(frames=1, audio_seconds=0.02, sample_rate=8000, height=3, width=3,
                         modalities=("video", "audio"))

    def components(self, clip: AVClip) -> dict[str, float]:
        """The raw measurements and the two sub-scores of a clip."""
        sigma = immerkaer_sigma(clip.video)
        snr = sound_snr_db(clip.audio, clip.sample_rate)
        q_pic = 1.0 / (1.0 + (sigma / PIC_SIGMA_HALF) ** 2)
        q_snd = 1.0 / (1.0 + math.exp(-(snr - SNR_MID_DB) / SNR_SCALE_DB))
        return {"picture_sigma": sigma, "sound_snr_db": snr, "q_picture": q_pic, "q_sound": q_snd,
                "quality": math.sqrt(q_pic * q_snd)}

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        return self.components(clip)["quality"]
