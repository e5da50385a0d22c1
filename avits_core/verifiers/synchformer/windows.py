"""DeSync policies: which stretch of a clip Synchformer sees, how it is cut into segments, and which
groups of 14 segments (windows) the sync head scores. Pure integer arithmetic, no torch.

Common to both policies (Synchformer's input layout): video at 25 fps cut into segments of 16 frames
with a stride of 8 (0.64 s / 0.32 s), ``(frames - 16) // 8 + 1`` of them; audio at 16 kHz cut into
segments of 10,240 samples with a stride of 5,120 (the same 0.64 s / 0.32 s). The sync head reads
exactly 14 video and 14 audio segments (4.8 s); a window is the list of 14 segment indices it reads.
DeSync of a clip is the mean over its windows of |predicted offset|.

``av_benchmark`` (hkchengrex/av-benchmark, the MMAudio evaluation)
    The evaluated duration L is ``max_length_s`` (av-benchmark's ``--audio_length``); the clip must
    hold at least L seconds of video (``int(25.0 * L)`` frames at 25 fps) and of audio
    (``int(16000 * L)`` samples), else it is an error ("too short"), and it is cut to exactly that.
    ``max_length_s=None`` (our default) evaluates the whole clip: L is the shorter of the two tracks,
    i.e. ``min(frames, samples // 640)`` frames and 640 samples per frame. Either way it needs
    14 segments (4.8 s). Two windows: the first 14 and the last 14 segments of each track (they are
    the same window for a 4.8 s clip, which then counts twice, as upstream).

``javisbench`` (JavisDiT ``eval/javisbench``, the JavisBench DeSync)
    Video and audio are cut, or ZERO-PADDED, to ``max_length_s`` (default 4.0 s, the published
    recipe's ``--max_audio_len_s``; the evaluator's own fallback is 8.0): ``int(25.0 * L)`` frames
    (padded frames are black, i.e. -1 after normalisation) and ``int(16000 * L)`` samples. The S
    segments are split into consecutive windows of 14; a first window shorter than 14 (S < 14, e.g.
    11 segments for 4 s) has its segment features tiled (repeated in order) up to 14; a short last
    window is replaced by the last 14 segments. Padding lets any clip be scored; we still require
    one segment (0.64 s) of real video and audio, since a clip with less has nothing to measure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

POLICIES = ("av_benchmark", "javisbench")
SYNC_FPS = 25.0
SYNC_SR = 16000
SEG_FRAMES = 16
SEG_FRAME_STEP = 8
SEG_SAMPLES = 10240
SEG_SAMPLE_STEP = 5120
SAMPLES_PER_FRAME = SYNC_SR // int(SYNC_FPS)  # 640
WINDOW_SEGMENTS = 14
#: Seconds the sync head reads in one window: 14 segments of 0.64 s with stride 0.32 s.
WINDOW_SECONDS = ((WINDOW_SEGMENTS - 1) * SEG_FRAME_STEP + SEG_FRAMES) / SYNC_FPS  # 4.8
SEGMENT_SECONDS = SEG_FRAMES / SYNC_FPS  # 0.64
DEFAULT_MAX_LENGTH = {"av_benchmark": None, "javisbench": 4.0}


class ClipTooShortError(ValueError):
    """The clip holds less than the chosen policy needs (the message names policy and amounts)."""


def video_segments(n_frames: int) -> int:
    """Number of 16-frame segments (stride 8) in ``n_frames`` frames at 25 fps."""
    return (n_frames - SEG_FRAMES) // SEG_FRAME_STEP + 1 if n_frames >= SEG_FRAMES else 0


def audio_segments(n_samples: int) -> int:
    """Number of 10,240-sample segments (stride 5,120) in ``n_samples`` samples at 16 kHz."""
    return (n_samples - SEG_SAMPLES) // SEG_SAMPLE_STEP + 1 if n_samples >= SEG_SAMPLES else 0


@dataclass(frozen=True)
class WindowPlan:
    """What Synchformer reads of one clip.

    ``video_frames``/``audio_samples``: the lengths fed to the model (after cutting and padding);
    ``video_pad``/``audio_pad``: how many of them are zero padding (javisbench only);
    ``video_segments``/``audio_segments``: segment counts; ``windows``: per window a pair
    (14 video segment indices, 14 audio segment indices)."""

    policy: str
    length_s: float | None
    video_frames: int
    audio_samples: int
    video_pad: int
    audio_pad: int
    video_segments: int
    audio_segments: int
    windows: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]


def _av_benchmark(n_frames: int, n_samples: int, length_s: float | None) -> WindowPlan:
    if length_s is None:
        nv = min(n_frames, n_samples // SAMPLES_PER_FRAME)
        na = nv * SAMPLES_PER_FRAME
    else:
        nv, na = int(SYNC_FPS * length_s), int(SYNC_SR * length_s)
        if n_frames < nv or n_samples < na:
            raise ClipTooShortError(
                f"too short for DeSync policy av_benchmark with max_length_s={length_s:g}: needs {nv} video "
                f"frames at 25 fps and {na} audio samples at 16 kHz, has {n_frames} and {n_samples}"
            )
    sv, sa = video_segments(nv), audio_segments(na)
    if min(sv, sa) < WINDOW_SEGMENTS:
        raise ClipTooShortError(
            f"too short for DeSync policy av_benchmark: needs {WINDOW_SECONDS:g} s of video and audio "
            f"({WINDOW_SEGMENTS} segments), has {nv / SYNC_FPS:.3f} s ({sv} video / {sa} audio segments)"
        )
    first = (tuple(range(WINDOW_SEGMENTS)), tuple(range(WINDOW_SEGMENTS)))
    last = (tuple(range(sv - WINDOW_SEGMENTS, sv)), tuple(range(sa - WINDOW_SEGMENTS, sa)))
    return WindowPlan("av_benchmark", length_s, nv, na, 0, 0, sv, sa, (first, last))


def javisbench_windows(n_segments: int) -> tuple[tuple[int, ...], ...]:
    """JavisBench's windows over ``n_segments`` segments (see the module docstring)."""
    if n_segments < 1:
        raise ValueError(f"no segment to score ({n_segments})")
    out = []
    for w in range(math.ceil(n_segments / WINDOW_SEGMENTS)):
        start, stop = w * WINDOW_SEGMENTS, min((w + 1) * WINDOW_SEGMENTS, n_segments)
        n = stop - start
        if n == WINDOW_SEGMENTS:
            out.append(tuple(range(start, stop)))
        elif w == 0:  # tile the features of the first (only) window: 0..n-1, 0..n-1, ...
            out.append(tuple(j % n for j in range(WINDOW_SEGMENTS)))
        else:  # a short last window is replaced by the last 14 segments
            out.append(tuple(range(n_segments - WINDOW_SEGMENTS, n_segments)))
    return tuple(out)


