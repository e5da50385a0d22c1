"""Hand-made audio-video test clips with known events (no dependency on the SynthAV generator).

``jump_clip`` draws a bright square on a dark background that jumps to a new place at each event
time, and puts a short click (a 15 ms exponentially decaying noise burst) in the audio at each
event time plus ``audio_shift`` seconds. A frame is a snapshot at k / fps, so a jump at time t
is first visible in frame ceil(t * fps); the motion between frames k-1 and k is best placed at
(k - 0.5) / fps. Events at those mid-frame times (``midframe``) are therefore "in sync" with
zero error; ``EVENTS`` are three such events, unevenly spaced so that a cross-correlation has a
single clear peak.
"""

from __future__ import annotations

import numpy as np

from avits_core.media import AVClip

FPS = 12.0
SR = 16_000
SIZE = 64
DURATION = 2.0


def midframe(k: int, fps: float = FPS) -> float:
    """Time (s) halfway between frames k-1 and k."""
    return (k - 0.5) / fps


#: three events in 2 s at 12 fps, between frames 4|5, 11|12 and 20|21 (0.375 s, 0.958 s, 1.708 s)
EVENTS: tuple[float, ...] = (midframe(5), midframe(12), midframe(21))

# places the square visits, one after the other (top-left corners)
_PLACES = ((8, 8), (36, 40), (10, 38), (40, 10))


def click_track(times: list[float] | tuple[float, ...], *, duration: float = DURATION, sr: int = SR,
                amplitude: float = 0.8, seed: int = 0) -> np.ndarray:
    """float32 mono audio with a 15 ms decaying noise burst starting at each time inside [0, duration)."""
    rng = np.random.default_rng(seed)
    n = int(round(duration * sr))
    audio = np.zeros(n, dtype=np.float32)
    m = int(0.015 * sr)
    burst = (rng.standard_normal(m) * np.exp(-np.arange(m) / (0.003 * sr))).astype(np.float32)
    burst *= amplitude / float(np.max(np.abs(burst)))
    for t in times:
        s = int(round(t * sr))
        if 0 <= s < n:
            e = min(n, s + m)
            audio[s:e] += burst[: e - s]
    return audio


def jump_clip(events: tuple[float, ...] = EVENTS, *, audio_shift: float = 0.0, duration: float = DURATION,
              fps: float = FPS, sr: int = SR, size: int = SIZE, square: int = 16,
              video_noise: float = 0.0, audio_noise: float = 0.0, seed: int = 0) -> AVClip:
    """A square jumping at ``events`` with clicks at ``events + audio_shift``; optional Gaussian noise.

    ``video_noise`` is a pixel standard deviation (0..255 scale), ``audio_noise`` an amplitude std.
    ``meta`` records the events and the shift.
    """
    rng = np.random.default_rng(seed + 1)
    t_frames = int(round(duration * fps))
    video = np.full((t_frames, size, size, 3), 20, dtype=np.uint8)
    ev = np.asarray(sorted(events), dtype=np.float64)
    for k in range(t_frames):
        place = _PLACES[int(np.searchsorted(ev, k / fps, side="right")) % len(_PLACES)]
        y, x = place
        video[k, y : y + square, x : x + square] = (230, 200, 40)
    if video_noise > 0:
        noisy = video.astype(np.float32) + rng.normal(0.0, video_noise, video.shape)
        video = np.clip(noisy, 0, 255).astype(np.uint8)
    audio = click_track([t + audio_shift for t in events], duration=duration, sr=sr, seed=seed)
    if audio_noise > 0:
        audio = (audio + rng.normal(0.0, audio_noise, audio.shape)).astype(np.float32)
    return AVClip(video=video, fps=fps, audio=audio, sample_rate=sr,
                  meta={"events": list(events), "audio_shift": audio_shift})


#: impact times of ``bounce_clip``: period 2/3 s, first impact at 1/3 s
BOUNCES: tuple[float, ...] = (1 / 3, 1.0, 5 / 3)


def bounce_clip(*, audio_shift: float = 0.0, period: float = 2 / 3, first: float = 1 / 3, height: float = 24.0,
                radius: float = 7.0, duration: float = DURATION, fps: float = FPS, sr: int = SR,
                size: int = SIZE, video_noise: float = 3.0, audio_noise: float = 0.005, seed: int = 0) -> AVClip:
    """A small ball bouncing on a floor (parabolic arcs, impacts every ``period`` s from ``first``).

    Clicks at the impacts plus ``audio_shift``. The vertical speed is largest at each impact
    (4 * height / period px/s: 12 px/frame with the defaults) and reverses there. Anti-aliased
    disc, slow horizontal drift, Gaussian noise. Optical flow tracks the default ball (7 px
    radius); a 4 px ball at height 34 (17 px/frame) is too small for its speed and is not
    tracked (see avits_core.verifiers.features, "Known limitation").
    """
    rng = np.random.default_rng(seed + 2)
    t_frames = int(round(duration * fps))
    floor = size - 8
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    video = np.empty((t_frames, size, size, 3), dtype=np.float32)
    video[:] = 40.0
    video[:, floor:] = 90.0
    for k in range(t_frames):
        t = k / fps
        u = ((t - first) / period) % 1.0
        cy = floor - radius - height * 4.0 * u * (1.0 - u)
        cx = size / 3 + 6.0 * t
        alpha = np.clip(radius + 0.5 - np.hypot(yy - cy, xx - cx), 0.0, 1.0)[..., None]
        video[k] = video[k] * (1 - alpha) + np.array([220.0, 40.0, 40.0]) * alpha
    if video_noise > 0:
        video += rng.normal(0.0, video_noise, video.shape)
    video_u8 = np.clip(np.round(video), 0, 255).astype(np.uint8)
    impacts = [first + i * period for i in range(int(np.ceil(duration / period)) + 1)]
    impacts = [t for t in impacts if 0 <= t < duration]
    audio = click_track([t + audio_shift for t in impacts], duration=duration, sr=sr, seed=seed)
    if audio_noise > 0:
        audio = (audio + rng.normal(0.0, audio_noise, audio.shape)).astype(np.float32)
    return AVClip(video=video_u8, fps=fps, audio=audio, sample_rate=sr,
                  meta={"events": impacts, "audio_shift": audio_shift})


def silent(clip: AVClip) -> AVClip:
    """The same clip with all-zero audio."""
    return AVClip(clip.video.copy(), clip.fps, np.zeros_like(clip.audio), clip.sample_rate, dict(clip.meta))


def static(clip: AVClip) -> AVClip:
    """The same audio over a video that repeats the first frame."""
    video = np.repeat(clip.video[:1], clip.num_frames, axis=0)
    return AVClip(video, clip.fps, clip.audio.copy(), clip.sample_rate, dict(clip.meta))
