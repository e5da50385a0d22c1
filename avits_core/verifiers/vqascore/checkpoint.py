"""CLIP-FlanT5 checkpoint layout: which files are needed, and how its keys map onto our modules.

Three folders (each a local path, or a hub id found in the local Hugging Face cache; never downloaded):

``model_path`` — the CLIP-FlanT5 checkpoint (``zhiqiulin/clip-flant5-xxl`` or ``-xl``), as saved by the
    t2v_metrics / CLIP-FlanT5 training code:
      ``config.json``: a T5 config (``model_type: clip_t5``) plus the multimodal fields ``mm_vision_tower``
      (the CLIP vision tower's hub id or path), ``mm_hidden_size`` (1024), ``mm_projector_type``
      (``mlp2x_gelu``), ``mm_vision_select_layer`` (-2), ``mm_vision_select_feature`` (``patch``);
      weights: ``model.safetensors``, ``model.safetensors.index.json`` + shards, ``pytorch_model.bin`` or
      ``pytorch_model.bin.index.json`` + shards (the first of these that exists).
``vision_tower_path`` — the CLIP vision tower folder (default: the config's ``mm_vision_tower``,
    ``openai/clip-vit-large-patch14-336``; a relative path is taken relative to ``model_path``):
    ``config.json`` (a CLIPConfig or CLIPVisionConfig), ``preprocessor_config.json`` (mean, std, sizes) and,
    unless the checkpoint carries the tower's weights itself, its weights (keys ``vision_model.*``).
``tokenizer_path`` — the FlanT5 SentencePiece tokenizer (default: ``model_path`` when it holds
    ``tokenizer.json`` or ``spiece.model``, else ``google/flan-t5-xxl``).

Key mapping (checkpoint key -> our module; anything else is an "unexpected key" error naming it)
    ``shared.*``, ``encoder.*``, ``decoder.*``, ``lm_head.*``  -> ``T5ForConditionalGeneration`` (same keys;
        ``encoder.embed_tokens.weight`` / ``decoder.embed_tokens.weight`` default to ``shared.weight``, and
        ``lm_head.weight`` too when the config ties word embeddings)
    ``embed_tokens.weight``                    -> dropped (the training class's alias of the encoder embedding)
    ``mm_projector.0.{weight,bias}``           -> projector Linear(mm_hidden_size -> d_model)
    ``mm_projector.2.{weight,bias}``           -> projector Linear(d_model -> d_model) (GELU in between)
    ``vision_tower.vision_tower.vision_model.*`` -> ``CLIPVisionModel.vision_model.*``; when absent, the
        tower's weights come from ``vision_tower_path`` (its ``vision_model.*`` keys; text tower keys of a
        full CLIPModel are ignored there). Checkpoint keys win when both exist, as in the original code.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from avits_core.errors import MissingWeightsError
from avits_core.verifiers import hf

log = logging.getLogger(__name__)

DEFAULT_MODEL = "zhiqiulin/clip-flant5-xxl"
DEFAULT_VISION = "openai/clip-vit-large-patch14-336"
DEFAULT_TOKENIZER = "google/flan-t5-xxl"

WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
VISION_PREFIX = "vision_tower.vision_tower."
PROJECTOR_PREFIX = "mm_projector."
T5_PREFIXES = ("shared.", "encoder.", "decoder.", "lm_head.")
DROPPED_KEYS = ("embed_tokens.weight",)


class CheckpointError(ValueError):
    """A checkpoint's keys or shapes do not fit the model; the message names the keys."""


