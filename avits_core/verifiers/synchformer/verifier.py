"""The ``desync`` verifier: Synchformer's predicted audio-video offset, in seconds (lower is better)."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avits_core.errors import ConfigError
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers import hf
from avits_core.verifiers.base import MinInput, Verifier
from avits_core.verifiers.synchformer.audio import audio_input, resampled_length
from avits_core.verifiers.synchformer.video import fps_resample_indices, video_input
from avits_core.verifiers.synchformer.windows import (
    DEFAULT_MAX_LENGTH,
    POLICIES,
    SEGMENT_SECONDS,
    SYNC_SR,
    WINDOW_SECONDS,
    ClipTooShortError,
    WindowPlan,
    audio_segments,
    plan_windows,
    video_segments,
)

log = logging.getLogger(__name__)

DEFAULT_SYNCHFORMER_PATH = ".checkpoints/synchformer_state_dict.pth"


def _min_input(policy: str, max_length_s: float | None) -> MinInput:
    if policy == "av_benchmark":
        s = max(WINDOW_SECONDS, max_length_s or 0.0)
    else:
        s = SEGMENT_SECONDS
    return MinInput(video_seconds=s, audio_seconds=s, modalities=("video", "audio"))


class DeSync(Verifier):
    """DeSync: mean |audio-video offset| in seconds that Synchformer predicts, in [0, 2], lower is better.

    Input: a clip's video (any fps and size; resampled to 25 fps, resized and centre-cropped to
    224 x 224) and mono audio (any rate; resampled to 16 kHz). The clip is cut into 0.64 s segments
    (stride 0.32 s); the ``policy`` decides which stretch is read and which windows of 14 segments
    (4.8 s) the sync head scores (see :mod:`~avits_core.verifiers.synchformer.windows`):

    - ``av_benchmark`` (default): the first and the last 14 segments of the first ``max_length_s``
      seconds (default ``None``: the whole clip); needs >= 4.8 s of video and audio (and
      >= ``max_length_s`` when set), shorter clips are error rows;
    - ``javisbench``: both tracks cut or zero-padded to ``max_length_s`` (default 4.0 s), consecutive
      windows of 14 segments, a short first window tiled, a short last one replaced by the last 14;
      needs >= 0.64 s of real video and audio.

    Per window the predicted offset is the class with the highest logit among the 21 offsets -2.0,
    -1.8, ..., +2.0 s; the value is the mean of |offset| over the clip's windows (float32 class
    values, averaged in float64). ``score_details`` gives, per clip, the signed offset of every
    window (``offsets_s``), the top-class probability (``p_top``) and the probability of the 0 s
    class (``p_sync``) per window, and ``mean_offset_s`` (signed).

    Params: ``policy``, ``max_length_s`` (both in ``cache_version``, so every rewards row records
    them), ``model_path`` (the published ``synchformer_state_dict.pth``, a local file; never
    downloaded), ``device``, ``dtype``, ``batch_size`` (clips per forward), ``segment_batch``
    (segments per encoder forward).
    """

    name = "desync"
    version = "1"
    higher_is_better = False
    value_range = (0.0, 2.0)
    needs_weights = True
    #: The class-level minimum is the default policy's (av_benchmark: one 4.8 s window); an instance
    #: sets its own policy's minimum in ``__init__`` and ``check_input`` also checks the plan.
    min_input = _min_input("av_benchmark", None)
    identity_params = ("policy", "max_length_s")

    def __init__(
        self,
        policy: str = "av_benchmark",
        max_length_s: float | None = None,
        model_path: str = DEFAULT_SYNCHFORMER_PATH,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 4,
        segment_batch: int = 32,
    ) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"desync: policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if max_length_s is None:
            max_length_s = DEFAULT_MAX_LENGTH[policy]
        if max_length_s is not None:
            if isinstance(max_length_s, bool) or not isinstance(max_length_s, (int, float)) \
                    or not math.isfinite(max_length_s) or max_length_s <= 0:
                raise ConfigError(f"desync: max_length_s must be a positive number of seconds, got {max_length_s!r}")
            max_length_s = float(max_length_s)
            if policy == "av_benchmark" and max_length_s + 1e-9 < WINDOW_SECONDS:
                raise ConfigError(f"desync: policy av_benchmark reads 14 segments ({WINDOW_SECONDS:g} s); "
                                  f"max_length_s={max_length_s:g} is shorter")
            if policy == "javisbench":
                nv, na = video_segments(int(25.0 * max_length_s)), audio_segments(int(SYNC_SR * max_length_s))
                if nv < 1 or nv != na:
                    raise ConfigError(f"desync: max_length_s={max_length_s:g} gives {nv} video and {na} audio "
                                      f"segments; policy javisbench needs >= {SEGMENT_SECONDS:g} s and equal counts")
        self.policy = policy
        self.max_length_s = max_length_s
        self.model_path = str(model_path)
        self.device = hf.parse_device(device)
        self.dtype = hf.dtype_name(dtype)
        self.batch_size = hf.check_batch_size(batch_size)
        self.segment_batch = hf.check_batch_size(segment_batch, "segment_batch")
        self.min_input = _min_input(policy, max_length_s)  # type: ignore[misc]
        self._last = threading.local()  # details of the last score_clips call, per thread

    # -- identity ----------------------------------------------------------------------------------
    def identity_suffix(self) -> str:
        """Always names the policy and the evaluated length (``+policy=javisbench,max_length_s=4.0``;
        ``max_length_s`` is left out for av_benchmark's whole-clip default)."""
        parts = [f"policy={self.policy}"]
        if self.max_length_s is not None:
            parts.append(f"max_length_s={self.max_length_s:g}")
        return "+" + ",".join(parts)

    # -- weights -----------------------------------------------------------------------------------
    def resolve(self) -> Path:
        return hf.resolve_weights_file(
            self.model_path, what="DeSync (Synchformer)",
            hint=f"download synchformer_state_dict.pth (950 MB, MMAudio release v0.1) with "
                 f"`wget -P {Path(self.model_path).parent or '.'} "
                 f"https://github.com/hkchengrex/MMAudio/releases/download/v0.1/synchformer_state_dict.pth` "
                 f"and pass model_path=<that file>",
        )

    def check_ready(self) -> None:
        """Raise MissingWeightsError naming the weights file and where to get it."""
        self.resolve()

    def _model(self) -> Any:
        from avits_core.verifiers.synchformer.model import load_synchformer

        path = self.resolve()
        return hf.cached("synchformer", path.resolve(), self.device, self.dtype,
                         lambda: load_synchformer(path, self.device, hf.parse_dtype(self.dtype)))

    # -- inputs ------------------------------------------------------------------------------------
    def plan(self, clip: AVClip) -> WindowPlan:
        """The window plan of ``clip`` under this verifier's policy (raises ClipTooShortError)."""
        n25 = int(fps_resample_indices(clip.num_frames, clip.fps).shape[0])
        n16 = resampled_length(int(clip.audio.shape[0]), int(clip.sample_rate), SYNC_SR)
        return plan_windows(self.policy, n25, n16, self.max_length_s)

    def check_input(self, clip: AVClip) -> str | None:
        msg = super().check_input(clip)
        if msg:
            return f"{msg} (policy {self.policy})"
        try:
            self.plan(clip)
        except ClipTooShortError as exc:
            return f"input too small for {self.name}: {exc}"
        return None

    # -- scoring -----------------------------------------------------------------------------------
    def window_logits(self, clips: Sequence[AVClip]) -> list[tuple[WindowPlan, Any]]:
        """Per clip (plan, float32 logits (windows, classes)). Segment features are computed once per
        clip and gathered into the windows (tiling repeats features, as upstream)."""
        import torch

        model = self._model()
        size, n_mels = model.cfg.img_size, model.cfg.n_mels
        dt = next(model.parameters()).dtype
        out: list[tuple[WindowPlan, Any]] = []
        for start in range(0, len(clips), self.batch_size):
            batch = clips[start:start + self.batch_size]
            plans, vids, auds = [], [], []
            for c in batch:
                p = self.plan(c)
                plans.append(p)
                vids.append(video_input(c.video, c.fps, p.video_frames, size))
                wave = hf.resample_audio(c.audio, int(c.sample_rate), SYNC_SR)
                auds.append(audio_input(wave, p.audio_samples, n_mels))
            with torch.inference_mode():
                vf = self._encode(model.video_features, torch.cat(vids), dt)
                af = self._encode(model.audio_features, torch.cat(auds), dt)
                wv, wa, owner = [], [], []
                ov = oa = 0
                for i, (p, v, a) in enumerate(zip(plans, vids, auds)):
                    for vi, ai in p.windows:
                        wv.append(vf[ov + torch.tensor(vi)])
                        wa.append(af[oa + torch.tensor(ai)])
                        owner.append(i)
                    ov += v.shape[0]
                    oa += a.shape[0]
                logits = model.logits(torch.stack(wv), torch.stack(wa)).float().cpu()
            own = torch.tensor(owner)
            out.extend((p, logits[own == i]) for i, p in enumerate(plans))
        return out

    def _encode(self, fn: Any, x: Any, dtype: Any) -> Any:
        import torch

        parts = [fn(x[i:i + self.segment_batch].to(self.device, dtype)) for i in range(0, x.shape[0], self.segment_batch)]
        return torch.cat(parts)

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        import torch

        grid = None
        values, details = [], []
        for plan, logits in self.window_logits(clips):
            if grid is None:
                grid = self._model().cfg.offsets()
            top = logits.argmax(dim=-1)
            probs = torch.softmax(logits.double(), dim=-1)
            offsets = [float(grid[t]) for t in top]
            values.append(float(np.mean(np.abs(np.asarray(offsets, dtype=np.float64)))))
            zero = int(torch.argmin(grid.abs()))
            details.append({
                "offsets_s": offsets,
                "mean_offset_s": float(np.mean(offsets)),
                "p_top": [float(probs[w, t]) for w, t in enumerate(top)],
                "p_sync": [float(probs[w, zero]) for w in range(probs.shape[0])],
                "windows": len(offsets),
                "segments": plan.video_segments,
            })
        self._last.details = details
        return values

    def score_details(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[dict[str, Any]] | None:
        return getattr(self._last, "details", None)

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        return self.score_clips([clip], [prompt])[0]
