"""AVClip: one generated video with sound, plus mp4/wav I/O.

An AVClip holds
  video        uint8 array, shape (T, H, W, 3), RGB
  fps          frames per second (float)
  audio        float32 array, shape (N,), mono, nominally in [-1, 1]
  sample_rate  audio samples per second (int)
  meta         free-form dict (SynthAV puts the scene's ground truth here under "truth")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class AVClip:
    video: np.ndarray
    fps: float
    audio: np.ndarray
    sample_rate: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = np.asarray(self.video)
        if v.ndim != 4 or v.shape[-1] != 3:
            raise ValueError(f"AVClip.video must be (T, H, W, 3), got shape {v.shape}")
        if v.dtype != np.uint8:
            raise ValueError(f"AVClip.video must be uint8, got {v.dtype}")
        a = np.asarray(self.audio, dtype=np.float32)
        if a.ndim != 1:
            raise ValueError(f"AVClip.audio must be mono (N,), got shape {a.shape}")
        if not self.fps or self.fps <= 0:
            raise ValueError(f"AVClip.fps must be > 0, got {self.fps}")
        if not self.sample_rate or self.sample_rate <= 0:
            raise ValueError(f"AVClip.sample_rate must be > 0, got {self.sample_rate}")
        self.video = v
        self.audio = a

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    @property
    def duration(self) -> float:
        """Duration of the video track in seconds."""
        return self.num_frames / float(self.fps)

    @property
    def audio_duration(self) -> float:
        return self.audio.shape[0] / float(self.sample_rate)


# ---------------------------------------------------------------------------------------------
# Media I/O: mp4 (H.264 + AAC, PyAV) and wav (soundfile); resampling (scipy).
#
# Decisions (the spec was silent on these):
# * Every write is atomic: the file is written to a hidden temp file in the destination folder
#   and moved into place with os.replace, so a crash never leaves a half-written file.
# * Video: libx264, yuv420p, CRF 18 (visually lossless for our purposes), one frame per tick of
#   a 1/fps time base; fps is stored as an exact fraction (12.0 -> 12/1, 23.976.. -> 24000/1001).
#   The moov atom is written at the front (movflags +faststart) so files stream in a browser.
#   yuv420p needs even width and height: an odd-sized clip is padded by one row/column
#   (edge-replicated, bottom/right) with a warning, so read_mp4 returns the padded size.
# * Audio: FFmpeg's native AAC encoder, mono, 128 kb/s, at the clip's sample rate when AAC
#   supports it (8 kHz ... 96 kHz, the standard rates); any other rate is resampled to 48 kHz
#   (warning). Samples outside [-1, 1] are clipped (warning).
# * AAC priming / encoder delay: the AAC encoder prepends 1024 priming samples and pads the last
#   frame; FFmpeg's mp4 muxer records the priming in the edit list (dropped again on decode) and
#   the true length as the audio stream's duration. Measured on a click track and on white noise (16 kHz, 2 s): the decoded audio
#   is offset by 0 samples from the original (cross-correlation peak at lag 0), with 768
#   trailing padding samples beyond the stream's declared duration. read_mp4 nevertheless
#   compensates any residual start offset generically: it aligns the first decoded audio sample
#   to the first video frame using the streams' timestamps (zero-padding or dropping samples at
#   the start), and trims the audio to the audio stream's declared duration (dropping the
#   encoder's end padding). The audio is NOT cut or padded to the video's length.
# * Timestamps, not assumptions (files from phones, screen recorders, editors): every decoded
#   video frame is placed by its presentation timestamp. A variable-frame-rate stream is resampled
#   to a constant rate by timestamp (constant_rate: the declared rate that matches the median frame
#   interval, frames repeated where the recorder dropped them, as FFmpeg's fps filter does) with a
#   warning and meta["vfr"]; audio that starts after the first frame is preceded by silence for
#   that time (meta["audio_start_s"]), a gap in the audio timestamps is filled with silence, and a
#   file without an audio stream, or a stream that decodes to nothing, is a MediaFormatError.
# ---------------------------------------------------------------------------------------------

import logging  # noqa: E402
import os  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

# The error classes live in avits_core.errors; imported here so `from avits_core.media import MediaError` works.
from avits_core.errors import MediaError, MediaFileNotFoundError, MediaFormatError  # noqa: E402
from avits_core.store import fs as sfs  # noqa: E402

log = logging.getLogger(__name__)

#: Sample rates the AAC format supports (ISO/IEC 14496-3 sampling frequency index table).
AAC_SAMPLE_RATES: tuple[int, ...] = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)
_AAC_FRAME = 1024  # samples per AAC frame




def _fps_fraction(fps: float) -> Fraction:
    frac = Fraction(float(fps)).limit_denominator(100_000)
    if frac <= 0:
        raise MediaFormatError(f"fps must be > 0, got {fps}")
    return frac


def write_mp4(clip: AVClip, path: str | os.PathLike[str], *, crf: int = 18,
              audio_bitrate: int = 128_000) -> Path:
    """Write ``clip`` as an mp4 (H.264 yuv420p video + AAC mono audio); return the path written.

    ``path`` may be an object-store path (a ``UPath``, :mod:`avits_core.store.fs`): the file is
    encoded to a local temp file and uploaded in one PUT.

    Atomic (temp file + os.replace). Odd frame sizes are edge-padded to even; audio at a rate AAC
    cannot carry is resampled to 48 kHz (see the notes above); ``clip.meta`` is not stored. Raises MediaFormatError for an
    empty clip and MediaError when encoding fails.
    """
    if sfs.is_remote(path):
        with sfs.local_target(path) as local:
            write_mp4(clip, local, crf=crf, audio_bitrate=audio_bitrate)
        return path
    import av

    path = Path(path)
    if not 0 <= int(crf) <= 51:
        raise MediaFormatError(f"cannot write {path}: crf must be in [0, 51] (libx264), got {crf}")
    if clip.num_frames < 1:
        raise MediaFormatError(f"cannot write {path}: the clip has no video frames")
    if clip.audio.shape[0] < 1:
        raise MediaFormatError(f"cannot write {path}: the clip has no audio samples")
    if not path.parent.is_dir():
        raise MediaFileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")

    video = clip.video
    h, w = video.shape[1:3]
    ph, pw = h % 2, w % 2
    if ph or pw:
        log.warning("%s: frame size %dx%d is odd; padding to %dx%d for yuv420p", path, w, h, w + pw, h + ph)
        video = np.pad(video, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
        h, w = h + ph, w + pw

    audio = clip.audio
    sr = int(clip.sample_rate)
    if sr not in AAC_SAMPLE_RATES:
        log.warning("%s: AAC cannot carry %d Hz; resampling the audio to 48000 Hz", path, sr)
        audio = resample(audio, sr, 48_000)
        sr = 48_000
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if not np.isfinite(peak):
        raise MediaFormatError(f"cannot write {path}: the audio contains NaN or infinite samples")
    if peak > 1.0:
        log.warning("%s: audio peak %.3f exceeds 1.0; clipping to [-1, 1]", path, peak)
        audio = np.clip(audio, -1.0, 1.0)
    audio = np.ascontiguousarray(audio, dtype=np.float32)

    rate = _fps_fraction(clip.fps)
    with sfs.atomic_path(path) as tmp:
        try:
            with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
                vs = container.add_stream("libx264", rate=rate)
                vs.width, vs.height = w, h
                vs.pix_fmt = "yuv420p"
                # Reproducible encoding: with its defaults x264 (through PyAV) gave a different
                # bitstream for the same frames in ~1 of 3 encodes (pixels up to 28 levels apart),
                # so rewards scored on the mp4 drifted between runs. One x264 thread, no rc lookahead
                # and no mb-tree make it byte-identical, also with several encodes in threads
                # (tests/test_media.py). A plain "threads" option was not enough.
                vs.options = {"crf": str(int(crf)), "preset": "medium",
                              "x264-params": "threads=1:rc-lookahead=0:mbtree=0"}
                aus = container.add_stream("aac", rate=sr)
                aus.layout = "mono"
                aus.bit_rate = int(audio_bitrate)

                for i, rgb in enumerate(video):
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                    frame.pts = i
                    container.mux(vs.encode(frame))
                container.mux(vs.encode(None))

                for start in range(0, audio.shape[0], _AAC_FRAME):
                    chunk = audio[start:start + _AAC_FRAME]
                    frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                    frame.sample_rate = sr
                    frame.pts = start
                    container.mux(aus.encode(frame))
                container.mux(aus.encode(None))
        except av.error.FFmpegError as exc:
            raise MediaError(f"cannot write {path}: encoding failed: {exc}") from exc
    return path


#: Frame intervals within this fraction of the median interval count as constant (timestamps are
#: rounded to the container's time base, e.g. 1/12800 s or 1 ms).
VFR_TOLERANCE = 0.1


def _stamp(frame: Any) -> tuple[float, float]:
    """(presentation time in s, duration in s) of a decoded frame; NaN where the file has none."""
    t = np.nan if frame.time is None else float(frame.time)
    dur = getattr(frame, "duration", None)
    d = np.nan if dur in (None, 0) or frame.time_base is None else float(dur * frame.time_base)
    return t, d


def _frame_times(stamps: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(stamps, dtype=np.float64).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def constant_rate(images: list[np.ndarray], times: np.ndarray, nominal_fps: Any, path: Path | str,
                  durations: np.ndarray | None = None) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Frames at a constant rate from frames with presentation ``times`` (s): ``(video, fps, info)``.

    ``nominal_fps``: the stream's declared rate, or several (e.g. FFmpeg's guessed, average and base
    rates), best first. The output rate is the first of them within VFR_TOLERANCE of the median frame
    interval, else 1 / median (a fraction with denominator <= 1001). Constant-rate input (every
    interval within VFR_TOLERANCE of the median) is returned as is. Variable-rate input (phone and
    screen recordings) is resampled by timestamp to that rate, as FFmpeg's ``fps`` filter does: each
    source frame goes to the output slot nearest its timestamp (round((t - t0) * fps)), and output
    frame j is the latest frame whose slot is <= j (a frame is repeated until the next one; of two
    frames in one slot the later wins), up to the last frame's end (its own duration, or the
    median interval). ``info`` says what was done
    (``{"vfr": bool, "source_frames": n, ...}``). Frames without timestamps are taken as constant-rate.
    """
    n = len(images)
    info: dict[str, Any] = {"vfr": False, "source_frames": n}
    cands = [float(x) for x in (nominal_fps if isinstance(nominal_fps, (list, tuple)) else [nominal_fps])
             if x is not None and float(x) > 0]
    nominal_fps = cands[0] if cands else None
    if n == 0:
        raise MediaFormatError(f"{path}: the video stream decoded to no frames")
    t = np.asarray(times, dtype=np.float64)
    if n < 3 or not np.all(np.isfinite(t)):
        if nominal_fps is None or not nominal_fps > 0:
            raise MediaFormatError(f"{path}: cannot determine the video frame rate (no timestamps, no rate)")
        return np.stack(images), float(nominal_fps), info
    order = np.argsort(t, kind="stable")
    t = t[order]
    images = [images[i] for i in order]
    d = np.diff(t)
    if np.any(d <= 0):
        keep = np.concatenate([[True], d > 0])  # duplicate timestamps: keep the first frame of each
        images = [im for im, k in zip(images, keep) if k]
        t = t[keep]
        info["dropped_duplicate_timestamps"] = int((~keep).sum())
        d = np.diff(t)
        if d.size == 0:
            raise MediaFormatError(f"{path}: every video frame has the same timestamp")
    med = float(np.median(d))
    agree = [c for c in cands if abs(1.0 / c - med) <= VFR_TOLERANCE * med]
    fps = agree[0] if agree else float(Fraction(1.0 / med).limit_denominator(1001))
    if np.all(np.abs(d - med) <= VFR_TOLERANCE * med):
        return np.stack(images), fps, info
    last = float(durations[order][-1]) if durations is not None and np.isfinite(durations[order][-1]) else med
    span = float(t[-1] - t[0]) + last
    m = max(1, int(round(span * fps)))
    slots = np.rint((t - t[0]) * fps)  # each frame to its nearest output slot (timestamps jitter by a tick)
    idx = np.searchsorted(slots, np.arange(m), side="right") - 1
    idx = np.clip(idx, 0, len(images) - 1)
    info.update(vfr=True, fps=fps, output_frames=m, min_interval_s=float(d.min()), max_interval_s=float(d.max()))
    log.warning("%s: variable frame rate (intervals %.1f-%.1f ms); resampled by timestamp to %.3f fps "
                "(%d -> %d frames)", path, 1e3 * d.min(), 1e3 * d.max(), fps, len(images), m)
    return np.stack([images[i] for i in idx]), fps, info


