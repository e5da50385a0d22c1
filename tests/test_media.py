"""mp4 / wav I/O and resampling (avits_core.media)."""

from __future__ import annotations

import logging
import os

import av
import numpy as np
import pytest
from scipy.signal import correlate, correlation_lags

from avits_core.media import (
    AVClip,
    MediaError,
    MediaFileNotFoundError,
    MediaFormatError,
    read_mp4,
    read_wav,
    resample,
    write_mp4,
    write_wav,
)
from avits_core.verifiers.av_sync import estimate_offset
from avclips import FPS, SR, jump_clip


def _lag(x: np.ndarray, ref: np.ndarray) -> int:
    """Lag (samples) of x relative to ref at the cross-correlation peak (> 0: x is late)."""
    c = correlate(x, ref, mode="full")
    return int(correlation_lags(len(x), len(ref))[np.argmax(c)])


def test_mp4_round_trip_keeps_shape_rate_duration_and_content(tmp_path):
    clip = jump_clip(video_noise=4.0, audio_noise=0.01)
    out = write_mp4(clip, tmp_path / "clip.mp4")
    assert out == tmp_path / "clip.mp4" and out.is_file()
    back = read_mp4(out)
    assert back.video.shape == clip.video.shape == (24, 64, 64, 3)
    assert back.video.dtype == np.uint8
    assert back.fps == pytest.approx(FPS)
    assert back.sample_rate == SR
    assert back.duration == pytest.approx(clip.duration)
    assert back.audio.shape == clip.audio.shape  # AAC end padding trimmed, priming removed
    assert back.audio.dtype == np.float32
    assert back.meta["path"] == str(out)
    # lossy but close: CRF 18 video, 128 kb/s AAC
    assert np.mean(np.abs(back.video.astype(float) - clip.video.astype(float))) < 4.0
    assert np.corrcoef(back.audio, clip.audio)[0, 1] > 0.95


def test_aac_round_trip_adds_no_audio_offset(tmp_path):
    clip = jump_clip()  # three 15 ms clicks
    back = read_mp4(write_mp4(clip, tmp_path / "clicks.mp4"))
    lag = _lag(back.audio, clip.audio)
    assert abs(lag) <= SR // 1000, f"AAC round trip shifted the audio by {lag} samples"


def test_mp4_round_trip_keeps_av_sync(tmp_path):
    for shift in (0.0, 0.25):
        clip = jump_clip(audio_shift=shift)
        back = read_mp4(write_mp4(clip, tmp_path / f"s{shift}.mp4"))
        assert estimate_offset(back) == pytest.approx(estimate_offset(clip), abs=1.0 / FPS)
        assert estimate_offset(back) == pytest.approx(shift, abs=1.0 / FPS)


def test_mp4_non_integer_fps_and_other_rates(tmp_path, caplog):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (10, 32, 48, 3), dtype=np.uint8)
    ntsc = AVClip(video, 24000 / 1001, (rng.standard_normal(22050) * 0.1).astype(np.float32), 22050)
    back = read_mp4(write_mp4(ntsc, tmp_path / "ntsc.mp4"))
    assert back.fps == pytest.approx(24000 / 1001)
    assert back.sample_rate == 22050 and back.audio.shape == (22050,)
    # 44 kHz is not an AAC rate: resampled to 48 kHz, with a warning
    odd_rate = AVClip(video, 25.0, (rng.standard_normal(44000) * 0.1).astype(np.float32), 44000)
    with caplog.at_level(logging.WARNING, logger="avits_core.media"):
        back = read_mp4(write_mp4(odd_rate, tmp_path / "odd_rate.mp4"))
    assert back.sample_rate == 48000 and back.audio.shape == (48000,)
    assert "48000" in caplog.text


