"""CLAP text-audio score: cosine of the CLAP text embedding and the CLAP audio embedding.

What it computes, per (clip, prompt)
    cos(E_text(text), E_audio(audio)) in [-1, 1], higher is better, where E_* are the projected
    embeddings of a transformers ``ClapModel`` (L2-normalised here, whatever the transformers
    version returns). This is the raw cosine: JavisBench and most papers report the same number
    (sometimes ×100); nothing is clamped.

Input handling (decisions)
    - ``text`` is ``prompt.text``, or ``prompt.meta[text_field]`` (e.g. JavisBench's ``audio_text``).
    - Audio: the clip's mono float32 track at its true ``clip.sample_rate`` is resampled (polyphase)
      to the feature extractor's ``sampling_rate`` (48 kHz for LAION CLAP), then clipped to [-1, 1].
      Empty or non-finite audio is an error for that clip (recorded, never a silent 0.0).
    - Determinism: ``ClapFeatureExtractor`` draws random crops from numpy's global RNG. For a
      non-fusion model ("rand_trunc") audio longer than ``max_length_s`` is centre-cropped here, so
      no randomness is used. For a fusion model the extractor runs one clip at a time under a fixed
      seed (then the global RNG state is restored), so a score does not depend on the batch it was
      computed in or on earlier calls. Short audio is "repeatpad"-ed by the extractor as in training.
    - Text longer than the text tower's positions is truncated.

Protocol ``javisbench`` (JavisBench's evaluator, ``calc_clap_score``; ``protocol="javisbench"``)
    * text: the CSV's ``audio_text`` column when the prompt set has one, else ``text`` (the evaluator's
      ``df.get('audio_text', df['text'])``); ``text_field`` cannot be changed;
    * audio resampled to the extractor's rate with librosa's soxr 'soxr_hq', as the evaluator's
      ``librosa.load(wav, sr=48000)`` does (ours: the polyphase resampler), no clipping to [-1, 1];
    * the same model, extractor defaults and cosine. Remaining difference: audio longer than the
      extractor's window (10 s) is cropped at a RANDOM offset by the evaluator (``rand_trunc`` with
      numpy's global RNG: not reproducible even there); we keep the deterministic centre crop.
    The evaluator reads the ``.wav`` it is given (``avits evaluate --protocol javisbench`` reads the
    sibling wav of each mp4 when there is one). The evaluator uses ``laion/clap-htsat-unfused``.

Weights: ``model_path`` is a local ``save_pretrained`` folder or a hub id resolved only from the
local Hugging Face cache (see :mod:`avits_core.verifiers.hf`); the model loads once per process per
(path, device, dtype). transformers is imported on first use only.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers import hf
from avits_core.verifiers.base import MinInput

log = logging.getLogger(__name__)

DEFAULT_CLAP = "laion/clap-htsat-unfused"
_RNG_LOCK = threading.Lock()
_FUSION_SEED = 0


def _checked_audio(audio: np.ndarray, what: str) -> np.ndarray:
    """``audio`` as float32; ValueError when it is empty or not finite."""
    a = np.asarray(audio, dtype=np.float32)
    if a.size == 0:
        raise ValueError(f"{what}: the clip has no audio samples")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: the audio contains NaN or infinite samples")
    return a


def _clip_audio(audio: np.ndarray, sr_in: int, sr_out: int, what: str) -> np.ndarray:
    a = hf.resample_audio(_checked_audio(audio, what), sr_in, sr_out)
    return np.clip(a, -1.0, 1.0).astype(np.float32)


def _javisbench_audio(audio: np.ndarray, sr_in: int, sr_out: int, what: str) -> np.ndarray:
    return hf.resample_javisbench(_checked_audio(audio, what), sr_in, sr_out)


class ClapScore(hf.HFModelVerifier):
    """CLAP text-audio cosine in [-1, 1] (higher = the audio matches the text better)."""

    name = "clap"
    version = "1"
    #: Audio only. The extractor repeat-pads short audio to fill its window (``max_length_s``, 10 s
    #: for LAION CLAP): audio shorter than a tenth of the window would be tiled more than 10 times
    #: into a drone that is not the sound, so the minimum is max_length_s / 10 (1 s for LAION CLAP;
    #: read from the model folder's preprocessor_config.json by ``check_input``). 8 kHz: telephone
    #: band, the lowest rate accepted (resampled to the model's 48 kHz, empty above 4 kHz).
    min_input = MinInput(audio_seconds=1.0, sample_rate=8000, modalities=("audio", "text"))

    def input_floor(self) -> MinInput:
        """min_input with ``audio_seconds`` = the model's max_length_s / 10 (class value when unknown)."""
        import dataclasses
        import json

        try:
            cfg = json.loads((self.resolve() / "preprocessor_config.json").read_text(encoding="utf-8"))
            window = float(cfg.get("max_length_s", 10))
        except Exception:  # noqa: BLE001 - no local config yet: the class value (LAION CLAP's)
            return self.min_input
        return dataclasses.replace(self.min_input, audio_seconds=window / 10.0)

    def check_input(self, clip: AVClip) -> str | None:
        """The input floor (see ``min_input``) and digital silence (nothing to compare with the text)."""
        from avits_core.verifiers.imagebind import silence_reason

        short = self.input_floor().shortfall(clip)
        if short:
            return f"input too small for {self.name}: {short}"
        return silence_reason(self.name, clip)
    default_repo = DEFAULT_CLAP
    model_label = "CLAP (clap verifier)"
    cache_kind = "ClapModel"

    def __init__(
        self,
        model_path: str = DEFAULT_CLAP,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        text_field: str = "text",
        cache_dir: str | None = None,
        protocol: str = "avits",
    ) -> None:
        super().__init__(model_path, device, dtype, batch_size, text_field, cache_dir)
        self.protocol = hf.check_protocol("clap", protocol, text_field)
        if self.protocol == "javisbench":
            self.text_field = hf.JAVISBENCH_AUDIO_TEXT

    identity_params = ("protocol",)

    # -- weights -------------------------------------------------------------------------------
    def _load(self, path: Path) -> tuple[Any, Any, Any]:
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        model = ClapModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        model = model.to(device=self.device, dtype=hf.parse_dtype(self.dtype)).eval()
        fe = ClapFeatureExtractor.from_pretrained(str(path), local_files_only=True)
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return model, fe, tok

    @property
    def sampling_rate(self) -> int:
        return int(self._components()[1].sampling_rate)

    # -- embeddings ----------------------------------------------------------------------------
    def _text_max_len(self, model: Any, tok: Any) -> int:
        cfg = model.config.text_config
        pad = int(getattr(cfg, "pad_token_id", 0) or 0)
        return min(int(tok.model_max_length), int(cfg.max_position_embeddings) - pad - 1)

    def _features(self, waves: Sequence[np.ndarray]) -> dict[str, Any]:
        """Feature-extractor output for waves already at the extractor's rate (deterministic)."""
        import torch

        _, fe, _ = self._components()
        sr = int(fe.sampling_rate)
        if getattr(fe, "truncation", None) == "fusion":
            parts = []
            with _RNG_LOCK:
                state = np.random.get_state()
                try:
                    for w in waves:
                        np.random.seed(_FUSION_SEED)
                        parts.append(fe([w], sampling_rate=sr, return_tensors="pt"))
                finally:
                    np.random.set_state(state)
            return {k: torch.cat([p[k] for p in parts]) for k in parts[0].keys()}
        n_max = int(fe.nb_max_samples)
        cropped = []
        for w in waves:
            if w.shape[0] > n_max:
                s = (w.shape[0] - n_max) // 2
                w = w[s : s + n_max]
            cropped.append(w)
        return dict(fe(cropped, sampling_rate=sr, return_tensors="pt"))

    def embed_audio(self, waves: Sequence[np.ndarray], sample_rates: Sequence[int]) -> np.ndarray:
        """L2-normalised CLAP audio embeddings, float64 (len(waves), D); each wave at its own rate."""
        import torch

        model, fe, _ = self._components()
        sr = int(fe.sampling_rate)
        if getattr(self, "protocol", "avits") == "javisbench":
            ready = [_javisbench_audio(w, int(r), sr, f"clap audio {i}") for i, (w, r) in enumerate(zip(waves, sample_rates))]
        else:
            ready = [_clip_audio(w, int(r), sr, f"clap audio {i}") for i, (w, r) in enumerate(zip(waves, sample_rates))]
        out = []
        dt = hf.parse_dtype(self.dtype)
        for i in range(0, len(ready), self.batch_size):
            feats = self._features(ready[i : i + self.batch_size])
            kw: dict[str, Any] = {"input_features": feats["input_features"].to(self.device, dt)}
            if "is_longer" in feats:
                kw["is_longer"] = feats["is_longer"].to(self.device)
            with torch.inference_mode():
                f = hf.features_of(model.get_audio_features(**kw))
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))

    # -- scores --------------------------------------------------------------------------------
    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        t = self.prompt_embeddings(prompts)
        a = self.embed_audio([c.audio for c in clips], [c.sample_rate for c in clips])
        return [float(np.dot(t[i], a[i])) for i in range(len(t))]
