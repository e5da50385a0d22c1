"""Media from elsewhere (issue 10, case 3): variable frame rate, audio that starts late or has gaps,
missing audio, empty streams. The files are written here with PyAV and explicit timestamps."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from avclips import click_track
from avits_core.errors import MediaFormatError
from avits_core.media import AVClip, constant_rate, read_mp4, read_video
from avits_core.prompts import Prompt
from avits_core.registry import VERIFIERS
from avits_core.verifiers.av_sync import estimate_offset

av = pytest.importorskip("av")

SR = 16_000
PLACES = ((8, 8), (36, 40), (10, 38), (40, 10))
#: events just before a frame time, so a frame shows the new place at the first frame time after it
EVENTS = (0.58, 1.28, 1.95, 2.6)
#: a phone-like recording: 10 fps for 1.5 s (dropped frames), then 30 fps; timestamps in ms
VFR_TIMES = [k / 10 for k in range(15)] + [1.5 + k / 30 for k in range(45)]


def render(t: float) -> np.ndarray:
    img = np.full((64, 64, 3), 20, np.uint8)
    y, x = PLACES[int(np.searchsorted(EVENTS, t, side="right")) % len(PLACES)]
    img[y:y + 16, x:x + 16] = (230, 200, 40)
    return img


def write(path: Path, times: list[float] | None, audio: np.ndarray | None, *, audio_start: float = 0.0,
          audio_gap: tuple[float, float] | None = None, audio_frames: bool = True) -> Path:
    """An mp4 with H.264 frames at ``times`` (s, 1 ms time base) and AAC ``audio`` whose first sample
    is at ``audio_start`` s; ``audio_gap`` = (at, length) s leaves a hole in the audio timestamps."""
    with av.open(str(path), "w", format="mp4") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width = vs.height = 64
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        aus = None
        if audio is not None:
            aus = c.add_stream("aac", rate=SR)
            aus.layout = "mono"
        for t in times or []:
            f = av.VideoFrame.from_ndarray(render(t), format="rgb24")
            f.pts, f.time_base = int(round(t * 1000)), Fraction(1, 1000)
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
        if aus is not None and audio_frames:
            start = int(round(audio_start * SR))
            for s in range(0, len(audio), 1024):
                fr = av.AudioFrame.from_ndarray(audio[None, s:s + 1024], format="fltp", layout="mono")
                fr.sample_rate = SR
                skip = int(round(audio_gap[1] * SR)) if audio_gap and s >= audio_gap[0] * SR else 0
                fr.pts = start + s + skip
                c.mux(aus.encode(fr))
            c.mux(aus.encode(None))
    return path


def _score(name: str, clip: AVClip) -> float:
    res = VERIFIERS.create(name).score([clip], [Prompt("p", "x")])
    assert res.errors == [None], res.errors
    return float(res.values[0])


def test_vfr_mp4_is_resampled_by_timestamp_and_reads_as_in_sync(tmp_path):
    path = write(tmp_path / "vfr.mp4", VFR_TIMES, click_track(EVENTS, duration=3.0, sr=SR))
    clip = read_mp4(path)
    assert clip.fps == 30.0 and clip.num_frames == 90  # 3 s at the stream's 30 fps, not 60 frames
    assert clip.meta["vfr"]["vfr"] and clip.meta["vfr"]["source_frames"] == 60
    # every output frame shows what the scene showed at j / 30 s (compression aside)
    ref = np.stack([render(j / 30) for j in range(90)]).astype(np.int16)
    assert np.abs(clip.video.astype(np.int16) - ref).mean(axis=(1, 2, 3)).max() < 3.0
    assert abs(estimate_offset(clip)) < 0.02  # in sync (one frame = 33 ms)
    assert _score("av_align", clip) == 1.0
    assert _score("av_sync", clip) > -0.02
    # what the old reader did: the 60 frames at the average rate -> a clip that reads out of sync
    naive = AVClip(np.stack([render(t) for t in VFR_TIMES]), 60 / 3.0, clip.audio, SR)
    assert abs(estimate_offset(naive)) > 0.06 and _score("av_align", naive) < 0.5
    # read_video (video only) resamples the same way
    frames, fps = read_video(path, backend="pyav")
    assert fps == 30.0 and frames.shape[0] == 90 and np.array_equal(frames, clip.video)
    frames, fps = read_video(path)  # decord when installed: detects the VFR and takes the PyAV path
    assert fps == 30.0 and frames.shape[0] == 90


def test_constant_rate_input_is_untouched_and_slots_absorb_timestamp_jitter():
    imgs = [np.full((2, 2, 3), i, np.uint8) for i in range(6)]
    t = np.array([0.0, 0.083, 0.167, 0.25, 0.333, 0.417])  # 12 fps rounded to 1 ms
    v, fps, info = constant_rate(imgs, t, [12.0], "x")
    assert fps == 12.0 and not info["vfr"] and [int(f[0, 0, 0]) for f in v] == [0, 1, 2, 3, 4, 5]
    # a dropped frame (index 2 missing): held, timestamps off by a tick still land in their slot
    t2 = np.array([0.0, 0.084, 0.251, 0.333, 0.416])
    v, fps, info = constant_rate([imgs[i] for i in (0, 1, 3, 4, 5)], t2, [12.0], "x")
    assert fps == 12.0 and info["vfr"] and [int(f[0, 0, 0]) for f in v] == [0, 1, 1, 3, 4, 5]
    # no declared rate agrees: 1 / median interval
    v, fps, _ = constant_rate(imgs[:4], np.array([0.0, 0.1, 0.2, 0.5]), [None, 7.0], "x")
    assert fps == 10.0 and [int(f[0, 0, 0]) for f in v] == [0, 1, 2, 2, 2, 3]
    with pytest.raises(MediaFormatError, match="same timestamp"):
        constant_rate(imgs[:3], np.zeros(3), [12.0], "x")


def test_audio_that_starts_late_is_padded_by_its_start_time(tmp_path):
    times = [k / 30 for k in range(90)]
    late = 0.5
    audio = click_track([e - late for e in EVENTS], duration=3.0 - late, sr=SR)
    clip = read_mp4(write(tmp_path / "late.mp4", times, audio, audio_start=late))
    # the stream starts 1024 samples earlier than its first real sample: the AAC encoder's priming
    assert clip.meta["audio_start_s"] == pytest.approx(late - 1024 / SR, abs=1e-3)
    assert np.max(np.abs(clip.audio[: int(0.43 * SR)])) == 0.0  # silence in front
    first_click = np.argmax(np.abs(clip.audio) > 0.05) / SR
    assert first_click == pytest.approx(EVENTS[0], abs=1e-3)  # where it was recorded, not 0.5 s early
    assert abs(estimate_offset(clip)) < 0.02 and _score("av_align", clip) == 1.0


def test_a_gap_in_the_audio_timestamps_is_filled_with_silence(tmp_path):
    times = [k / 30 for k in range(90)]
    gap_at, gap = 1.024 * 1, 0.256  # after the first 16384 samples, 0.256 s of missing audio
    full = click_track(EVENTS, duration=3.0, sr=SR)
    cut = np.concatenate([full[: int(gap_at * SR)], full[int((gap_at + gap) * SR):]])
    clip = read_mp4(write(tmp_path / "gap.mp4", times, cut, audio_gap=(gap_at, gap)))
    assert clip.audio_duration == pytest.approx(3.0, abs=0.01)
    assert np.max(np.abs(clip.audio[int((gap_at + 0.01) * SR): int((gap_at + gap - 0.01) * SR)])) < 1e-3
    assert abs(estimate_offset(clip)) < 0.02  # the later clicks stay in place


def test_missing_audio_and_empty_streams_are_clear_errors(tmp_path):
    times = [k / 30 for k in range(30)]
    no_audio = write(tmp_path / "silent-film.mp4", times, None)
    with pytest.raises(MediaFormatError, match=r"silent-film.mp4 has no audio stream"):
        read_mp4(no_audio)
    frames, fps = read_video(no_audio)  # video-only readers do not need it
    assert frames.shape[0] == 30 and fps == pytest.approx(30.0, rel=1e-3)  # decord: 1 ms timestamps
    empty_audio = write(tmp_path / "empty-audio.mp4", times, np.zeros(0, np.float32), audio_frames=False)
    # an audio track without a single packet: the muxer drops it, so it reads as no audio stream
    with pytest.raises(MediaFormatError, match=r"empty-audio.mp4( has no audio stream|: the audio stream decoded to no)"):
        read_mp4(empty_audio)
    no_frames = write(tmp_path / "no-frames.mp4", [], click_track(EVENTS, duration=3.0, sr=SR))
    with pytest.raises(MediaFormatError, match=r"no-frames.mp4"):
        read_mp4(no_frames)


def test_read_mp4_audio_is_read_mp4s_audio_without_the_video(tmp_path):
    """read_mp4_audio places the audio by the first video packet's time instead of the first decoded
    frame's: the same samples as read_mp4 on every timing case above, on a file whose video starts
    after its audio (lead-in dropped), and on our own encoder's output (B-frames, AAC priming)."""
    from avclips import jump_clip
    from avits_core.media import read_mp4_audio, write_mp4

    full = click_track(EVENTS, duration=3.0, sr=SR)
    times = [k / 30 for k in range(90)]
    gap_at, gap = 1.024, 0.256
    cut = np.concatenate([full[: int(gap_at * SR)], full[int((gap_at + gap) * SR):]])
    files = [
        write(tmp_path / "vfr.mp4", VFR_TIMES, full),
        write(tmp_path / "late.mp4", times, full[: int(2.5 * SR)], audio_start=0.5),
        write(tmp_path / "gap.mp4", times, cut, audio_gap=(gap_at, gap)),
        write(tmp_path / "video-late.mp4", [0.4 + t for t in times], full),
        write_mp4(jump_clip(seed=3), tmp_path / "ours.mp4"),
    ]
    offsets = set()
    for path in files:
        clip = read_mp4(path)
        audio, sr = read_mp4_audio(path)
        assert sr == clip.sample_rate and audio.dtype == np.float32
        assert np.array_equal(audio, clip.audio), path.name
        offsets.add(round(clip.meta["audio_start_s"], 3))
    assert len(offsets) >= 3  # zero, positive (late audio) and negative (late video) offsets were covered
    no_audio = write(tmp_path / "silent-film.mp4", times, None)
    with pytest.raises(MediaFormatError, match=r"silent-film.mp4 has no audio stream"):
        read_mp4_audio(no_audio)
    with pytest.raises(MediaFormatError, match=r"no-frames.mp4"):
        read_mp4_audio(write(tmp_path / "no-frames.mp4", [], full))
