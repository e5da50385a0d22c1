"""LTX-2 weights: locating a diffusers folder (local path or Hugging Face cache), checking its components,
loading the pipeline components once per process."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from avits_core import loading
from avits_core.errors import ConfigError, MissingWeightsError

log = logging.getLogger(__name__)


#: Component subfolders of a diffusers LTX-2 folder.
COMPONENTS: tuple[str, ...] = (
    "transformer",
    "vae",
    "audio_vae",
    "vocoder",
    "text_encoder",
    "tokenizer",
    "connectors",
    "scheduler",
)
#: Components that carry weights (the others hold only configs / vocabularies).
WEIGHTED_COMPONENTS: tuple[str, ...] = ("transformer", "vae", "audio_vae", "vocoder", "text_encoder", "connectors")
_WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")  # pickled .bin weights are never loaded
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")

#: The dtypes LTX-2 runs in (spellings as in :data:`avits_core.loading.DTYPES`).
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")

HOW_TO_GET_WEIGHTS = (
    "Get the diffusers-format LTX-2 weights on a machine with network access, e.g.\n"
    "  hf download Lightricks/LTX-2 model_index.json 'transformer/*' 'vae/*' 'audio_vae/*' 'vocoder/*' "
    "'text_encoder/*' 'tokenizer/*' 'connectors/*' 'scheduler/*' --local-dir /models/LTX-2\n"
    "and pass model_path=/models/LTX-2 (or pass the repo id 'Lightricks/LTX-2' once it is in the Hugging "
    "Face cache). Single-file checkpoints (e.g. LTX-2.3) must first be converted with diffusers' "
    "scripts/convert_ltx2_to_diffusers.py. Nothing is downloaded at run time (local_files_only=True). "
    "See docs/ltx2.md."
)

# --------------------------------------------------------------------------------------------------
# Locating and checking the weights
# --------------------------------------------------------------------------------------------------


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir())


def _component_problem(root: Path, name: str) -> str | None:
    """Why component ``name`` under ``root`` is unusable, or None when it looks complete."""
    sub = root / name
    if not sub.is_dir():
        return "folder missing"
    if name == "tokenizer":
        if not any((sub / f).is_file() for f in _TOKENIZER_FILES):
            return f"no tokenizer file ({', '.join(_TOKENIZER_FILES)})"
        return None
    if name == "scheduler":
        return None if (sub / "scheduler_config.json").is_file() else "no scheduler_config.json"
    if not (sub / "config.json").is_file():
        return "no config.json"
    if name in WEIGHTED_COMPONENTS and not _has_weights(sub):
        return "no weight file (*.safetensors; pickled *.bin weights are not loaded)"
    return None


def missing_components(root: Path) -> dict[str, str]:
    """``{component or file: problem}`` for a diffusers LTX-2 folder; empty when it looks complete."""
    problems: dict[str, str] = {}
    if not (root / "model_index.json").is_file():
        problems["model_index.json"] = "file missing"
    for name in COMPONENTS:
        why = _component_problem(root, name)
        if why:
            problems[name] = why
    return problems


def resolve_model_path(model_path: str | os.PathLike[str] | None) -> Path:
    """The local folder holding the weights: ``model_path`` itself, or its Hugging Face cache snapshot.

    Raises MissingWeightsError when neither exists or when components are missing. Never downloads.
    """
    if model_path is None or str(model_path).strip() == "":
        raise MissingWeightsError(f"ltx2: model_path is not set.\n{HOW_TO_GET_WEIGHTS}")
    raw = str(model_path)
    local = Path(raw).expanduser()
    if local.is_dir():
        root = local
    elif local.exists():
        raise MissingWeightsError(f"ltx2: model_path {raw!r} is a file, not a diffusers folder.\n{HOW_TO_GET_WEIGHTS}")
    else:
        root = _hf_cache_snapshot(raw)
        if root is None:
            raise MissingWeightsError(
                f"ltx2: model_path {raw!r} is neither a local folder nor a repository in the Hugging Face "
                f"cache ({_hf_cache_dir()}); HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')!r}, "
                f"nothing is downloaded.\n{HOW_TO_GET_WEIGHTS}"
            )
    problems = missing_components(root)
    if problems:
        listing = "; ".join(f"{k}: {v}" for k, v in problems.items())
        raise MissingWeightsError(
            f"ltx2: the folder {str(root)!r} is not a complete diffusers LTX-2 folder. "
            f"Missing: {', '.join(problems)} ({listing}).\n{HOW_TO_GET_WEIGHTS}"
        )
    return root


def _hf_cache_dir() -> str:
    return loading.hf_cache_dir()


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` (``owner/name[@revision]``), or None. No network."""
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".", "~")):
        return None
    name, _, revision = repo_id.partition("@")
    try:
        return loading.hub_snapshot(name, revision=revision or None)
    except Exception as exc:  # LocalEntryNotFoundError, validation errors, hub missing
        log.debug("ltx2: %s not in the Hugging Face cache: %s", repo_id, exc)
        return None


# --------------------------------------------------------------------------------------------------
# Loading (cached per process)
# --------------------------------------------------------------------------------------------------


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """The torch dtype LTX-2 runs in (float32, bfloat16 or float16; ConfigError otherwise)."""
    return loading.parse_dtype(dtype, allowed=DTYPES, what="ltx2")


def load_ltx2_pipeline(model_path: str | os.PathLike[str], device: str = "cpu", dtype: str | torch.dtype = "float32",
                       cpu_offload: bool = False) -> Any:
    """The ``LTX2Pipeline`` for (folder, device, dtype, cpu_offload), loaded once per process."""
    root = resolve_model_path(model_path)
    tdtype = parse_dtype(dtype)
    dev = loading.check_device(device, what="ltx2")
    if cpu_offload and dev.type == "cpu":
        log.warning("ltx2: cpu_offload=True has no effect with device='cpu'; ignoring it")
        cpu_offload = False
    kind = "LTX2Pipeline+cpu_offload" if cpu_offload else "LTX2Pipeline"

    def load() -> Any:
        from diffusers import LTX2Pipeline

        log.info("ltx2: loading %s (dtype=%s, device=%s, cpu_offload=%s)", root, tdtype, dev, cpu_offload)
        try:
            pipe = LTX2Pipeline.from_pretrained(str(root), dtype=tdtype, local_files_only=True, use_safetensors=True)
        except (OSError, FileNotFoundError) as exc:
            raise MissingWeightsError(
                f"ltx2: could not load the weights in {str(root)!r}: {exc}\n{HOW_TO_GET_WEIGHTS}"
            ) from exc
        pipe.set_progress_bar_config(disable=True)
        if cpu_offload:
            try:
                import accelerate  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "ltx2: cpu_offload=True needs the 'accelerate' package (pip install accelerate)"
                ) from None
            pipe.enable_model_cpu_offload(device=str(dev))
        else:
            pipe.to(dev)
        return pipe

    return loading.cached(kind, root.resolve(), str(dev), str(tdtype), load)


def clear_ltx2_cache() -> None:
    """Forget every loaded pipeline (frees their memory once no generator holds them)."""
    loading.clear_cache("LTX2Pipeline")
    loading.clear_cache("LTX2Pipeline+cpu_offload")
