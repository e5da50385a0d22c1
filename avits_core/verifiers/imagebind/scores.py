"""The ImageBind-family formulas (cosines, JavisScore windows) and the five verifiers: ib_tv, ib_ta, ib_av,
avh_score, javis_score (definitions in the package docstring)."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from avits_core.errors import ConfigError
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers import hf
from avits_core.verifiers.base import MinInput, Verifier
from avits_core.verifiers.clip import sample_frames, uniform_frame_indices
from avits_core.verifiers.imagebind.backbone import ImageBindBackbone, make_backbone


# --------------------------------------------------------------------------------------------------
# Formulas
# --------------------------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; a zero row becomes NaN (so its score is an error, never 0)."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, x / np.where(n > 0, n, 1.0), np.nan)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (B, D) arrays: (B,)."""
    return np.sum(_unit(a) * _unit(b), axis=-1)


def javis_windows(duration: float, window_s: float = 2.0, overlap_s: float = 1.5) -> list[tuple[float, float]]:
    """Sliding windows [start, end) of ``window_s`` seconds, step ``window_s - overlap_s``, that fit
    in ``duration``; one window [0, duration) when the clip is shorter than a window."""
    if window_s <= 0 or overlap_s < 0 or overlap_s >= window_s:
        raise ConfigError(f"need window_s > overlap_s >= 0, got window_s={window_s}, overlap_s={overlap_s}")
    if not duration > 0:
        raise ValueError(f"clip duration must be > 0, got {duration}")
    if duration <= window_s + 1e-9:
        return [(0.0, float(duration))]
    step = window_s - overlap_s
    n = int(math.floor((duration - window_s) / step + 1e-9)) + 1
    return [(i * step, i * step + window_s) for i in range(n)]