def test_mp4_odd_frame_size_is_padded(tmp_path, caplog):
    clip = jump_clip()
    odd = AVClip(clip.video[:, :63, :61], clip.fps, clip.audio, clip.sample_rate)
    with caplog.at_level(logging.WARNING, logger="avits_core.media"):
        back = read_mp4(write_mp4(odd, tmp_path / "odd.mp4"))
    assert back.video.shape == (24, 64, 62, 3)
    assert "odd" in caplog.text
    # the padding replicates the last row/column
    diff = np.abs(back.video[:, 63].astype(int) - back.video[:, 62].astype(int))
    assert diff.mean() < 6


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
    clip = jump_clip()
    target = tmp_path / "clip.mp4"
    write_mp4(clip, target)
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]
    before = target.read_bytes()
    # an encoder failure after the temp file was opened: old file intact, no temp left
    with pytest.raises(MediaError, match="clip.mp4"):
        write_mp4(clip, target, audio_bitrate=-1)
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]
    assert target.read_bytes() == before
    # a failure at the final rename: no temp left either
    def boom(src, dst):
        assert os.path.exists(src)
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_mp4(clip, tmp_path / "other.mp4")
    with pytest.raises(OSError, match="disk full"):
        write_wav(clip.audio, clip.sample_rate, tmp_path / "other.wav")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_write_mp4_rejects_bad_clips(tmp_path):
    clip = jump_clip()
    with pytest.raises(MediaFormatError, match="no audio"):
        write_mp4(AVClip(clip.video, clip.fps, np.zeros(0, np.float32), SR), tmp_path / "a.mp4")
    with pytest.raises(MediaFormatError, match="NaN"):
        write_mp4(AVClip(clip.video, clip.fps, np.full(100, np.nan, np.float32), SR), tmp_path / "b.mp4")
    with pytest.raises(MediaFormatError, match="crf"):
        write_mp4(clip, tmp_path / "c.mp4", crf=99)
    with pytest.raises(MediaFileNotFoundError, match="nowhere"):
        write_mp4(clip, tmp_path / "nowhere" / "d.mp4")
    assert os.listdir(tmp_path) == []


def test_read_mp4_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(MediaFileNotFoundError, match="missing.mp4"):
        read_mp4(missing)
    with pytest.raises(FileNotFoundError):  # also a plain FileNotFoundError
        read_mp4(missing)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(MediaFormatError, match="garbage.mp4"):
        read_mp4(garbage)
    # audio only
    wav = write_wav(jump_clip().audio, SR, tmp_path / "sound.wav")
    with pytest.raises(MediaFormatError, match=r"sound\.wav has no video stream"):
        read_mp4(wav)
    # video only
    silent_mp4 = tmp_path / "video_only.mp4"
    with av.open(str(silent_mp4), "w") as c:
        s = c.add_stream("libx264", rate=12)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for f in jump_clip().video:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    with pytest.raises(MediaFormatError, match=r"video_only\.mp4 has no audio stream"):
        read_mp4(silent_mp4)


def test_wav_round_trip_and_errors(tmp_path):
    audio = jump_clip(audio_noise=0.05).audio
    p = write_wav(audio, SR, tmp_path / "a.wav")
    back, sr = read_wav(p)
    assert sr == SR and back.dtype == np.float32
    np.testing.assert_array_equal(back, audio)  # 32-bit float wav is lossless
    pcm, _ = read_wav(write_wav(audio, SR, tmp_path / "b.wav", subtype="PCM_16"))
    assert np.max(np.abs(pcm - np.clip(audio, -1, 1))) < 1e-4
    # stereo files are averaged to mono
    import soundfile as sf

    sf.write(tmp_path / "st.wav", np.stack([np.full(100, 0.5), np.full(100, -0.1)], axis=1), 8000)
    mono, sr = read_wav(tmp_path / "st.wav")
    assert sr == 8000 and mono.shape == (100,) and np.allclose(mono, 0.2, atol=1e-4)
    with pytest.raises(MediaFileNotFoundError, match="nope.wav"):
        read_wav(tmp_path / "nope.wav")
    (tmp_path / "junk.wav").write_bytes(b"\x00junk" * 50)
    with pytest.raises(MediaFormatError, match="junk.wav"):
        read_wav(tmp_path / "junk.wav")
    with pytest.raises(MediaFormatError, match="mono"):
        write_wav(np.zeros((10, 2), np.float32), SR, tmp_path / "c.wav")
    assert sorted(os.listdir(tmp_path)) == ["a.wav", "b.wav", "junk.wav", "st.wav"]


