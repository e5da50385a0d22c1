"""Model loading in one place: device and dtype parsing, local folder / Hugging Face cache lookup, and the
one process-wide cache every generator, verifier and model weight set goes through.

Devices (:func:`parse_device`, :func:`check_device`)
    ``parse_device`` validates a torch device string ("cpu", "cuda", "cuda:1", "mps") and returns it as
    written by torch; ``check_device`` also refuses a device this machine does not have (a generator
    checks this before it loads gigabytes of weights).

Dtypes (:func:`parse_dtype`)
    A string ("float32", "fp16", "bf16", "torch.bfloat16", ...) or a ``torch.dtype``; ``allowed``
    narrows the accepted set (LTX-2 refuses float64), ``what`` prefixes the error message.

Weights (:func:`looks_like_local_path`, :func:`hub_snapshot`, :func:`resolve_folder`,
:func:`resolve_model_dir`, :func:`resolve_weights_file`)
    ``model_path`` is a local directory (or file) or a hub id ``owner/name``. A hub id is resolved
    **only from the local Hugging Face cache** (``snapshot_download(..., local_files_only=True)``):
    nothing here touches the network, so a missing model fails at once with a
    :class:`MissingWeightsError` naming the path or id and the command that fetches it. A value that
    looks like a filesystem path (absolute, ``./``, ``../``, ``~``, or not exactly one ``/``) is never
    treated as a hub id.

The process-wide cache (:func:`cached`, :func:`cached_instance`, :func:`clear_cache`, :func:`cache_keys`)
    One object per key per process: model weights under ``(kind, resolved path, device, dtype)``,
    generator and verifier instances under ``(kind, registry name, JSON of params)``, in one
    :class:`avits_core.cache.SingleFlightCache` (unbounded): threaded task runners load a key once (the
    others wait for it) while other keys load side by side; no lock is held during a load, so a generator
    whose constructor loads its weights through :func:`cached` does not deadlock. A failed load is not
    kept: it is raised to every thread that waited for it, and the next call loads again.

torch and huggingface_hub are imported lazily; nothing here imports transformers, diffusers or the
registry (callers pass the factory).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

from avits_core.cache import SingleFlightCache
from avits_core.errors import ConfigError, MissingWeightsError

log = logging.getLogger(__name__)

T = TypeVar("T")

# --------------------------------------------------------------------------------------------------
# devices and dtypes
# --------------------------------------------------------------------------------------------------

#: Accepted spellings -> torch attribute name.
DTYPES: dict[str, str] = {
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


def parse_dtype(dtype: Any, *, allowed: Iterable[str] | None = None, what: str = "") -> Any:
    """Return the torch dtype named by ``dtype`` (a string such as "float32", or a torch.dtype).

    ``allowed``: canonical names ("float32", "bfloat16", ...) accepted; default all of :data:`DTYPES`.
    ``what``: prefix of the error message (e.g. "ltx2"). Raises ConfigError.
    """
    import torch

    ok = set(DTYPES.values()) if allowed is None else set(allowed)
    prefix = f"{what}: " if what else ""
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
        if allowed is not None and name not in ok:
            raise ConfigError(f"{prefix}dtype must be one of {sorted(ok)}, got {dtype!r}")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPES or DTYPES[key] not in ok:
        raise ConfigError(f"{prefix}dtype must be one of {sorted(ok)}, got {dtype!r}")
    return getattr(torch, DTYPES[key])


def dtype_name(dtype: Any, *, allowed: Iterable[str] | None = None, what: str = "") -> str:
    """"float32" for torch.float32 or any accepted spelling of it (checked like :func:`parse_dtype`).
    A string is checked without importing torch."""
    if isinstance(dtype, str):
        ok = set(DTYPES.values()) if allowed is None else set(allowed)
        key = dtype.lower().removeprefix("torch.")
        if key not in DTYPES or DTYPES[key] not in ok:
            prefix = f"{what}: " if what else ""
            raise ConfigError(f"{prefix}dtype must be one of {sorted(ok)}, got {dtype!r}")
        return DTYPES[key]
    return str(parse_dtype(dtype, allowed=allowed, what=what)).removeprefix("torch.")


_PLAIN_DEVICE = re.compile(r"(cpu|cuda|mps|meta|xpu)(:(0|[1-9][0-9]*))?")


def parse_device(device: Any, *, what: str = "") -> str:
    """Validate a torch device string ("cpu", "cuda", "cuda:1", "mps") and return it as a string.
    The common spellings are checked without importing torch (a verifier made only for its
    ``cache_version``, e.g. by ``avits rerank`` on stored rewards, loads no torch); others go to torch."""
    if isinstance(device, str) and _PLAIN_DEVICE.fullmatch(device):
        return device
    import torch

    prefix = f"{what}: " if what else ""
    try:
        return str(torch.device(str(device)))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"{prefix}device {device!r} is not a valid torch device: {exc}") from None


def check_device(device: Any, *, what: str = "") -> Any:
    """The ``torch.device`` for ``device`` after checking this machine has it (CUDA index, MPS)."""
    import torch

    prefix = f"{what}: " if what else ""
    dev = torch.device(parse_device(device, what=what))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{prefix}device {str(device)!r} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"{prefix}device {str(device)!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"{prefix}device {str(device)!r} requested but MPS is not available")
    return dev


# --------------------------------------------------------------------------------------------------
# local folders and the Hugging Face cache
# --------------------------------------------------------------------------------------------------


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


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder (for messages)."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - hub not installed
        return "~/.cache/huggingface/hub"


def hub_snapshot(repo_id: str, *, cache_dir: str | os.PathLike[str] | None = None,
                 revision: str | None = None) -> Path:
    """The local snapshot folder of hub id ``repo_id`` from the Hugging Face cache; never downloads.

    Raises whatever ``snapshot_download(local_files_only=True)`` raises (LocalEntryNotFoundError,
    HFValidationError) or ImportError without huggingface_hub; callers turn it into their message.
    """
    from huggingface_hub import snapshot_download

    return Path(str(snapshot_download(
        repo_id, revision=revision or None, local_files_only=True,
        cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
    )))


def resolve_folder(path: str | os.PathLike[str], *, what: str, hint: str,
                   cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A local folder, or a hub id's snapshot in the local cache (no file inside is required).

    Raises MissingWeightsError naming ``what`` and ending with ``hint``.
    """
    s = os.fspath(path)
    if looks_like_local_path(s):
        p = Path(os.path.expanduser(s))
        if p.is_dir():
            return p
        raise MissingWeightsError(f"{what}: folder {str(p)!r} does not exist; {hint}")
    try:
        return hub_snapshot(s, cache_dir=cache_dir)
    except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, ImportError
        raise MissingWeightsError(f"{what}: hub model {s!r} is not in the local Hugging Face cache and avits never "
                                  f"downloads at run time ({type(exc).__name__}); {hint}") from None


