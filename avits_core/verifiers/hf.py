"""Shared plumbing for verifiers with learned weights.

Weights resolution, device/dtype parsing and the process-wide model cache live in
:mod:`avits_core.loading` (one place for generators and verifiers); their names
(``resolve_model_dir``, ``resolve_weights_file``, ``parse_device``, ``parse_dtype``, ``cached``,
``clear_cache``, ``cache_keys``, ``looks_like_local_path``, ``download_hint``, ``hub_snapshot``,
``resolve_folder``) are re-exported here.
The model cache holds one model per ``(kind, resolved path, device, dtype)``: the registry creates a
new verifier object for every scoring task, and the model must not be reloaded each time.

Transformers verifiers (:class:`HFModelVerifier`)
    The constructor fields, weights resolution, cached loading, batched text embedding and
    prompt-text de-duplication shared by CLAP and CLIP; a subclass names its model and says how to
    load it (``_load``) and how long its text may be (``_text_max_len``).

Dtypes are given as strings (``"float32"``, ``"float16"``, ``"bfloat16"``) or torch dtypes.
Nothing in this module imports transformers; torch is imported lazily.
"""

from __future__ import annotations

import logging
from pathlib import Path
from abc import abstractmethod
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from avits_core.errors import ConfigError, MissingWeightsError
# Model loading lives in avits_core.loading; these names stay importable from here.
from avits_core.loading import (  # noqa: F401 (re-exported)
    cache_keys,
    cached,
    clear_cache,
    download_hint,
    dtype_name,
    hub_snapshot,
    looks_like_local_path,
    parse_device,
    parse_dtype,
    resolve_folder,
    resolve_model_dir,
    resolve_weights_file,
)
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import Verifier

log = logging.getLogger(__name__)


def features_of(out: Any) -> Any:
    """The embedding tensor of a transformers ``get_*_features`` call.

    transformers 4 returns the projected tensor; transformers 5 returns a BaseModelOutputWithPooling
    whose ``pooler_output`` holds it.
    """
    import torch

    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise TypeError(f"cannot find the embedding tensor in {type(out).__name__}")


def resample_audio(audio: Any, sr_in: int, sr_out: int) -> Any:
    """Resample mono float audio from ``sr_in`` to ``sr_out`` Hz (polyphase, scipy), float32.

    Uses ``avits_core.media.resample(audio, sr_in, sr_out)`` when the media module provides one,
    so that every component resamples the same way.
    """
    a = np.asarray(audio, dtype=np.float32)
    if int(sr_in) == int(sr_out):
        return a
    try:
        from avits_core import media

        fn = getattr(media, "resample", None)
    except ImportError:  # pragma: no cover
        fn = None
    if fn is not None:
        return np.asarray(fn(a, int(sr_in), int(sr_out)), dtype=np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(a, int(sr_out) // g, int(sr_in) // g).astype(np.float32)


def prompt_text(prompt: Any, field: str) -> str:
    """The text a text-conditioned verifier reads: ``prompt.text`` when ``field == "text"``, else
    ``prompt.meta[field]`` (e.g. JavisBench's ``audio_text``). A missing or empty value raises."""
    if "|" in field:  # "a|b": the first of the columns the prompt has (a protocol's fallback)
        names = field.split("|")
        have = [f for f in names if f == "text" or f in prompt.meta]
        return prompt_text(prompt, have[0] if have else names[0])
    if field == "text":
        value = prompt.text
    else:
        if field not in prompt.meta:
            raise ValueError(
                f"prompt {prompt.prompt_id!r} has no meta column {field!r} (text_field={field!r}); "
                f"columns: {sorted(prompt.meta)}"
            )
        value = prompt.meta[field]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"prompt {prompt.prompt_id!r}: {field!r} is empty or not a string: {value!r}")
    return value


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"{name} must be a positive integer, got {batch_size!r}")
    return batch_size


def embed_prompt_texts(
    embed: Callable[[list[str]], np.ndarray], prompts: Sequence[Any], field: str
) -> np.ndarray:
    """One embedding row per prompt (the text :func:`prompt_text` picks), embedding each distinct
    text once: prompts shared by several clips (Best-of-N) cost one forward pass."""
    texts = [prompt_text(p, field) for p in prompts]
    uniq = sorted(set(texts))
    e = np.asarray(embed(uniq))
    row = {s: i for i, s in enumerate(uniq)}
    return e[[row[s] for s in texts]]


