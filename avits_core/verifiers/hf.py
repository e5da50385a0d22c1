"""Shared plumbing for verifiers with learned weights: where the weights are, and a model cache.

Weights resolution (:func:`resolve_model_dir`, :func:`resolve_weights_file`)
    ``model_path`` is either a local directory (or file), or a Hugging Face hub id such as
    ``laion/clap-htsat-unfused``. A hub id is resolved **only from the local Hugging Face cache**
    (``snapshot_download(..., local_files_only=True)``): nothing here ever touches the network, so a
    missing model fails at once (no retries, no hang) with a :class:`MissingWeightsError` that names
    the path or id and gives the command that fetches it. A value that looks like a filesystem path
    (absolute, ``./``, ``../``, ``~``, or more than one ``/``) is never treated as a hub id.

Model cache (:func:`cached`)
    One instance per process per key ``(kind, resolved path, device, dtype)``: the registry creates a
    new verifier object for every scoring task, and the model must not be reloaded each time. The
    cache is guarded by a lock so that threaded task runners load a model once.

Transformers verifiers (:class:`HFModelVerifier`)
    The constructor fields, weights resolution, cached loading, batched text embedding and
    prompt-text de-duplication shared by CLAP and CLIP; a subclass names its model and says how to
    load it (``_load``) and how long its text may be (``_text_max_len``).

Dtypes are given as strings (``"float32"``, ``"float16"``, ``"bfloat16"``) or torch dtypes.
Nothing in this module imports transformers; torch is imported lazily.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from abc import abstractmethod
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import numpy as np

from avits_core.errors import ConfigError, MissingWeightsError
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import Verifier

log = logging.getLogger(__name__)

T = TypeVar("T")

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float64": "float64",
}


def parse_dtype(dtype: Any) -> Any:
    """Return the torch dtype named by ``dtype`` (a string such as "float32", or a torch.dtype)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(set(_DTYPES.values()))}, got {dtype!r}")
    return getattr(torch, _DTYPES[key])


def parse_device(device: Any) -> str:
    """Validate a torch device string ("cpu", "cuda", "cuda:1", "mps") and return it as a string."""
    import torch

    try:
        return str(torch.device(str(device)))
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"device {device!r} is not a valid torch device: {exc}") from None


def looks_like_local_path(model_path: str | os.PathLike[str]) -> bool:
    """True when ``model_path`` must be a filesystem path rather than a hub id ``owner/name``."""
    s = os.fspath(model_path)
    if os.path.exists(os.path.expanduser(s)):
        return True
    if s.startswith(("/", "./", "../", "~", "\\")) or s in (".", ".."):
        return True
    if os.path.splitdrive(s)[0]:  # C:\...
        return True
    return s.count("/") != 1 or s.endswith("/")


def download_hint(repo_id: str, local_dir: str | None = None) -> str:
    """The shell command that fetches a hub model, for error messages."""
    target = local_dir or f"models/{repo_id.split('/')[-1]}"
    return (
        f"`hf download {repo_id} --local-dir {target}` (older huggingface_hub: "
        f"`huggingface-cli download {repo_id} --local-dir {target}`), then pass "
        f"model_path={target!r}; or run the download without --local-dir to fill the Hugging Face cache"
    )


def resolve_model_dir(
    model_path: str | os.PathLike[str],
    *,
    what: str,
    default_repo: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the local directory holding the model named by ``model_path``.

    ``what`` names the model in messages (e.g. "CLAP"); ``default_repo`` is the hub id suggested
    in the hint when ``model_path`` is a missing local directory. Raises MissingWeightsError.
    """
    s = os.fspath(model_path)
    if not s:
        raise MissingWeightsError(f"{what}: model_path is empty")
    if looks_like_local_path(s):
        p = Path(os.path.expanduser(s))
        if p.is_dir():
            if not (p / "config.json").is_file():
                raise MissingWeightsError(
                    f"{what}: model directory {str(p)!r} has no config.json; it must be a "
                    f"save_pretrained / hub snapshot folder"
                    + (f"; get one with {download_hint(default_repo, s)}" if default_repo else "")
                )
            return p
        hint = f"; get it with {download_hint(default_repo, s)}" if default_repo else ""
        raise MissingWeightsError(f"{what}: model directory {str(p)!r} does not exist{hint}")
    # A hub id: the local cache only.
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise MissingWeightsError(
            f"{what}: {s!r} is a hub id but huggingface_hub is not installed; "
            f"pip install 'avits[models]' or pass a local model_path"
        ) from None
    try:
        snap = snapshot_download(
            s,
            local_files_only=True,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        )
    except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, ...
        where = f" (cache_dir={os.fspath(cache_dir)!r})" if cache_dir is not None else ""
        raise MissingWeightsError(
            f"{what}: hub model {s!r} is not in the local Hugging Face cache{where} and avits never "
            f"downloads at run time ({type(exc).__name__}); get it with {download_hint(s)}. "
            f"If {s!r} was meant as a local folder, it does not exist (write it as ./{s})"
        ) from None
    p = Path(str(snap))
    if not (p / "config.json").is_file():
        raise MissingWeightsError(
            f"{what}: the cached snapshot of {s!r} at {str(p)!r} has no config.json (incomplete "
            f"download?); fetch it again with {download_hint(s)}"
        )
    return p


def resolve_weights_file(path: str | os.PathLike[str], *, what: str, hint: str) -> Path:
    """Return ``path`` as an existing file, or raise MissingWeightsError naming it and ``hint``."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_file():
        raise MissingWeightsError(f"{what}: weights file {str(p)!r} does not exist; {hint}")
    return p


_CACHE: dict[tuple[str, str, str, str], Any] = {}
_LOCK = threading.Lock()


def cached(kind: str, path: str | os.PathLike[str], device: str, dtype: Any, loader: Callable[[], T]) -> T:
    """Return the object cached under ``(kind, path, device, dtype)``, calling ``loader()`` once."""
    key = (kind, os.fspath(path), str(device), str(dtype))
    with _LOCK:
        if key not in _CACHE:
            log.info("loading %s from %s on %s (%s)", kind, key[1], key[2], key[3])
            _CACHE[key] = loader()
        return _CACHE[key]


def clear_cache() -> None:
    """Drop every cached model (tests; freeing GPU memory between benchmark configs)."""
    with _LOCK:
        _CACHE.clear()


def cache_keys() -> list[tuple[str, str, str, str]]:
    with _LOCK:
        return list(_CACHE)


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
        self.dtype = str(parse_dtype(dtype)).removeprefix("torch.")
        self.batch_size = check_batch_size(batch_size)
        self.text_field = str(text_field)
        self.cache_dir = cache_dir

    # -- weights -------------------------------------------------------------------------------
    def resolve(self) -> Path:
        return resolve_model_dir(
            self.model_path, what=self.model_label, default_repo=self.default_repo, cache_dir=self.cache_dir
        )

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