def lowest_fraction_mean(values: np.ndarray, fraction: float = 0.4) -> float:
    """Mean of the k = max(1, floor(fraction * n)) smallest values."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size == 0:
        raise ValueError("no values")
    k = max(1, int(math.floor(fraction * v.size + 1e-9)))
    return float(v[:k].mean())


# --------------------------------------------------------------------------------------------------
# Verifiers
# --------------------------------------------------------------------------------------------------
#: Minimum input of the ImageBind towers. Audio: ImageBind cuts 2 s clips into 204 Kaldi fbank
#: frames (25 ms windows every 10 ms) and zero-pads the rest, so 23 ms of audio is no frame at all
#: and anything under 1 s is more than half padding: at least 1 s (98+ real frames of 204), at 8 kHz
#: or more. Video: the vision stem is a 2x14x14 Conv3d over frame pairs, so 2 frames (one frame
#: would be duplicated into a still "clip"); single-frame scores (avh_score, javis_score) need 1.
#: Pictures of at least 32x32 (smaller ones are upscaled blur at 224 px).
IB_AUDIO_SECONDS = 1.0
#: JavisBench's evaluator resamples audio to 16 kHz before cutting JavisScore windows.
JAVISBENCH_SR = 16000
IB_MIN_SIDE = 32


def silence_reason(name: str, clip: AVClip) -> str | None:
    """An error message when the clip's audio is digital silence (peak < 1e-4, -80 dBFS), else None:
    an embedding of silence says nothing about the text or the picture."""
    from avits_core.verifiers.features import SILENCE_PEAK

    a = np.asarray(clip.audio)
    peak = float(np.max(np.abs(a))) if a.size else 0.0
    if not peak >= SILENCE_PEAK:  # NaN counts as unmeasurable too
        return f"{name}: audio is silent (peak amplitude {peak:.2e} < {SILENCE_PEAK:g})"
    return None


class _EmbeddingVerifier(Verifier):
    value_range = (-1.0, 1.0)
    higher_is_better = True
    needs_weights = True

    def input_floor(self) -> tuple[MinInput, bool]:
        """(the smallest measurable clip, whether digital silence is refused) for this backbone.

        ImageBind: the class ``min_input`` (its windowing, see IB_AUDIO_SECONDS) and silence refused.
        A backbone object with its own ``min_input`` (TinyBackbone: one 25 ms fbank frame): that,
        with the verifier's modalities, and silence refused. Any other object (designed vectors in
        tests): no floor beyond a non-empty clip, silence allowed."""
        import dataclasses

        if isinstance(self.backbone, ImageBindBackbone):
            return self.min_input, True
        own = getattr(self.backbone, "min_input", None)
        if isinstance(own, MinInput):
            return dataclasses.replace(own, modalities=self.min_input.modalities), True
        return MinInput(modalities=self.min_input.modalities), False

    def check_input(self, clip: AVClip) -> str | None:
        """The backbone's input floor (see ``input_floor``), and digital silence where refused."""
        floor, refuse_silence = self.input_floor()
        short = floor.shortfall(clip)
        if short:
            return f"input too small for {self.name} ({self.backbone_name}): {short}"
        if refuse_silence and "audio" in floor.modalities:
            return silence_reason(self.name, clip)
        return None

    identity_params = ("protocol",)
    #: prompt column the javisbench protocol reads (the evaluator's): ``text``, or for text-audio
    #: ``audio_text`` when the prompt set has it.
    javisbench_text_field = "text"

    def __init__(self, backbone: str | Any = "imagebind", model_path: str | None = None, device: str = "cpu",
                 dtype: str = "float32", batch_size: int = 4, text_field: str = "text",
                 dim: int = 32, seed: int = 0, protocol: str = "avits") -> None:
        self.batch_size = hf.check_batch_size(batch_size)
        self.protocol = hf.check_protocol(self.name, protocol, text_field)
        self.text_field = self.javisbench_text_field if protocol == "javisbench" else str(text_field)
        self.backbone = make_backbone(backbone, model_path=model_path, device=device, dtype=dtype, dim=dim, seed=seed)

    @property
    def backbone_name(self) -> str:
        return str(getattr(self.backbone, "name", type(self.backbone).__name__))

    def check_ready(self) -> None:
        """Raise MissingWeightsError when the backbone's package or weights file is missing."""
        ready = getattr(self.backbone, "check_ready", None)
        if callable(ready):
            ready()

    def _chunks(self, fn: Callable[..., np.ndarray], *cols: Sequence[Any], size: int | None = None) -> np.ndarray:
        n = len(cols[0])
        step = size or self.batch_size
        parts = [np.asarray(fn(*[list(c[i:i + step]) for c in cols]), dtype=np.float64) for i in range(0, n, step)]
        out = np.concatenate(parts) if parts else np.zeros((0, 0))
        if out.shape[0] != n:
            raise RuntimeError(f"backbone {self.backbone_name} returned {out.shape[0]} rows for {n} inputs")
        return out

    def _text(self, prompts: Sequence[Prompt]) -> np.ndarray:
        return hf.embed_prompt_texts(lambda u: self._chunks(self.backbone.embed_text, u), prompts, self.text_field)

    def _video(self, clips: Sequence[AVClip]) -> np.ndarray:
        return self._chunks(self.backbone.embed_video, [c.video for c in clips], [c.fps for c in clips])

    def _audio(self, waves: Sequence[np.ndarray], rates: Sequence[int]) -> np.ndarray:
        for i, w in enumerate(waves):
            if np.asarray(w).size == 0:
                raise ValueError(f"{self.name}: audio {i} is empty")
            if not np.all(np.isfinite(w)):
                raise ValueError(f"{self.name}: audio {i} contains NaN or infinite samples")
        return self._chunks(self.backbone.embed_audio, waves, rates)

    def _frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return self._chunks(self.backbone.embed_frames, frames, size=self.batch_size * 8)

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        return self.score_clips([clip], [prompt])[0]


class IBTextVideo(_EmbeddingVerifier):
    """ImageBind text-video cosine in [-1, 1]: cos(E_text(text), E_video(video))."""

    name = "ib_tv"
    version = "1"
    min_input = MinInput(frames=2, height=IB_MIN_SIDE, width=IB_MIN_SIDE, modalities=("video", "text"))

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        return cosine_rows(self._text(prompts), self._video(clips)).tolist()