def require_safetensors(path: Path, what: str) -> Path:
    """``path`` unless its weights are only pickled ``*.bin`` files: models load with
    ``from_pretrained(..., use_safetensors=True)`` and never unpickle weights, so such a folder is a
    MissingWeightsError naming the file (before any work) instead of a loader error on every clip."""
    if any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json")):
        return path
    bins = sorted(path.glob("*.bin"))
    if bins:
        raise MissingWeightsError(
            f"{what}: {str(bins[0])!r} holds pickled weights, which avits does not load (a pickle can run code); "
            f"use a folder with model.safetensors (e.g. model.save_pretrained(folder, safe_serialization=True) "
            f"where you trust the file)")
    return path


class HFModelVerifier(Verifier):
    """Base of the verifiers that run a transformers model given as a local folder or cached hub id.

    A subclass sets ``default_repo`` (hub id), ``model_label`` (the model's name in messages) and
    ``cache_kind`` (the model-cache key), and implements ``_load(path) -> (model, processor,
    tokenizer)`` and ``_text_max_len(model, tokenizer)``. Texts are embedded with the model's
    ``get_text_features``, L2-normalised, as float64.
    """

    default_repo: ClassVar[str] = ""
    model_label: ClassVar[str] = ""
    cache_kind: ClassVar[str] = ""
    higher_is_better = True
    value_range = (-1.0, 1.0)
    needs_weights = True

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        text_field: str = "text",
        cache_dir: str | None = None,
    ) -> None:
        self.model_path = str(model_path)
        self.device = parse_device(device)
        self.dtype = dtype_name(dtype)
        self.batch_size = check_batch_size(batch_size)
        self.text_field = str(text_field)
        self.cache_dir = cache_dir

    # -- weights -------------------------------------------------------------------------------
    def resolve(self) -> Path:
        return require_safetensors(resolve_model_dir(
            self.model_path, what=self.model_label, default_repo=self.default_repo, cache_dir=self.cache_dir
        ), self.model_label)

    def check_ready(self) -> None:
        """Raise MissingWeightsError if the model folder (or cached hub snapshot) is missing."""
        self.resolve()

    @abstractmethod
    def _load(self, path: Path) -> tuple[Any, Any, Any]:
        """Load (model on self.device / self.dtype in eval mode, processor, tokenizer) from ``path``."""

    @abstractmethod
    def _text_max_len(self, model: Any, tok: Any) -> int:
        """The longest token sequence the text tower reads (longer text is truncated)."""

    def _components(self) -> tuple[Any, Any, Any]:
        path = self.resolve()
        return cached(self.cache_kind, path.resolve(), self.device, self.dtype, lambda: self._load(path))

    # -- embeddings ----------------------------------------------------------------------------
    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings, float64 (len(texts), D)."""
        import torch

        model, _, tok = self._components()
        max_len = self._text_max_len(model, tok)
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = tok(list(texts[i : i + self.batch_size]), padding=True, truncation=True,
                      max_length=max_len, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                f = features_of(model.get_text_features(**enc))
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))

    def prompt_embeddings(self, prompts: Sequence[Prompt]) -> np.ndarray:
        """One L2-normalised text embedding row per prompt (each distinct text embedded once)."""
        return embed_prompt_texts(self.embed_text, prompts, self.text_field)

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        return self.score_clips([clip], [prompt])[0]


# -- protocols -------------------------------------------------------------------------------------
#: Recipes a verifier with a published counterpart can follow: ``avits`` (ours, documented in
#: docs/metrics.md) or ``javisbench`` (JavisBench's evaluator, JavisDiT ``eval/javisbench``).
PROTOCOLS = ("avits", "javisbench")
#: The evaluator's text for audio-side scores (CLAP, ImageBind text-audio): the CSV's ``audio_text``
#: column when it has one, else ``text`` (its ``df.get('audio_text', df['text'])``).
JAVISBENCH_AUDIO_TEXT = "audio_text|text"


def check_protocol(name: str, protocol: str, text_field: str = "text") -> str:
    """Validate ``protocol``; the javisbench protocol fixes which prompt column is read, so a
    ``text_field`` other than the default is refused with it."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{name}: protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "javisbench" and text_field != "text":
        raise ConfigError(f"{name}: the javisbench protocol reads the evaluator's prompt column; "
                          f"drop text_field={text_field!r}")
    return protocol


def resample_javisbench(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resampling as the evaluator's ``librosa.load(path, sr=sr_out)`` does it (soxr, 'soxr_hq')."""
    import librosa

    a = np.asarray(audio, dtype=np.float32)
    if int(sr_in) == int(sr_out):
        return a
    return np.asarray(librosa.resample(a, orig_sr=int(sr_in), target_sr=int(sr_out), res_type="soxr_hq"),
                      dtype=np.float32)