def weight_files(folder: Path) -> list[Path] | None:
    """The weight files of a save_pretrained folder (all shards of an index), or None if it has none.

    Shards named by an index but absent are included (the caller checks existence)."""
    for name in WEIGHT_FILES:
        p = folder / name
        if not p.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                wm = json.loads(p.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise MissingWeightsError(f"weight index {str(p)!r} is unreadable ({exc}); download it again") from None
            return [folder / s for s in sorted(set(wm.values()))]
        return [p]
    return None


def checkpoint_keys(folder: Path) -> set[str] | None:
    """The tensor names of a checkpoint without loading tensors (index or safetensors header);
    None when only a single pickled ``pytorch_model.bin`` exists (its keys are known once loaded)."""
    for name in WEIGHT_FILES:
        p = folder / name
        if not p.is_file():
            continue
        if name.endswith(".index.json"):
            return set(json.loads(p.read_text())["weight_map"])
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                return set(f.keys())
        return None
    return None


def iter_tensors(files: list[Path], cast: Callable[[Any], Any] | None = None) -> Iterator[tuple[str, Any]]:
    """(key, tensor) over every weight file in turn (safetensors or torch pickles, weights only)."""
    import torch

    for p in files:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
        for k in list(sd):
            t = sd.pop(k)
            yield k, (cast(t) if cast is not None else t)
        del sd


def split_key(key: str) -> tuple[str, str] | None:
    """Map one checkpoint key to (part, key inside that part); part is "t5", "projector" or "vision".
    None for a dropped alias; raises CheckpointError naming the key when it belongs nowhere."""
    if key.startswith(VISION_PREFIX):
        return "vision", key[len(VISION_PREFIX):]
    if key.startswith(PROJECTOR_PREFIX):
        return "projector", key[len(PROJECTOR_PREFIX):]
    if key.startswith(T5_PREFIXES):
        return "t5", key
    if key in DROPPED_KEYS:
        return None
    raise CheckpointError(f"unexpected key {key!r} in the CLIP-FlanT5 checkpoint (expected T5 keys "
                          f"{', '.join(p + '*' for p in T5_PREFIXES)}, {PROJECTOR_PREFIX}*, {VISION_PREFIX}*)")


@dataclass
class Layout:
    """Where every file of one CLIP-FlanT5 setup is, and what is missing (``missing``: one line each)."""

    model_dir: Path | None = None
    vision_dir: Path | None = None
    tokenizer_dir: Path | None = None
    weights: list[Path] = field(default_factory=list)
    vision_weights: list[Path] = field(default_factory=list)
    vision_in_checkpoint: bool | None = None
    config: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def raise_if_missing(self) -> None:
        if self.missing:  # one line (avits doctor prints one finding per line), every item numbered
            n = len(self.missing)
            raise MissingWeightsError(
                f"VQAScore (CLIP-FlanT5) cannot run, {n} missing: "
                + " ".join(f"({i}) {m.rstrip('.')}." for i, m in enumerate(self.missing, 1))
            )


def _resolve(path: str, *, what: str, default_repo: str | None, cache_dir: str | None, base: Path | None = None,
             need_config: bool = True) -> tuple[Path | None, str | None]:
    """(folder, None) or (None, the missing-file line). A relative local path is tried against ``base`` first."""
    if base is not None and not os.path.isabs(os.path.expanduser(path)) and (base / path).is_dir():
        path = str(base / path)
    if not need_config and hf.looks_like_local_path(path):
        p = Path(os.path.expanduser(path))
        if p.is_dir():
            return p, None
        hint = f"; get it with {hf.download_hint(default_repo, path)}" if default_repo else ""
        return None, f"{what}: folder {str(p)!r} does not exist{hint}"
    if not need_config:  # a hub id whose snapshot need not hold a config.json (a tokenizer): cache only
        try:
            return hf.hub_snapshot(path, cache_dir=cache_dir), None
        except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, ImportError
            return None, (f"{what}: hub id {path!r} is not in the local Hugging Face cache and avits never "
                          f"downloads at run time ({type(exc).__name__}); get it with {hf.download_hint(path)}")
    try:
        return hf.resolve_model_dir(path, what=what, default_repo=default_repo, cache_dir=cache_dir), None
    except MissingWeightsError as exc:
        return None, str(exc)


def inspect_layout(model_path: str, vision_tower_path: str | None = None, tokenizer_path: str | None = None,
                   cache_dir: str | None = None) -> Layout:
    """Find every file of a CLIP-FlanT5 setup without loading any weights; list all that are missing."""
    lay = Layout()
    lay.model_dir, err = _resolve(model_path, what="VQAScore model (CLIP-FlanT5)", default_repo=DEFAULT_MODEL,
                                  cache_dir=cache_dir)
    if err:
        lay.missing.append(err)
    mm_tower = DEFAULT_VISION
    if lay.model_dir is not None:
        cfg_path = lay.model_dir / "config.json"
        try:
            lay.config = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            lay.missing.append(f"VQAScore model: {str(cfg_path)!r} is unreadable ({exc})")
        mm_tower = str(lay.config.get("mm_vision_tower") or DEFAULT_VISION)
        files = weight_files(lay.model_dir)
        if files is None:
            lay.missing.append(
                f"VQAScore model: no weights in {str(lay.model_dir)!r} (one of {', '.join(WEIGHT_FILES)}); "
                f"get them with {hf.download_hint(DEFAULT_MODEL, str(lay.model_dir))}")
        else:
            gone = [p for p in files if not p.is_file()]
            for p in gone:
                lay.missing.append(f"VQAScore model: weight shard {str(p)!r} (named by its index) does not exist; "
                                   f"download it again with {hf.download_hint(DEFAULT_MODEL, str(lay.model_dir))}")
            lay.weights = files
            if not gone:
                keys = checkpoint_keys(lay.model_dir)
                lay.vision_in_checkpoint = None if keys is None else any(k.startswith(VISION_PREFIX) for k in keys)
    # vision tower
    vpath = vision_tower_path or mm_tower
    lay.vision_dir, err = _resolve(vpath, what="VQAScore vision tower (CLIP ViT-L/14-336)", default_repo=DEFAULT_VISION,
                                   cache_dir=cache_dir, base=lay.model_dir)
    if err:
        lay.missing.append(err)
    else:
        pp = lay.vision_dir / "preprocessor_config.json"
        if not pp.is_file():
            lay.missing.append(f"VQAScore vision tower: {str(pp)!r} does not exist; get the folder with "
                               f"{hf.download_hint(DEFAULT_VISION, str(lay.vision_dir))}")
        vfiles = weight_files(lay.vision_dir)
        if lay.vision_in_checkpoint is not True:
            if vfiles is None or any(not p.is_file() for p in vfiles):
                lay.missing.append(
                    f"VQAScore vision tower: no complete weights in {str(lay.vision_dir)!r} (one of "
                    f"{', '.join(WEIGHT_FILES)}) and the CLIP-FlanT5 checkpoint does not carry them; get them with "
                    f"{hf.download_hint(DEFAULT_VISION, str(lay.vision_dir))}")
        lay.vision_weights = vfiles or []
    # tokenizer
    if tokenizer_path is None and lay.model_dir is not None and any((lay.model_dir / f).is_file() for f in TOKENIZER_FILES):
        lay.tokenizer_dir = lay.model_dir
    else:
        tpath = tokenizer_path or DEFAULT_TOKENIZER
        lay.tokenizer_dir, err = _resolve(tpath, what="VQAScore tokenizer (FlanT5 SentencePiece)",
                                          default_repo=DEFAULT_TOKENIZER, cache_dir=cache_dir, need_config=False)
        if err:
            lay.missing.append(err)
        elif not any((lay.tokenizer_dir / f).is_file() for f in TOKENIZER_FILES):
            lay.missing.append(
                f"VQAScore tokenizer: {str(lay.tokenizer_dir)!r} has neither {' nor '.join(TOKENIZER_FILES)}; get it with "
                f"{hf.download_hint(DEFAULT_TOKENIZER, str(lay.tokenizer_dir))}")
    return lay
