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
"""

from __future__ import annotations

import numpy as np

from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import Verifier
from avits_core.verifiers.features import (
    FlatSignalError,
    audio_onset_envelope,
    audio_peaks,
    check_motion,
    motion_energy,
    overlap_duration,
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

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        a, v = clip_events(clip)
        # a hair of slack so that a peak exactly one frame away counts despite float rounding
        return av_align_score(a, v, tol=1.0 / float(clip.fps) + 1e-9)