def _javisbench(n_frames: int, n_samples: int, length_s: float) -> WindowPlan:
    if n_frames < SEG_FRAMES or n_samples < SEG_SAMPLES:
        raise ClipTooShortError(
            f"too short for DeSync policy javisbench: needs one segment ({SEGMENT_SECONDS:g} s: "
            f"{SEG_FRAMES} frames at 25 fps and {SEG_SAMPLES} samples at 16 kHz) of real content, "
            f"has {n_frames} frames and {n_samples} samples"
        )
    nv, na = int(SYNC_FPS * length_s), int(SYNC_SR * length_s)
    sv, sa = video_segments(nv), audio_segments(na)
    if sv != sa or sv < 1:  # upstream asserts equal counts
        raise ValueError(f"max_length_s={length_s:g} gives {sv} video but {sa} audio segments")
    wins = tuple((w, w) for w in javisbench_windows(sv))
    return WindowPlan("javisbench", length_s, nv, na, max(0, nv - n_frames), max(0, na - n_samples), sv, sa, wins)


def plan_windows(policy: str, n_frames: int, n_samples: int, max_length_s: float | None) -> WindowPlan:
    """The plan for a clip with ``n_frames`` frames at 25 fps and ``n_samples`` samples at 16 kHz.

    Raises ClipTooShortError (the error row's message) when the clip is too short for ``policy``."""
    if policy == "av_benchmark":
        return _av_benchmark(n_frames, n_samples, max_length_s)
    if policy == "javisbench":
        if max_length_s is None:
            raise ValueError("policy javisbench needs max_length_s")
        return _javisbench(n_frames, n_samples, max_length_s)
    raise ValueError(f"unknown DeSync policy {policy!r}; known: {', '.join(POLICIES)}")
