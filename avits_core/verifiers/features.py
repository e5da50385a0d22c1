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
    full resolution; magnitudes are in pixels of the analysed size.
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

Computed once per clip
    ``motion_energy`` and ``audio_onset_envelope`` go through :func:`shared_feature`: a process-wide
    :class:`FeatureCache` keyed by the content of the input arrays (blake2b) and every parameter, with
    single flight (a second thread asking for a feature in flight waits for it rather than computing it
    again). So av_align and av_sync on one clip, also when their scoring tasks run in parallel threads,
    compute the optical flow and the onset envelope once. Other verifiers use ``shared_feature`` for
    their own reusable features (e.g. synth_text's tracked object). Inside a computation BLAS and
    OpenCV run single-threaded (:func:`numeric_threads`).

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
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from avits_core.cache import SingleFlightCache
from avits_core.errors import FlatSignalError  # defined there, re-exported here
from avits_core.media import AVClip
from avits_core.threads import NUMERIC_THREADS, numeric_threads  # noqa: F401 (the scoped limit lives there)

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

    Raises FlatSignalError for silent audio. Shared through :func:`shared_feature` (keyed by the
    samples' content, sr, fps and oversample): computed once per clip for every verifier.
    """
    a = np.asarray(audio, dtype=np.float32)
    check_audio(a)
    return shared_feature("onset", (a,), (int(sr), float(fps), int(oversample)),
                          lambda: _onset_envelope(a, sr, fps, oversample))


def _onset_envelope(a: np.ndarray, sr: int, fps: float, oversample: int) -> Series:
    import librosa

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


class FeatureCache(SingleFlightCache):
    """A process-wide, thread-safe memo of per-clip features, computed once per key
    (:class:`avits_core.cache.SingleFlightCache`: single flight, failures not stored, LRU bound).

    ``get_or_compute(key, compute)`` returns the stored value for ``key``, or runs ``compute()`` once
    (BLAS and OpenCV limited to one thread, :func:`numeric_threads`), makes the arrays of the result
    read-only and stores it. Bounded to ``maxsize`` entries; the features kept here are small (a few
    hundred floats per clip), so 1,024 entries cost well under 10 MB.

    ``stats()`` counts, per feature kind (``key[0]``), hits, computations (misses), waits (a thread that
    found the key in flight), failures and evictions: after scoring a set of clips with av_align and
    av_sync, ``computed`` of the motion feature equals the number of distinct clips.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        super().__init__(max_entries=maxsize, group=_feature_kind, deferrable=True)

    @property
    def maxsize(self) -> int | None:
        """The entry bound: another name for ``max_entries`` (one value, not a copy that could drift)."""
        return self.max_entries

    @maxsize.setter
    def maxsize(self, n: int | None) -> None:
        self.max_entries = n

    def _compute(self, key: Any, compute: Callable[[], Any]) -> Any:
        with numeric_threads():
            value = compute()
        _freeze(value)
        return value


def _feature_kind(key: Any) -> str:
    return str(key[0]) if isinstance(key, tuple) and key else ""


def _freeze(value: Any) -> None:
    """Make the arrays of a stored feature read-only (shared between verifiers and threads)."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, Series):
        value.times.setflags(write=False)
        value.values.setflags(write=False)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _freeze(v)


def array_digest(a: np.ndarray) -> tuple:
    """Content key of an array: (blake2b-128 of its bytes, shape, dtype). ~1 ms per MB.

    A read-only array that owns its memory (what :mod:`avits_core.clipcache` hands out) cannot
    change, so its digest is remembered by identity (while the array lives): a 140 MB LTX-2 clip is
    hashed once, not once per verifier and feature.
    """
    frozen = isinstance(a, np.ndarray) and not a.flags.writeable and a.base is None
    if frozen:
        with _digest_lock:
            hit = _digests.get(id(a))
        if hit is not None and hit[0]() is a:
            return hit[1]
    c = np.ascontiguousarray(a)
    d = (hashlib.blake2b(c.data, digest_size=16).hexdigest(), c.shape, str(c.dtype))
    if frozen:
        key = id(a)

        def forget(_ref: Any, key: int = key) -> None:
            with _digest_lock:
                entry = _digests.get(key)
                if entry is not None and entry[0]() is None:
                    del _digests[key]

        with _digest_lock:
            _digests[key] = (weakref.ref(a, forget), d)
    return d


_digest_lock = threading.Lock()
_digests: dict[int, tuple[Any, tuple]] = {}


#: The process-wide feature cache every verifier shares.
FEATURES = FeatureCache()
_MOTION_CACHE = FEATURES  # old name (tests clear it)


def shared_feature(kind: str, arrays: Sequence[np.ndarray], params: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()`` memoised in :data:`FEATURES` under (kind, content of ``arrays``, ``params``).

    For any feature that several verifiers need from the same clip (motion energy, onset envelope,
    a tracked object...): the first caller computes it, concurrent callers wait for it, later callers
    reuse it. ``params`` must hold everything else the result depends on. The value's arrays become
    read-only.
    """
    key = (kind, *(array_digest(a) for a in arrays), *params)
    return FEATURES.get_or_compute(key, compute)


def motion_energy(video: np.ndarray, fps: float) -> Series:
    """Mean Farnebäck optical-flow magnitude (px/frame, >= 0) between consecutive frames of (T,H,W,3) uint8 RGB.

    T - 1 samples, sample i at (i + 0.5) / fps. Raises FlatSignalError for fewer than 3 frames.
    Results are shared through :func:`shared_feature` (keyed by the frames' content and fps), so
    av_align and av_sync scoring the same clip, also from two threads at once, compute the optical
    flow once.
    """
    v = np.asarray(video)
    if v.ndim != 4 or v.shape[0] < 3:
        raise FlatSignalError(f"need at least 3 video frames to measure motion, got shape {v.shape}")
    return shared_feature("motion", (v,), (float(fps), MOTION_MAX_SIDE), lambda: _motion_energy(v, fps))


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


#: Mean absolute difference (0..255 grey levels) between consecutive frames below which a picture is static.
STATIC_PIXEL_DIFF = 0.25


def sync_input_problem(name: str, clip: AVClip, min_s: float) -> str | None:
    """Why a sync verifier (av_align, av_sync) cannot measure a clip beyond its sizes: audio and video
    overlap for less than ``min_s`` seconds, the picture never changes, or the audio is digital silence.
    None when it can.

    A static picture is judged on the pixels (every pair of consecutive frames differs by less than
    ``STATIC_PIXEL_DIFF`` grey levels on average), not on the optical flow: Farnebäck reports a small
    constant flow (~0.005 px/frame) on some identical textured frames, which passed the flow-based
    test and gave a silent 0.0. That largest step is a shared feature: av_align and av_sync checking the
    same clip compute it once."""
    both = overlap_duration(clip)
    if both + 1e-9 < min_s:
        return f"input too small for {name}: audio and video overlap for {both:.3f} s < {min_s:g} s"
    v = clip.video
    if v.shape[0] >= 2:
        biggest = shared_feature("max_frame_step", (v,), (), lambda: _max_frame_step(v))
        if biggest < STATIC_PIXEL_DIFF:
            return (f"{name}: video is static (consecutive frames differ by at most {biggest:.3f} "
                    f"grey levels on average): no motion to align")
    try:
        check_audio(clip.audio)
    except FlatSignalError as exc:
        return f"{name}: {exc}"
    return None


def _max_frame_step(v: np.ndarray) -> float:
    """Largest mean absolute difference (grey levels) between two consecutive frames of (T>=2, H, W, 3) uint8."""
    step = np.abs(np.diff(v.astype(np.int16), axis=0)).reshape(v.shape[0] - 1, -1).mean(axis=1)
    return float(step.max())
