"""AV-Align: do audio onsets and visual motion peaks happen together? (IoU of event sets, in [0, 1]).

The AV-Align score (Yariv et al., "Diverse and Aligned Audio-to-Video Generation via Text-to-Video
Model Adaptation", AAAI 2024): audio events are onset peaks, video events are peaks of optical-flow
motion energy; an audio event and a video event "hit" when they are at most one video frame
(1 / fps seconds) apart; the score is the intersection over union hits / (|A| + |V| - hits).

Decisions:
* Features and peak picking are those of ``avits_core.verifiers.features`` (librosa onset
  strength + onset_detect; mean Farnebäck flow magnitude + thresholded local maxima).
* Each peak is matched at most once. The matching is a maximum-cardinality one-to-one matching
  of the two sorted time lists within the tolerance, found by a two-pointer sweep (optimal for
  points on a line with a symmetric window: the earliest unmatched audio and video peaks are
  matched when close enough, otherwise the earlier of the two can never be matched and is
  dropped). So the score is in [0, 1] and symmetric in audio and video.
* Video peaks are unsmoothed local maxima of the motion series, as published, filtered by the
  height/prominence rule of ``features`` (the published code counts every local maximum, so
  sensor noise adds spurious peaks). At low frame rates the motion maxima of a bouncing object
  can flank the impact by 1-2 frames (see features, "Known limitation"), which lowers the score
  of well-synchronised clips (SynthAV, 80 clips: faithful mode 0.59-0.69 on average, audio-offset
  mode 0.0-0.43). ``clip_events(clip, smooth_frames=1.5)`` gives the smoothed variant for
  analysis; using it in the verifier would be a different metric (a new version).
* Only events inside the time both tracks cover (min of the two durations) are counted.
* Silent audio or a static video raises FlatSignalError; so does a clip in which neither track
  has any event ("no audio or video events detected"). Verifier.score records these as error
  rows, never as a silent 0.0. When only one track has events the score is a genuine 0.0 (every
  event is unmatched).

Protocol ``javisbench`` (``AVAlign(protocol="javisbench")``): reproduces the AV-Align of JavisBench's
evaluator (JavisDiT ``eval/javisbench/src/av_align.py``) on the same arrays, quirks included:
* audio peaks: ``librosa.onset.onset_strength`` and ``onset_detect`` with librosa's defaults
  (n_fft 2048, hop 512, 128 mels, constant padding) on the whole audio at its own sample rate,
  times ``frames_to_time(hop=512)``; no strength filter;
* video: mean Farnebäck flow magnitude (same settings as ours) between consecutive grey frames at
  full resolution (no downscaling); the series has one value per frame, its first value repeated
  (flow(0,1), flow(0,1), flow(1,2), ...); every STRICT local maximum at index i is a peak at i / fps
  (no height or prominence rule, no mid-interval time stamp);
* matching: an audio peak is a hit when some video peak lies strictly within one frame period
  (|a - v| < 1/fps); a video peak may serve several audio peaks; score = hits / (|A| + |V| - hits
  + 1e-6). Because several audio peaks may hit one video peak, the value can EXCEED 1 (7 audio
  onsets on 3 motion peaks, 6 hits: 6 / 4 = 1.5); it is >= 0 with no upper bound. A clip with no
  peaks at all scores 0.0 (the evaluator's own value, not a failure; ``score_details`` records the peak counts so such rows can be found);
* no overlap restriction: peaks over the whole of each track count.
* not reproduced on purpose: clips below ``min_input`` (fewer than 6 frames, under 0.5 s, smaller
  than 16x16 px, audio under 8 kHz) and silent audio are error rows in both protocols, where the
  evaluator returns 0.0 (silence: no onsets) or a number from a handful of frames.
The evaluator reads frames with OpenCV (BGR, converted to grey with BGR2GRAY); on RGB frames we use
RGB2GRAY, which gives the same grey image. ``avits evaluate --protocol javisbench`` also decodes the
video with OpenCV and reads a sibling ``.wav`` when present, as the evaluator does.
"""

from __future__ import annotations

import numpy as np

from avits_core.errors import ConfigError
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import MinInput, Verifier
from avits_core.verifiers.features import (
    FlatSignalError,
    audio_onset_envelope,
    audio_peaks,
    check_motion,
    motion_energy,
    overlap_duration,
    shared_feature,
    sync_input_problem,
    video_peaks,
)


def count_hits(a: np.ndarray, v: np.ndarray, tol: float) -> int:
    """Size of a maximum one-to-one matching between times ``a`` and ``v`` with |a_i - v_j| <= tol."""
    a = np.sort(np.asarray(a, dtype=np.float64))
    v = np.sort(np.asarray(v, dtype=np.float64))
    i = j = hits = 0
    while i < a.shape[0] and j < v.shape[0]:
        d = a[i] - v[j]
        if abs(d) <= tol:
            hits += 1
            i += 1
            j += 1
        elif d < 0:
            i += 1
        else:
            j += 1
    return hits


def av_align_score(a: np.ndarray, v: np.ndarray, tol: float) -> float:
    """hits / (|a| + |v| - hits) in [0, 1]; raises FlatSignalError when both lists are empty."""
    n_a, n_v = int(np.size(a)), int(np.size(v))
    if n_a + n_v == 0:
        raise FlatSignalError("no audio or video events detected")
    hits = count_hits(a, v, tol)
    return hits / float(n_a + n_v - hits)