def resolve_model_dir(
    model_path: str | os.PathLike[str],
    *,
    what: str,
    default_repo: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the local directory (holding a ``config.json``) of the model named by ``model_path``.

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
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise MissingWeightsError(
            f"{what}: {s!r} is a hub id but huggingface_hub is not installed; "
            f"pip install 'avits[models]' or pass a local model_path"
        ) from None
    try:
        p = hub_snapshot(s, cache_dir=cache_dir)
    except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, ...
        where = f" (cache_dir={os.fspath(cache_dir)!r})" if cache_dir is not None else ""
        raise MissingWeightsError(
            f"{what}: hub model {s!r} is not in the local Hugging Face cache{where} and avits never "
            f"downloads at run time ({type(exc).__name__}); get it with {download_hint(s)}. "
            f"If {s!r} was meant as a local folder, it does not exist (write it as ./{s})"
        ) from None
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


# --------------------------------------------------------------------------------------------------
# the process-wide cache
# --------------------------------------------------------------------------------------------------

#: Models and generator / verifier instances: keys (kind, ...), unbounded (dropped by clear_cache).
_CACHE: SingleFlightCache[tuple[str, ...], Any] = SingleFlightCache(group=lambda key: key[0])


def _get_or_load(key: tuple[str, ...], loader: Callable[[], T], message: str) -> T:
    def load() -> T:
        log.info("%s", message)
        return loader()

    return _CACHE.get_or_compute(key, load)


def cached(kind: str, path: str | os.PathLike[str], device: str, dtype: Any, loader: Callable[[], T]) -> T:
    """The model cached under ``(kind, path, device, dtype)``, calling ``loader()`` once per process."""
    key = (kind, os.fspath(path), str(device), str(dtype))
    return _get_or_load(key, loader, f"loading {kind} from {key[1]} on {key[2]} ({key[3]})")


def params_key(params: dict[str, Any]) -> str:
    """The canonical text of a parameter dict (sorted JSON; non-JSON values by ``str``)."""
    return json.dumps(params, sort_keys=True, default=str)


def cached_instance(kind: str, name: str, params: dict[str, Any], factory: Callable[[], T]) -> T:
    """The ``kind`` ("generator", "verifier") instance of registry ``name`` with ``params``, built once
    per process by ``factory()``."""
    return _get_or_load((kind, name, params_key(params)), factory, f"creating {kind} {name} {params}")


def clear_cache(kind: str | None = None) -> None:
    """Drop cached objects: every one, or those of one ``kind`` (tests; freeing GPU memory between
    benchmark configs)."""
    _CACHE.discard(None if kind is None else (lambda k: k[0] == kind))


def cache_keys(kind: str | None = None) -> list[tuple[str, ...]]:
    """The keys held now (all, or one ``kind``'s)."""
    return [k for k in _CACHE.keys() if kind is None or k[0] == kind]


# --------------------------------------------------------------------------------------------------
# strict state-dict loading
# --------------------------------------------------------------------------------------------------


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in (v.shape if hasattr(v, "shape") else v))