def test_resample_keeps_frequency_and_length():
    sr_from, sr_to = 16000, 44100
    t = np.arange(sr_from) / sr_from
    tone = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    up = resample(tone, sr_from, sr_to)
    assert up.dtype == np.float32 and up.shape == (sr_to,)
    spectrum = np.abs(np.fft.rfft(up))
    assert np.fft.rfftfreq(up.shape[0], 1 / sr_to)[np.argmax(spectrum)] == pytest.approx(1000.0, abs=1.0)
    assert np.max(np.abs(up[1000:-1000])) == pytest.approx(1.0, abs=0.02)
    down = resample(up, sr_to, sr_from)
    assert down.shape == (sr_from,)
    assert np.max(np.abs(down[500:-500] - tone[500:-500])) < 0.02
    same = resample(tone, sr_from, sr_from)
    assert same is not tone and np.array_equal(same, tone)
    with pytest.raises(ValueError, match="mono"):
        resample(np.zeros((4, 2), np.float32), 16000, 8000)
    with pytest.raises(ValueError, match="> 0"):
        resample(tone, 0, 8000)


def _silent_mp4(path, width, height=32, n=10, fps=8):
    frames = (np.random.default_rng(0).integers(0, 255, (n, height, width, 3))).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def test_read_video_backends_agree_and_need_no_audio(tmp_path):
    """read_video: decord and PyAV give the same frames and fps; a file without sound is fine;
    where decord cannot decode a geometry (width 48), auto falls back to PyAV and decord says so."""
    from avits_core.media import MediaFileNotFoundError, MediaFormatError, read_video

    path = _silent_mp4(tmp_path / "silent.mp4", width=64)
    b, fb = read_video(path, backend="pyav")
    assert b.shape == (10, 32, 64, 3) and b.dtype == np.uint8 and fb == 8.0
    odd = _silent_mp4(tmp_path / "w48.mp4", width=48)
    c, _ = read_video(odd, backend="auto")
    assert c.shape == (10, 32, 48, 3)
    with pytest.raises(MediaFileNotFoundError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(ValueError, match="backend"):
        read_video(path, backend="cv2")
    try:
        import decord  # noqa: F401
    except ImportError:
        pytest.skip("decord not installed on this platform")
    a, fa = read_video(path, backend="decord")
    assert a.shape == b.shape and fa == fb
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 3
    with pytest.raises(MediaFormatError, match="decord"):
        read_video(odd, backend="decord")


def test_mp4_encoding_is_byte_reproducible_also_in_threads(tmp_path):
    """The same clip encodes to the same bytes every time, whatever thread encodes it (rewards are
    scored on the stored mp4, so this is what makes two runs of a config agree)."""
    import hashlib
    import threading

    from avits_core.generators.synth import SynthAVGenerator
    from avits_core.prompts import Prompt
    from avits_core.search.best_of_n import generate_candidates

    gen = SynthAVGenerator(num_steps=8)
    _, clips = generate_candidates(gen, Prompt("p", "a small red ball bounces twice with a high beep over rain"),
                                   list(range(9)))
    md5 = lambda p: hashlib.md5(p.read_bytes()).hexdigest()  # noqa: E731
    first = [md5(write_mp4(c, tmp_path / f"a{i}.mp4")) for i, c in enumerate(clips)]
    second = [md5(write_mp4(c, tmp_path / f"b{i}.mp4")) for i, c in enumerate(clips)]
    threaded: list[str | None] = [None] * len(clips)

    def work(k: int) -> None:
        for i in range(k, len(clips), 3):
            threaded[i] = md5(write_mp4(clips[i], tmp_path / f"t{i}.mp4"))

    ts = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert first == second == threaded
