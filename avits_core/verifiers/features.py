"""Audio and video event features shared by the synchronisation verifiers (av_align, av_sync).

Audio: onset strength
    ``audio_onset_envelope`` is librosa's spectral-flux onset strength
    (``librosa.onset.onset_strength``: positive first difference of a log-power mel spectrogram,
    averaged over mel bands, centred frames, librosa's own framing compensation) with
      n_fft   = the power of two nearest 32 ms (512 at 16 kHz, 1024 at 44.1/48 kHz), so an onset
                is located to within about +-16 ms;
      hop     = round(sr / (fps * oversample)), oversample = 4: four envelope frames per video
                frame (333 samples = 20.8 ms at 16 kHz and 12 fps), so every video frame interval
                holds a whole number of envelope frames up to rounding; the envelope's times are
                exact (frame k is at k * hop / sr seconds) and later steps use those times;
      n_mels  = 40 (enough bands for a 512-point FFT without empty filters), fmax = sr / 2;
      pad_mode = "reflect" for the centred first/last frames (zero padding would make the start
                of any clip with background noise look like an onset).
    ``audio_peaks`` picks onsets with ``librosa.onset.onset_detect`` on that envelope, with
    librosa's default peak-picking windows (30 ms pre-max, 100 ms pre/post average, 30 ms wait,
    delta 0.07 of the min-max normalised envelope), and keeps only peaks whose strength is at
    least max(``min_rel`` * max(env), median(env) + 3 * 1.4826 * MAD(env)) (``min_rel`` = 0.2):
    sound events are sparse, so a peak must stand 3 robust standard deviations above the typical
    level; this drops the fluctuations of a noisy background (rain, hiss).

Video: motion energy
    ``motion_energy`` is the mean magnitude (pixels per frame) of dense Farnebäck optical flow
    (``cv2.calcOpticalFlowFarneback`` on grayscale frames; pyramid scale 0.5, 3 levels, window 15,
    3 iterations, poly_n 5, poly_sigma 1.2: OpenCV's reference settings, also used by the AV-Align
    authors) between consecutive frames. Sample i measures the motion between frames i and i+1
    and is time-stamped at the middle of that interval, (i + 0.5) / fps: a frame is a snapshot at
    i / fps, so the change happened between the two. Frames whose longer side exceeds
    ``MOTION_MAX_SIDE`` (128 px) are first downscaled (area interpolation): Farnebäck costs
    ~0.7 ms per 64x64 frame pair and grows with the pixel count, and event timing does not need
    full resolution; magnitudes are in pixels of the analysed size. The series is memoised by a
    hash of the frames (a small LRU), so av_align and av_sync on one clip pay for the flow once.
    ``video_peaks`` returns the times of strict local maxima of that series
    (``scipy.signal.find_peaks``; the first and last samples cannot be peaks) with height at
    least ``min_rel`` (0.2) * max and prominence at least ``min_prominence`` (0.1) * (max - min).
    Prominence rather than a median rule, because motion is often continuous (a bouncing object
    moves all the time): a peak must stand out from its neighbourhood, not from the median.
    Optionally (``smooth_frames`` > 0) the series is first smoothed with a Gaussian of that many
    frames (standard deviation).

Known limitation (measured with tests/avclips.py ``bounce_clip``)
    Farnebäck follows an object only while its displacement per frame stays within about 1.5-2
    times its size (radius). A 7-10 px radius ball hitting the floor at 12 px/frame gives one
    motion peak at each impact (av_align 1.0 in sync and 0.0 with the audio 0.25 s off; av_sync
    within a few ms). A 4 px ball at 17 px/frame is not tracked: the measured flow is largest in
    mid-flight and dips at both the apex and the impact, and both verifiers fail on it (av_sync
    errors ~0.2 s). Scenes whose events these verifiers must see need fast objects that are big
    enough, or slow enough, for the frame rate.

Flat signals
    Audio whose peak amplitude is below ``SILENCE_PEAK`` (1e-4, -80 dBFS) is silent, and a video
    whose largest motion is below ``STATIC_MOTION`` (1e-3 px/frame) is static: both raise
    ``FlatSignalError`` (an AvitsError and ValueError), which Verifier.score records as an error
    row. Nothing here returns a placeholder value.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from avits_core.errors import FlatSignalError  # defined there, re-exported here
from avits_core.media import AVClip

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-4
STATIC_MOTION = 1e-3
ONSET_OVERSAMPLE = 4
PEAK_MIN_REL = 0.2
PEAK_MIN_PROMINENCE = 0.1
MOTION_MAX_SIDE = 128
_MAD_K = 3.0 * 1.4826

_FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


@dataclass(frozen=True)
class Series:
    """A sampled signal: ``values[k]`` at ``times[k]`` seconds (both float64, same length)."""

    times: np.ndarray
    values: np.ndarray


def peak_height(values: np.ndarray, min_rel: float = PEAK_MIN_REL) -> float:
    """Smallest value a peak of ``values`` must reach: max(min_rel * max, median + 3 * 1.4826 * MAD)."""
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med)))
    return max(min_rel * float(np.max(values)), med + _MAD_K * mad)


def onset_params(sr: int, fps: float, oversample: int = ONSET_OVERSAMPLE) -> tuple[int, int]:
    """(n_fft, hop_length) used for a clip at ``sr`` Hz and ``fps`` frames per second (see module doc)."""
    n_fft = int(2 ** round(math.log2(0.032 * sr)))
    hop = max(1, int(round(sr / (fps * oversample))))
    return n_fft, hop


def check_audio(audio: np.ndarray) -> None:
    """Raise FlatSignalError when the audio is empty, non-finite or silent (peak < SILENCE_PEAK)."""
    if audio.size == 0:
        raise FlatSignalError("audio is empty")
    peak = float(np.max(np.abs(audio)))
    if not math.isfinite(peak):
        raise FlatSignalError("audio contains NaN or infinite samples")
    if peak < SILENCE_PEAK:
        raise FlatSignalError(f"audio is silent (peak amplitude {peak:.2e} < {SILENCE_PEAK:g})")


def audio_onset_envelope(audio: np.ndarray, sr: int, fps: float,
                         oversample: int = ONSET_OVERSAMPLE) -> Series:
    """librosa onset strength of mono ``audio`` (>= 0, arbitrary units) at ``fps * oversample`` Hz.

    Raises FlatSignalError for silent audio.
    """
    import librosa

    a = np.asarray(audio, dtype=np.float32)
    check_audio(a)
    n_fft, hop = onset_params(sr, fps, oversample)
    if a.shape[0] < n_fft:
        a = np.pad(a, (0, n_fft - a.shape[0]))
    env = librosa.onset.onset_strength(
        y=a, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=40, fmax=sr / 2.0, center=True, pad_mode="reflect"
    )
    env = np.asarray(env, dtype=np.float64)
    times = np.arange(env.shape[0], dtype=np.float64) * hop / float(sr)
    return Series(times=times, values=env)


def audio_peaks(envelope: Series, sr: int, fps: float, oversample: int = ONSET_OVERSAMPLE,
                min_rel: float = PEAK_MIN_REL) -> np.ndarray:
    """Times (s, ascending) of onsets picked on ``envelope`` (from audio_onset_envelope with the same sr, fps)."""
    import librosa

    env = envelope.values
    top = float(env.max()) if env.size else 0.0
    if top <= 0.0:
        return np.empty(0, dtype=np.float64)
    _, hop = onset_params(sr, fps, oversample)
    idx = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=hop, units="frames",
                                     normalize=True, backtrack=False)
    idx = np.asarray(idx, dtype=np.int64)
    idx = idx[env[idx] >= peak_height(env, min_rel)]
    return envelope.times[idx]


class _MotionCache:
    """A small thread-safe LRU of motion series keyed by (blake2b of the frames, shape, fps).

    Hashing a 24-frame 64x64 clip takes ~0.1 ms against ~15 ms of optical flow. Series are tiny
    (T floats), so ``maxsize`` entries cost nothing; arrays are returned read-only.
    """

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[tuple, Series] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(video: np.ndarray, fps: float) -> tuple:
        digest = hashlib.blake2b(np.ascontiguousarray(video).data, digest_size=16).hexdigest()
        return (digest, video.shape, str(video.dtype), float(fps), MOTION_MAX_SIDE)

    def get(self, key: tuple) -> Series | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
            return hit

    def put(self, key: tuple, value: Series) -> None:
        value.times.setflags(write=False)
        value.values.setflags(write=False)
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_MOTION_CACHE = _MotionCache()


def motion_energy(video: np.ndarray, fps: float) -> Series:
    """Mean Farnebäck optical-flow magnitude (px/frame, >= 0) between consecutive frames of (T,H,W,3) uint8 RGB.

    T - 1 samples, sample i at (i + 0.5) / fps. Raises FlatSignalError for fewer than 3 frames.
    Results are memoised by a hash of the frames (see ``_MotionCache``), so av_align and av_sync
    scoring the same clip compute the optical flow once.
    """
    v = np.asarray(video)
    if v.ndim != 4 or v.shape[0] < 3:
        raise FlatSignalError(f"need at least 3 video frames to measure motion, got shape {v.shape}")
    key = _MOTION_CACHE.key(v, fps)
    hit = _MOTION_CACHE.get(key)
    if hit is None:
        hit = _motion_energy(v, fps)
        _MOTION_CACHE.put(key, hit)
    return hit


def _motion_energy(v: np.ndarray, fps: float) -> Series:
    import cv2

    h, w = v.shape[1:3]
    scale = MOTION_MAX_SIDE / float(max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale))) if scale < 1.0 else None
    gray = []
    for f in v:
        g = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY)
        gray.append(cv2.resize(g, size, interpolation=cv2.INTER_AREA) if size else g)
    values = np.empty(len(gray) - 1, dtype=np.float64)
    for i in range(len(gray) - 1):
        flow = cv2.calcOpticalFlowFarneback(gray[i], gray[i + 1], None, **_FARNEBACK)
        values[i] = float(np.mean(np.hypot(flow[..., 0], flow[..., 1])))
    times = (np.arange(values.shape[0], dtype=np.float64) + 0.5) / float(fps)
    return Series(times=times, values=values)


def check_motion(motion: Series) -> None:
    """Raise FlatSignalError when the video is static (largest motion < STATIC_MOTION px/frame)."""
    top = float(motion.values.max()) if motion.values.size else 0.0
    if not math.isfinite(top):
        raise FlatSignalError("optical flow is not finite")
    if top < STATIC_MOTION:
        raise FlatSignalError(f"video is static (largest mean optical flow {top:.2e} px/frame)")


def video_peaks(motion: Series, min_rel: float = PEAK_MIN_REL, min_prominence: float = PEAK_MIN_PROMINENCE,
                smooth_frames: float = 0.0) -> np.ndarray:
    """Times (s, ascending) of motion-energy peaks (local maxima passing the height and prominence rule)."""
    from scipy.signal import find_peaks

    m = np.asarray(motion.values, dtype=np.float64)
    if m.size < 3:
        return np.empty(0, dtype=np.float64)
    if smooth_frames > 0:
        m = smooth(m, smooth_frames)
    span = float(m.max() - m.min())
    if span <= 0.0:
        return np.empty(0, dtype=np.float64)
    idx, _ = find_peaks(m, height=min_rel * float(m.max()), prominence=min_prominence * span)
    return motion.times[idx]


def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing with standard deviation ``sigma`` samples (edges: nearest value); identity for sigma <= 0."""
    if sigma <= 0:
        return np.asarray(values, dtype=np.float64)
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.asarray(values, dtype=np.float64), float(sigma), mode="nearest")


def overlap_duration(clip: AVClip) -> float:
    """Seconds covered by both tracks: min(video duration, audio duration)."""
    return min(clip.duration, clip.audio_duration)