def _names(keys: list[str], limit: int) -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def state_dict_problems(expected: Mapping[str, Any], got: Mapping[str, Any], *, prefix: str = "",
                        ignore_missing: Callable[[str], bool] | None = None, limit: int = 12) -> str | None:
    """What keeps ``got`` from loading strictly into a module whose state dict is ``expected``; None when
    nothing does.

    ``expected`` / ``got``: key -> tensor (or shape). One text, the parts that apply, joined by "; ":
    ``"N missing keys: a, b"``, ``"M unexpected keys: c"``,
    ``"K keys with other shapes: k: checkpoint (3, 32) vs model (8, 32)"`` (keys sorted, at most ``limit``
    named per part, then "... and n more"). ``prefix`` is put before every key (the checkpoint's own
    spelling when the module is a part of it); ``ignore_missing(key)`` true: that key may be absent
    (e.g. BatchNorm's ``num_batches_tracked``)."""
    missing = sorted(k for k in expected if k not in got and not (ignore_missing and ignore_missing(k)))
    unexpected = sorted(k for k in got if k not in expected)
    shapes = [f"{prefix}{k}: checkpoint {_shape(got[k])} vs model {_shape(expected[k])}"
              for k in sorted(set(expected) & set(got)) if _shape(got[k]) != _shape(expected[k])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_names([prefix + k for k in missing], limit)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_names([prefix + k for k in unexpected], limit)}")
    if shapes:
        parts.append(f"{len(shapes)} keys with other shapes: {_names(shapes, limit)}")
    return "; ".join(parts) or None


def check_state_dict(expected: Mapping[str, Any], got: Mapping[str, Any], *, what: str,
                     error: Callable[[str], BaseException] = ConfigError, hint: str = "", prefix: str = "",
                     ignore_missing: Callable[[str], bool] | None = None) -> None:
    """Raise ``error(f"{what}: {problems}; {hint}")`` when ``got`` does not load strictly into a module
    whose state dict is ``expected`` (:func:`state_dict_problems`); call it before ``load_state_dict``,
    so the message names every missing, unexpected and mis-shaped key."""
    problems = state_dict_problems(expected, got, prefix=prefix, ignore_missing=ignore_missing)
    if problems:
        raise error(f"{what}: {problems}" + (f"; {hint}" if hint else ""))


# --------------------------------------------------------------------------------------------------
# batching under a memory limit
# --------------------------------------------------------------------------------------------------


def chunks_halving_on_oom(owner: Any, n: int, fn: Callable[[int, int], T], *, device: Any, what: str,
                          unit: str = "items") -> list[T]:
    """``[fn(lo, hi), ...]`` over ``range(n)`` in chunks of at most ``owner.batch_size``. On
    ``torch.OutOfMemoryError`` halve ``owner.batch_size`` (kept for later calls), free the CUDA cache and
    retry the same chunk; at batch size 1 the error propagates."""
    import torch

    cuda = str(device).startswith("cuda")
    results: list[T] = []
    lo = 0
    while lo < n:
        hi = min(n, lo + owner.batch_size)
        try:
            results.append(fn(lo, hi))
        except torch.OutOfMemoryError:
            if owner.batch_size == 1:
                raise
            owner.batch_size = max(1, owner.batch_size // 2)
            log.warning("%s: out of memory with %d %s per call; retrying with batch_size=%d",
                        what, hi - lo, unit, owner.batch_size)
            if cuda:
                torch.cuda.empty_cache()
            continue
        lo = hi
    return results