class IBTextAudio(_EmbeddingVerifier):
    """ImageBind text-audio cosine in [-1, 1]: cos(E_text(text), E_audio(audio))."""

    name = "ib_ta"
    version = "1"
    javisbench_text_field = hf.JAVISBENCH_AUDIO_TEXT
    min_input = MinInput(audio_seconds=IB_AUDIO_SECONDS, sample_rate=8000, modalities=("audio", "text"))

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        a = self._audio([c.audio for c in clips], [c.sample_rate for c in clips])
        return cosine_rows(self._text(prompts), a).tolist()


class IBAudioVideo(_EmbeddingVerifier):
    """ImageBind audio-video cosine in [-1, 1]: cos(E_video(video), E_audio(audio)); ignores the prompt."""

    name = "ib_av"
    version = "1"
    min_input = MinInput(frames=2, height=IB_MIN_SIDE, width=IB_MIN_SIDE, audio_seconds=IB_AUDIO_SECONDS,
                         sample_rate=8000, modalities=("video", "audio"))

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        a = self._audio([c.audio for c in clips], [c.sample_rate for c in clips])
        return cosine_rows(self._video(clips), a).tolist()


class AVHScore(_EmbeddingVerifier):
    """AVHScore in [-1, 1]: mean over ``num_frames`` uniformly sampled frames of
    cos(E_frame(frame), E_audio(whole-clip audio)); ignores the prompt."""

    name = "avh_score"
    version = "1"
    min_input = MinInput(frames=1, height=IB_MIN_SIDE, width=IB_MIN_SIDE, audio_seconds=IB_AUDIO_SECONDS,
                         sample_rate=8000, modalities=("video", "audio"))

    def __init__(self, *args: Any, num_frames: int = 16, protocol: str = "avits", **kwargs: Any) -> None:
        super().__init__(*args, protocol=protocol, **kwargs)
        self.num_frames = hf.check_batch_size(num_frames, "num_frames")

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        a = _unit(self._audio([c.audio for c in clips], [c.sample_rate for c in clips]))
        # javisbench: every frame of the clip (the evaluator embeds each decoded frame)
        n = max(c.num_frames for c in clips) if self.protocol == "javisbench" else self.num_frames
        frames, own = sample_frames(clips, n)
        f = _unit(self._frames(frames))
        return [float(np.mean(f[own == ci] @ a[ci])) for ci in range(len(clips))]


