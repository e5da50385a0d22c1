"""SynthText: does the rendered clip show what the prompt asks for? (SynthAV prompts)

Input: an AVClip (uint8 frames, mono float audio) and its Prompt. The prompt is parsed with the
SynthAV grammar (``avits_core.generators.synth_world.parse_prompt``); the clip is measured from its
pixels and samples only (never latents, never ``meta["truth"]``).

Output: the fraction in [0, 1] of the measurable attributes the prompt names that the clip shows.
Measurable attributes and how they are measured:

    colour  object segmentation (below); the median RGB of the object's interior pixels -> nearest
            palette colour (Euclidean RGB)
    shape   per frame, the ratio of the object's extents along the two diagonals to its extents
            along the two axes (each extent = 98th - 2nd percentile of the pixel coordinates
            projected on that direction, so stray noise pixels barely move it); the 20 %-trimmed
            mean over frames > 1.062 -> "cube", else "ball". A disc gives 1.0, the cube mode ~1.15,
            and 1.062 is the ratio of the superellipse at the world's truth boundary (p = 2.85,
            bounding-box fill 0.87). (Decision: the bounding-box fill itself is also reported,
            ``fill``, but a few noise pixels attached to a small cube inflate its box, so the fill
            of noisy small cubes overlapped that of balls on rendered clips; the extent ratio kept a
            clear gap: cubes >= 1.09, balls <= 1.04 over 3600 rendered clips of every size, clean
            and noisy.)
    size    per frame sqrt(bbox width * bbox height) / 2 (unchanged by the area-preserving squash),
            median over frames, scaled to a 64-px frame -> nearest of small 5 / medium 8 / large 11 px
    count   the object centroid's vertical trajectory: peaks of its row coordinate (lowest points)
            found by scipy.signal.find_peaks with prominence >= max(1.5 px, 0.25 * range) that lie in
            the lower half of the range; the number of such minima of height = bounces
    pitch   sound events (below); the event power spectrum minus the noise spectrum; its peak in
            150..1500 Hz (parabolic refinement) -> nearest of 220 / 440 / 880 Hz in log frequency
    timbre  temporal envelope and harmonics: the events' median amplitude decay constant (see
            ``event_decay_s``) < 25 ms -> "click" (a short burst); otherwise, on the event spectrum,
            the odd-harmonic ratio (E(3 f0) + E(5 f0)) / E(f0), each E summed within max(35 Hz, 2 %)
            of the harmonic, > 0.04 -> "buzz" (square-ish; a square wave gives 1/9 + 1/25 = 0.15),
            else "beep" (sine)

Background (rain / wind / hum / silence) is rendered but NOT measured here (decision): the
"noisy sound" mode's broadband hiss masks the quieter textures by design, so measuring it would
count sound noise a second time; sound noise is what the ``quality`` verifier measures. A prompt
that names only a background (or nothing) has no measurable attribute: scoring raises.

Object segmentation: 3x3 box blur of each frame; background colour = the frame's per-channel
median; coarse mask = blurred pixels farther than 60 (RGB Euclidean) from the background; object
colour = per-channel median of the coarse pixels in the upper half of that distance; fine mask =
projection of each blurred pixel onto the background->object colour line > 0.5; per frame the
largest 8-connected component (>= 4 px) is the object. A clip in which no object is found in any
frame shows none of colour/shape/size/count (they count as not shown, not as an error).

Sound events: frame RMS (20 ms window, 10 ms hop); floor = 20th percentile, peak = maximum; an
event starts where the RMS rises above floor + 0.3 (peak - floor), provided peak > 1.3 floor (else
there are no events and pitch/timbre count as not shown). Each event contributes the periodogram of
a 64 ms Hann window starting 16 ms before its onset; the noise spectrum is the per-bin median of a
64 ms STFT over the whole clip divided by ln 2 (the median of an exponential variable).

Raises ``MeasurementError`` when the clip cannot be measured at all: no frames, frames smaller than
8x8, fewer than 3 frames when a count is asked, empty / non-finite / all-zero audio when pitch or
timbre is asked, or a prompt naming no measurable attribute.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from avits_core.errors import MeasurementError  # defined there, re-exported here
from avits_core.generators.synth_world import (
    PITCHES,
    SIZES,
    nearest_colour,
    parse_prompt,
)
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import MinInput, Verifier

log = logging.getLogger(__name__)

MEASURABLE: tuple[str, ...] = ("colour", "shape", "size", "count", "pitch", "timbre")
VIDEO_ATTRS = ("colour", "shape", "size", "count")
AUDIO_ATTRS = ("pitch", "timbre")
EVENT_MIN_RATIO = 1.3  # an event's frame RMS must exceed 1.3 x the noise floor (~2.3 dB)
CLICK_DECAY_S = 0.025  # decay time constant below which an event is a click
CUBE_RATIO = 1.062  # diagonal/axis extent ratio of the superellipse with fill FILL_THRESHOLD (p = 2.85)
BUZZ_ODD_RATIO = 0.04  # (E(3 f0) + E(5 f0)) / E(f0) above which a tonal event is a buzz


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The verifier
# --------------------------------------------------------------------------------------------


def requested_attributes(prompt: Prompt) -> dict[str, Any]:
    """The measurable attributes the prompt names; raises MeasurementError when there are none."""
    named = parse_prompt(prompt.text)
    req = {k: v for k, v in named.items() if k in MEASURABLE}
    if not req:
        raise MeasurementError(
            f"prompt {prompt.prompt_id!r} names no measurable SynthAV attribute "
            f"({', '.join(MEASURABLE)}): {prompt.text!r}"
        )
    return req


class SynthText(Verifier):
    """Fraction in [0, 1] of the prompt's named attributes (colour, shape, size, count, pitch,
    timbre) that the clip's pixels and sound show; higher is better. See the module docstring."""

    name = "synth_text"
    version = "1"
    higher_is_better = True
    value_range = (0.0, 1.0)
    #: The object tracker needs 8x8 px, the pitch/timbre analysis 0.1 s of sound; counting bounces
    #: needs 3 frames (checked when the prompt names a count).
    min_input = MinInput(frames=1, audio_seconds=0.1, sample_rate=8000, height=8, width=8,
                         modalities=("video", "audio", "text"))

    def measure(self, clip: AVClip, attrs: tuple[str, ...] = MEASURABLE) -> dict[str, Any]:
        """Measured attribute values of a clip (only the channels ``attrs`` needs are analysed)."""
        out: dict[str, Any] = {}
        if any(a in VIDEO_ATTRS for a in attrs):
            out.update(measure_video(clip, need_count="count" in attrs))
        if any(a in AUDIO_ATTRS for a in attrs):
            out.update(measure_audio(clip))
        return out

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        req = requested_attributes(prompt)
        got = self.measure(clip, tuple(req))
        hits = sum(1 for k, v in req.items() if got.get(k) == v)
        return hits / len(req)