def read_mp4(path: str | os.PathLike[str]) -> AVClip:
    """Read a video file with one video and one audio stream into an AVClip.

    Video: every decoded frame as uint8 RGB, placed by its stored timestamp: a constant-rate stream
    is returned frame by frame; a variable-frame-rate stream (phone and screen recordings) is
    resampled by timestamp to a constant rate (see :func:`constant_rate`; logged, and recorded in
    ``meta["vfr"]``). Audio: float32, downmixed to mono by averaging channels, at the stream's sample
    rate; placed by its timestamps too: sample 0 is the time of the first video frame (audio that
    starts later is preceded by silence for that time, audio that starts earlier loses its
    lead-in), a gap inside the stream (a later frame's timestamp beyond the samples so far) is
    filled with silence, and the audio is trimmed to the stream's declared duration (see the notes
    above). ``meta["path"]`` holds the source path. Raises MediaFileNotFoundError for a missing file
    and MediaFormatError for an unreadable file, one without a video or audio stream, or a stream
    that decodes to nothing.
    """
    if sfs.is_remote(path):  # object store: download to a temp file (one GET), read that
        try:
            with sfs.local_copy(path) as local:
                clip = read_mp4(local)
        except FileNotFoundError:
            raise MediaFileNotFoundError(f"media file not found: {path}") from None
        clip.meta["path"] = str(path)
        return clip
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaFileNotFoundError(f"media file not found: {path}")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise MediaFormatError(f"cannot read {path} as a media file: {exc}") from exc
    try:
        if not container.streams.video:
            raise MediaFormatError(f"{path} has no video stream")
        if not container.streams.audio:
            raise MediaFormatError(f"{path} has no audio stream (avits scores video with sound)")
        vs = container.streams.video[0]
        aus = container.streams.audio[0]
        sr = int(aus.rate or aus.codec_context.sample_rate or 0)
        if sr <= 0:
            raise MediaFormatError(f"{path}: audio stream has no sample rate")
        resampler = av.AudioResampler(format="fltp", rate=sr)

        stamps: list[tuple[float, float]] = []
        images: list[np.ndarray] = []
        chunks: list[np.ndarray] = []
        n_audio = 0
        audio_t0: float | None = None
        gaps = 0
        try:
            for packet in container.demux(vs, aus):
                for frame in packet.decode():
                    if packet.stream.type == "video":
                        stamps.append(_stamp(frame))
                        images.append(frame.to_ndarray(format="rgb24"))
                        continue
                    if frame.time is not None:
                        if audio_t0 is None:
                            audio_t0 = float(frame.time)
                        gap = int(round((float(frame.time) - audio_t0) * sr)) - n_audio
                        if gap > max(1, sr // 1000):  # more than 1 ms missing: silence in its place
                            chunks.append(np.zeros(gap, np.float32))
                            n_audio += gap
                            gaps += 1
                    elif audio_t0 is None:
                        audio_t0 = 0.0
                    for out in resampler.resample(frame):
                        x = out.to_ndarray().mean(axis=0)
                        chunks.append(x)
                        n_audio += x.shape[0]
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
        except av.error.FFmpegError as exc:
            raise MediaFormatError(f"cannot decode {path}: {exc}") from exc

        if not images:
            raise MediaFormatError(f"{path}: the video stream decoded to no frames")
        if not chunks or sum(c.shape[0] for c in chunks) == 0:
            raise MediaFormatError(f"{path}: the audio stream decoded to no samples")

        nominal = [vs.average_rate, vs.guessed_rate, vs.base_rate]  # declared rates, best first
        times, durs = _frame_times(stamps)
        video_t0 = float(np.nanmin(times)) if np.any(np.isfinite(times)) else 0.0
        video, fps, vinfo = constant_rate(images, times, nominal, path, durs)
        del images

        audio = np.concatenate(chunks).astype(np.float32, copy=False)
        if aus.duration is not None and aus.time_base is not None:
            declared = int(round(float(aus.duration * aus.time_base) * sr))
            if 0 < declared < audio.shape[0]:
                audio = audio[:declared]  # drop the encoder's end padding
        offset = int(round(((audio_t0 or 0.0) - video_t0) * sr))
        if offset > 0:  # audio starts after the first frame: pad silence in front
            audio = np.concatenate([np.zeros(offset, np.float32), audio])
        elif offset < 0:  # audio starts before the first frame: drop the lead-in
            audio = audio[-offset:]
        if offset:
            log.info("%s: audio starts %+d samples from the first video frame; compensated", path, offset)
        if gaps:
            log.warning("%s: %d gap(s) in the audio timestamps filled with silence", path, gaps)
        if audio.shape[0] == 0:
            raise MediaFormatError(f"{path}: no audio left after aligning it to the first video frame "
                                   f"(the audio ends {-offset / sr:.3f} s before the video starts)")
        meta: dict[str, Any] = {"path": str(path), "audio_start_s": offset / sr}
        if vinfo["vfr"]:
            meta["vfr"] = vinfo
        return AVClip(video=video, fps=fps, audio=audio, sample_rate=sr, meta=meta)
    finally:
        container.close()


def write_wav(audio: np.ndarray, sample_rate: int, path: str | os.PathLike[str], *,
              subtype: str = "FLOAT") -> Path:
    """Write mono float audio to a wav file (32-bit float by default; ``subtype`` as soundfile names it).

    Atomic (temp file + os.replace). Raises MediaFormatError for non-mono or non-finite audio.
    """
    import soundfile as sf

    path = Path(path)
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise MediaFormatError(f"cannot write {path}: audio must be mono (N,), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise MediaFormatError(f"cannot write {path}: the audio contains NaN or infinite samples")
    if int(sample_rate) <= 0:
        raise MediaFormatError(f"cannot write {path}: sample_rate must be > 0, got {sample_rate}")
    if not path.parent.is_dir():
        raise MediaFileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    with sfs.atomic_path(path) as tmp:
        sf.write(str(tmp), a, int(sample_rate), subtype=subtype, format="WAV")
    return path


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read an audio file (wav, flac, ogg: whatever libsndfile reads) as float32 mono (channels averaged) and its rate."""
    if sfs.is_remote(path):  # one GET, no HEAD first (as read_mp4)
        try:
            with sfs.local_copy(path) as local:
                return read_wav(local)
        except FileNotFoundError:
            raise MediaFileNotFoundError(f"audio file not found: {path}") from None
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise MediaFileNotFoundError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise MediaFormatError(f"cannot read {path} as audio: {exc}") from exc
    return data.mean(axis=1).astype(np.float32, copy=False), int(sr)


def resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Resample mono audio from ``sr_from`` to ``sr_to`` Hz; returns float32 of length ceil(N * sr_to / sr_from).

    Polyphase FIR resampling (scipy.signal.resample_poly, Kaiser window beta 5) with up/down the
    exact reduced ratio of the two integer rates (e.g. 44100 -> 16000 is up 160, down 441); a
    non-integer rate is approximated by a fraction with denominator <= 1000.
    """
    from scipy.signal import resample_poly

    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"resample: audio must be mono (N,), got shape {a.shape}")
    if sr_from <= 0 or sr_to <= 0:
        raise ValueError(f"resample: sample rates must be > 0, got {sr_from} -> {sr_to}")
    if sr_from == sr_to:
        return a.copy()
    if float(sr_from).is_integer() and float(sr_to).is_integer():
        ratio = Fraction(int(sr_to), int(sr_from))
    else:
        ratio = Fraction(sr_to / sr_from).limit_denominator(1000)
    out = resample_poly(a, ratio.numerator, ratio.denominator)
    return np.asarray(out, dtype=np.float32)


class _VariableRate(Exception):
    """decord found a variable frame rate: read_video takes the PyAV path, which resamples by timestamp."""


def read_video(path: str | os.PathLike[str], *, backend: str = "auto") -> tuple[np.ndarray, float]:
    """Only the video track of a file: ``(frames uint8 (T, H, W, 3) RGB, fps)``. No audio needed.

    ``backend``: ``"decord"`` (batched decoding, fast on long real videos; the x86-64 wheels only),
    ``"pyav"``, or ``"auto"`` (decord when importable, else PyAV). Frames are placed by their
    timestamps: a variable-frame-rate file is resampled to a constant rate as in :func:`read_mp4`
    (decord detects it and hands the file to PyAV). Used for reference videos (FVD),
    which need not carry sound. Both backends decode with FFmpeg; their RGB conversions may differ
    by a few levels per pixel (measured in tests/test_media.py).
    """
    if sfs.is_remote(path):  # one GET, no HEAD first (as read_mp4)
        try:
            with sfs.local_copy(path) as local:
                return read_video(local, backend=backend)
        except FileNotFoundError:
            raise MediaFileNotFoundError(f"media file not found: {path}") from None
    path = Path(path)
    if not path.is_file():
        raise MediaFileNotFoundError(f"media file not found: {path}")
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"read_video backend must be auto, decord or pyav, got {backend!r}")
    if backend in ("auto", "decord"):
        try:
            import decord
        except ImportError:
            if backend == "decord":
                raise MediaFormatError("decord is not installed (it has x86-64 wheels only); use backend='pyav'") from None
        else:
            try:
                vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
                n = len(vr)
                stamps = np.asarray(vr.get_frame_timestamp(list(range(n))), dtype=np.float64) if n else None
                if stamps is not None and n >= 3:
                    d = np.diff(stamps[:, 0])
                    med = float(np.median(d))
                    if not (med > 0 and np.all(np.abs(d - med) <= VFR_TOLERANCE * med)):
                        raise _VariableRate  # resampled by timestamp on the PyAV path
                frames = vr.get_batch(list(range(n))).asnumpy()
                return np.ascontiguousarray(frames, dtype=np.uint8), float(vr.get_avg_fps())
            except _VariableRate:
                log.debug("%s: variable frame rate; reading it with PyAV", path)
            except decord.DECORDError as exc:
                # decord 0.6 fails on some frame widths (it pads rows to an alignment); "auto" then
                # falls back to PyAV, an explicit "decord" says so.
                if backend == "decord":
                    raise MediaFormatError(f"cannot decode {path} with decord: {exc}") from exc
                log.debug("decord failed on %s (%s); reading it with PyAV", path, exc)
    import av

    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise MediaFormatError(f"{path} has no video stream")
            vs = container.streams.video[0]
            frames, stamps = [], []
            for f in container.decode(vs):
                frames.append(f.to_ndarray(format="rgb24"))
                stamps.append(_stamp(f))
            fps_q, guessed, base = vs.average_rate, vs.guessed_rate, vs.base_rate
            times, durs = _frame_times(stamps)
    except av.error.FFmpegError as exc:
        raise MediaFormatError(f"cannot read {path} as a video file: {exc}") from exc
    if not frames:
        raise MediaFormatError(f"{path}: the video stream decoded to no frames")
    video, fps, _ = constant_rate(frames, times, [fps_q, guessed, base], path, durs)
    return video.astype(np.uint8, copy=False), fps