class JavisScore(_EmbeddingVerifier):
    """JavisScore in [-1, 1]: mean over sliding windows (2.0 s, 1.5 s overlap) of the mean of the
    lowest 40% of cos(E_frame(frame in window), E_audio(window audio)); see the module docstring."""

    name = "javis_score"
    version = "1"
    #: Its windows span min(video, audio) duration: both tracks need IB_AUDIO_SECONDS.
    min_input = MinInput(frames=1, video_seconds=IB_AUDIO_SECONDS, height=IB_MIN_SIDE, width=IB_MIN_SIDE,
                         audio_seconds=IB_AUDIO_SECONDS, sample_rate=8000, modalities=("video", "audio"))

    def __init__(self, *args: Any, window_s: float = 2.0, overlap_s: float = 1.5, fraction: float = 0.4,
                 num_frames: int | None = 16, protocol: str = "avits", **kwargs: Any) -> None:
        super().__init__(*args, protocol=protocol, **kwargs)
        javis_windows(window_s, window_s, overlap_s)  # validates the window parameters
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
        self.window_s, self.overlap_s, self.fraction = float(window_s), float(overlap_s), float(fraction)
        self.num_frames = None if num_frames is None else hf.check_batch_size(num_frames, "num_frames")

    def plan(self, clip: AVClip) -> list[tuple[float, float, np.ndarray]]:
        """(start, end, frame indices) per window for one clip."""
        duration = min(clip.duration, clip.audio_duration)
        wins = javis_windows(duration, self.window_s, self.overlap_s)
        idx = (np.arange(clip.num_frames) if self.num_frames is None
               else uniform_frame_indices(clip.num_frames, self.num_frames))
        t = idx / float(clip.fps)
        out = []
        for s, e in wins:
            inside = idx[(t >= s - 1e-9) & (t < e - 1e-9)]
            if inside.size == 0:
                inside = idx[[int(np.argmin(np.abs(t - (s + e) / 2.0)))]]
            out.append((s, e, inside))
        return out

    def javisbench_plan(self, clip: AVClip) -> tuple[list[np.ndarray], list[tuple[int, int]], np.ndarray]:
        """The evaluator's windows: (frame indices per window, (start, end) sample ranges of the
        16 kHz audio per window, that audio). Frame windows of int(window_s * fps) frames, step
        int(window_s * fps) - int(overlap_s * fps), the last one moved back to end at the last frame;
        audio windows likewise in samples; both lists cut to the shorter one. A clip with at most
        one window of frames or of audio is one window: every frame and the whole audio."""
        wave = hf.resample_javisbench(clip.audio, clip.sample_rate, JAVISBENCH_SR)
        n_v, n_a = clip.num_frames, int(wave.shape[0])
        vs, vo = int(self.window_s * clip.fps), int(self.overlap_s * clip.fps)
        as_, ao = int(self.window_s * JAVISBENCH_SR), int(self.overlap_s * JAVISBENCH_SR)
        if n_v <= vs or n_a <= as_:
            return [np.arange(n_v)], [(0, n_a)], wave

        def windows(n: int, size: int, step: int) -> list[tuple[int, int]]:
            if step < 1:
                raise ValueError(f"javis_score (javisbench): window step {step} < 1 at this frame rate")
            out = []
            for start in range(0, n, step):
                start = min(start, n - size)
                out.append((start, start + size))
                if start + size >= n:
                    break
            return out

        vw, aw = windows(n_v, vs, vs - vo), windows(n_a, as_, as_ - ao)
        m = min(len(vw), len(aw))
        return [np.arange(s, e) for s, e in vw[:m]], aw[:m], wave

    def _score_javisbench(self, clips: Sequence[AVClip]) -> list[float]:
        scores = []
        for c in clips:
            fwins, awins, wave = self.javisbench_plan(c)
            f = _unit(self._frames([c.video[i] for i in range(c.num_frames)]))
            a = _unit(self._audio([wave[s:e] for s, e in awins], [JAVISBENCH_SR] * len(awins)))
            per = []
            for w, idx in enumerate(fwins):
                k = int(len(idx) * self.fraction)
                if k < 1:  # the evaluator's mean of an empty top-k is NaN
                    raise ValueError(f"javis_score (javisbench): {len(idx)} frames per window give k = 0")
                per.append(float(np.sort(f[idx] @ a[w])[:k].mean()))
            scores.append(float(np.mean(per)))
        return scores

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        if self.protocol == "javisbench":
            return self._score_javisbench(clips)
        plans = [self.plan(c) for c in clips]
        frame_keys: dict[tuple[int, int], int] = {}
        frames, waves, rates = [], [], []
        for ci, (c, plan) in enumerate(zip(clips, plans)):
            for s, e, inside in plan:
                for fi in inside:
                    if (ci, int(fi)) not in frame_keys:
                        frame_keys[(ci, int(fi))] = len(frames)
                        frames.append(c.video[fi])
                r = c.sample_rate
                waves.append(c.audio[int(round(s * r)): int(round(e * r))])
                rates.append(r)
        f = _unit(self._frames(frames))
        a = _unit(self._audio(waves, rates))
        scores, w = [], 0
        for ci, plan in enumerate(plans):
            per_window = []
            for _, _, inside in plan:
                cos = f[[frame_keys[(ci, int(fi))] for fi in inside]] @ a[w]
                per_window.append(lowest_fraction_mean(cos, self.fraction))
                w += 1
            scores.append(float(np.mean(per_window)))
        return scores