def clip_events(clip: AVClip, smooth_frames: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(audio peak times, video peak times) in seconds, restricted to the time both tracks cover."""
    env = audio_onset_envelope(clip.audio, clip.sample_rate, clip.fps)
    motion = motion_energy(clip.video, clip.fps)
    check_motion(motion)
    a = audio_peaks(env, clip.sample_rate, clip.fps)
    v = video_peaks(motion, smooth_frames=smooth_frames)
    end = overlap_duration(clip)
    return a[a <= end], v[v <= end]


PROTOCOLS = ("avits", "javisbench")


def javisbench_audio_peaks(audio: np.ndarray, sr: int) -> np.ndarray:
    """Onset times (s) as JavisBench's evaluator finds them: librosa defaults on the whole track."""
    import librosa

    y = np.asarray(audio, dtype=np.float32)
    env = librosa.onset.onset_strength(y=y, sr=sr)
    frames = librosa.onset.onset_detect(onset_envelope=env, sr=sr)
    return np.asarray(librosa.frames_to_time(frames, sr=sr), dtype=np.float64)


def javisbench_flow_series(video: np.ndarray) -> np.ndarray:
    """Mean Farnebäck flow magnitude per frame, full resolution, first value repeated (T values)."""
    import cv2

    v = np.asarray(video)
    if v.shape[0] < 2:
        raise ValueError(f"AV-Align (javisbench) needs at least 2 frames, got {v.shape[0]}")
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in v]

    def flow(a: np.ndarray, b: np.ndarray) -> float:
        f = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        return float(cv2.mean(cv2.magnitude(f[..., 0], f[..., 1]))[0])

    first = flow(grey[0], grey[1])
    return np.asarray([first] + [flow(grey[i - 1], grey[i]) for i in range(1, len(grey))], dtype=np.float64)


def strict_local_maxima_times(series: np.ndarray, fps: float) -> np.ndarray:
    """Times i / fps of every i with series[i-1] < series[i] > series[i+1] (ends excluded)."""
    s = np.asarray(series, dtype=np.float64)
    return np.asarray([i / fps for i in range(1, s.shape[0] - 1) if s[i - 1] < s[i] > s[i + 1]],
                      dtype=np.float64)


def javisbench_iou(audio_peaks: np.ndarray, video_peaks: np.ndarray, fps: float) -> tuple[float, int]:
    """(score, hits): an audio peak hits when a video peak lies strictly within 1/fps of it (a video
    peak may serve several); score = hits / (|A| + |V| - hits + 1e-6)."""
    hits = 0
    for a in audio_peaks:
        for v in video_peaks:
            if v - 1 / fps < a < v + 1 / fps:
                hits += 1
                break
    return hits / (len(audio_peaks) + len(video_peaks) - hits + 1e-6), hits


def javisbench_av_align(clip: AVClip) -> tuple[float, dict[str, float]]:
    """AV-Align of one clip in the JavisBench protocol (see the module docstring), with details.

    The two peak lists go through :func:`~avits_core.verifiers.features.shared_feature` (keyed by the
    samples' / frames' content and the sample rate / fps), so asking again for the same clip (the
    details after the score) reuses them."""
    audio = np.asarray(clip.audio, dtype=np.float32)
    sr, fps = int(clip.sample_rate), float(clip.fps)
    a = shared_feature("javisbench_onsets", (audio,), (sr,), lambda: javisbench_audio_peaks(audio, sr))
    v = shared_feature("javisbench_motion_peaks", (clip.video,), (fps,),
                       lambda: strict_local_maxima_times(javisbench_flow_series(clip.video), fps))
    score, hits = javisbench_iou(a, v, fps)
    return score, {"n_audio_peaks": int(a.size), "n_video_peaks": int(v.size), "hits": int(hits)}


class AVAlign(Verifier):
    """AV-Align IoU of audio onset peaks and optical-flow motion peaks, tolerance +-1 video frame.

    Input: the clip's video and audio (the prompt is not used). Output in [0, 1], higher is better;
    1 when every audio event has a video event within one frame and vice versa.
    """

    name = "av_align"
    version = "1"
    higher_is_better = True
    value_range = (0.0, 1.0)
    needs_weights = False
    #: A video peak is a strict local maximum of the motion series (the ends excluded), and
    #: librosa's peak picking averages 100 ms either side of an onset: below 6 frames and 0.5 s of
    #: overlapping audio and video no event can be found, and 0.0 would mean "too short", not "out
    #: of sync" (both protocols). 8 kHz: the lowest rate the onset envelope is tested at. 16x16 px:
    #: one Farnebäck averaging window (15 px); smaller pictures give flow of the window's padding.
    min_input = MinInput(frames=6, video_seconds=0.5, audio_seconds=0.5, sample_rate=8000, height=16, width=16,
                         modalities=("video", "audio"))

    def check_input(self, clip: AVClip) -> str | None:
        """min_input, the time both tracks cover (>= 0.5 s), and digital silence."""
        return super().check_input(clip) or sync_input_problem(self.name, clip, self.min_input.video_seconds)

    identity_params = ("protocol",)

    def __init__(self, protocol: str = "avits") -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"av_align: protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.protocol = protocol

    def score_details(self, clips, prompts):  # type: ignore[override]
        """javisbench protocol: per clip the audio/video peak counts and hits behind the score, computed
        from the clip itself (its peaks are shared features, found again after the score), never from
        state of the instance: one instance may score in several threads at once."""
        if self.protocol != "javisbench":
            return None
        return [javisbench_av_align(c)[1] for c in clips]

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        if self.protocol == "javisbench":
            return javisbench_av_align(clip)[0]
        a, v = clip_events(clip)
        # a hair of slack so that a peak exactly one frame away counts despite float rounding
        return av_align_score(a, v, tol=1.0 / float(clip.fps) + 1e-9)
