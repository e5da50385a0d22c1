"""CLIP-FlanT5 on plain transformers: a T5 encoder-decoder whose encoder reads CLIP image features.

Forward for one (image, question, answer) triple
    1. Image features: ``CLIPVisionModel(pixels, output_hidden_states=True).hidden_states[select_layer]``
       (-2: the input of the last layer) without the CLS position (``select_feature = "patch"``):
       (P, mm_hidden_size), P = (image_size / patch_size)^2 = 576 at 336 px; then the projector
       Linear -> GELU -> Linear to (P, d_model).
    2. Encoder input: the question's token ids hold one placeholder ``IMAGE_TOKEN = -200``; the ids before
       it are embedded with T5's shared embedding, then the P image rows, then the ids after it. Rows of a
       batch are right-padded (zeros) to the longest; the attention mask is 1 on the real positions.
    3. Decoder: the answer's token ids (``labels``, with the tokenizer's EOS) shifted right behind
       ``decoder_start_token_id``; logits (A, vocab) at the A answer positions.
    4. Score: ``exp(mean_j log softmax(logits_j)[labels_j])`` over the A answer tokens, i.e. the geometric
       mean of P(answer token j | image, question, answer tokens < j) including the EOS; in (0, 1].
       The log-softmax is taken in float32 whatever the model dtype.

Loading (:func:`load_model`) builds every module on the ``meta`` device and assigns the checkpoint
tensors (cast to the target dtype while reading, one shard at a time), so an 11B checkpoint is never
materialised twice; every missing, unexpected or mis-shaped key is an error that names it.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avits_core.loading import check_state_dict, state_dict_problems
from avits_core.verifiers.vqascore.checkpoint import CheckpointError, Layout, iter_tensors, split_key

log = logging.getLogger(__name__)

IMAGE_TOKEN = -200
IGNORE_INDEX = -100
MM_KEYS = ("mm_vision_tower", "mm_hidden_size", "mm_projector_type", "mm_vision_select_layer",
           "mm_vision_select_feature", "use_mm_proj", "pretrain_mm_mlp_adapter", "mm_use_im_start_end",
           "mm_use_im_patch_token", "image_aspect_ratio", "image_grid_pinpoints", "freeze_mm_mlp_adapter",
           "tune_mm_mlp_adapter", "mm_patch_merge_type")


@functools.lru_cache(maxsize=None)
def _module_classes():
    import torch

    class ClipFlanT5(torch.nn.Module):
        """T5ForConditionalGeneration + CLIPVisionModel + the mlp2x_gelu projector (see the module docstring)."""

        def __init__(self, t5: Any, vision: Any, projector: Any, select_layer: int) -> None:
            super().__init__()
            self.t5 = t5
            self.vision = vision
            self.projector = projector
            self.select_layer = int(select_layer)

        @property
        def dtype(self) -> Any:
            return self.t5.shared.weight.dtype

        @property
        def device(self) -> Any:
            return self.t5.shared.weight.device

        def encode_images(self, pixels: Any) -> Any:
            """(N, 3, S, S) CLIP pixels -> (N, P, d_model) projected patch features."""
            out = self.vision(pixel_values=pixels.to(self.device, self.vision.dtype), output_hidden_states=True)
            feats = out.hidden_states[self.select_layer][:, 1:]
            return self.projector(feats.to(self.projector[0].weight.dtype)).to(self.dtype)

        def splice(self, input_ids: Sequence[Sequence[int]], image_features: Any) -> tuple[Any, Any]:
            """Encoder inputs_embeds (B, L, d) and attention mask (B, L): each row's ids with its one
            IMAGE_TOKEN replaced by that row's image features; right-padded with zeros / mask 0."""
            emb = self.t5.get_input_embeddings()
            rows = []
            for ids, feats in zip(input_ids, image_features):
                ids = list(ids)
                if ids.count(IMAGE_TOKEN) != 1:
                    raise ValueError(f"a question must hold exactly one image placeholder {IMAGE_TOKEN}, "
                                     f"got {ids.count(IMAGE_TOKEN)}")
                k = ids.index(IMAGE_TOKEN)
                pre = torch.tensor(ids[:k], dtype=torch.long, device=self.device)
                post = torch.tensor(ids[k + 1:], dtype=torch.long, device=self.device)
                rows.append(torch.cat([emb(pre), feats.to(self.dtype), emb(post)], dim=0))
            length = max(r.shape[0] for r in rows)
            embeds = rows[0].new_zeros((len(rows), length, rows[0].shape[1]))
            mask = torch.zeros((len(rows), length), dtype=torch.long, device=self.device)
            for i, r in enumerate(rows):
                embeds[i, : r.shape[0]] = r
                mask[i, : r.shape[0]] = 1
            return embeds, mask

        def answer_logits(self, pixels: Any, input_ids: Sequence[Sequence[int]],
                          labels: Sequence[Sequence[int]]) -> tuple[Any, Any]:
            """Decoder logits (B, A, vocab) at the answer positions and the padded labels (B, A)
            (IGNORE_INDEX where a shorter answer is padded)."""
            feats = self.encode_images(pixels)
            embeds, mask = self.splice(input_ids, feats)
            a = max(len(x) for x in labels)
            lab = torch.full((len(labels), a), IGNORE_INDEX, dtype=torch.long, device=self.device)
            for i, x in enumerate(labels):
                lab[i, : len(x)] = torch.tensor(list(x), dtype=torch.long)
            cfg = self.t5.config
            dec = torch.full_like(lab, int(cfg.pad_token_id))
            dec[:, 0] = int(cfg.decoder_start_token_id)
            dec[:, 1:] = lab[:, :-1].masked_fill(lab[:, :-1] == IGNORE_INDEX, int(cfg.pad_token_id))
            out = self.t5(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=dec,
                          decoder_attention_mask=(lab != IGNORE_INDEX).long(), use_cache=False)
            return out.logits, lab

        def score(self, pixels: Any, input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]) -> np.ndarray:
            """exp(mean log-prob of the answer tokens) per row, float64 (B,)."""
            with torch.inference_mode():
                logits, lab = self.answer_logits(pixels, input_ids, labels)
                return answer_score(logits, lab)

    return ClipFlanT5


def answer_score(logits: Any, labels: Any) -> np.ndarray:
    """exp(mean over non-ignored positions of log softmax(logits)[label]) per row, float64 (B,)."""
    import torch

    lp = torch.log_softmax(logits.float(), dim=-1)
    valid = labels != IGNORE_INDEX
    tok = lp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
    mean = tok.sum(-1) / valid.sum(-1).clamp(min=1)
    return torch.exp(mean).double().cpu().numpy()


def _assign(module: Any, sd: dict[str, Any], what: str, prefix: str = "") -> None:
    """Load ``sd`` into a meta-built ``module`` (assign), naming every missing / unexpected / mis-shaped key
    (as ``prefix`` + the key, i.e. the checkpoint's own spelling)."""
    check_state_dict(module.state_dict(), sd, what=what, error=CheckpointError, prefix=prefix)
    module.load_state_dict(sd, strict=True, assign=True)


def _clip_vision_config(vision_dir: Path) -> Any:
    from transformers import CLIPVisionConfig

    raw = json.loads((vision_dir / "config.json").read_text())
    if "vision_config" in raw:
        return CLIPVisionConfig(**raw["vision_config"])
    return CLIPVisionConfig.from_pretrained(str(vision_dir), local_files_only=True)


def load_model(layout: Layout, device: str, dtype: Any) -> Any:
    """Build CLIP-FlanT5 from ``layout`` on ``device`` in ``dtype`` (eval mode). Raises CheckpointError
    naming keys that are missing, unexpected or mis-shaped; MissingWeightsError for missing files."""
    import torch
    from transformers import CLIPVisionModel, T5Config, T5ForConditionalGeneration

    layout.raise_if_missing()
    cfg = dict(layout.config)
    ptype = cfg.get("mm_projector_type", "mlp2x_gelu")
    if ptype != "mlp2x_gelu":
        raise CheckpointError(f"config.json: mm_projector_type {ptype!r} is not supported (only 'mlp2x_gelu')")
    feature = cfg.get("mm_vision_select_feature", "patch")
    if feature != "patch":
        raise CheckpointError(f"config.json: mm_vision_select_feature {feature!r} is not supported (only 'patch')")
    select_layer = int(cfg.get("mm_vision_select_layer", -2))
    t5_cfg = T5Config(**{k: v for k, v in cfg.items()
                         if k not in MM_KEYS and k not in ("model_type", "architectures", "transformers_version")})
    vcfg = _clip_vision_config(layout.vision_dir)
    mm_hidden = int(cfg.get("mm_hidden_size", vcfg.hidden_size))
    if mm_hidden != vcfg.hidden_size:
        raise CheckpointError(f"config.json: mm_hidden_size {mm_hidden} but the vision tower at "
                              f"{str(layout.vision_dir)!r} has hidden_size {vcfg.hidden_size}")

    with torch.device("meta"):
        t5 = T5ForConditionalGeneration(t5_cfg)
        vision = CLIPVisionModel(vcfg)
    projector = torch.nn.Sequential(torch.nn.Linear(mm_hidden, t5_cfg.d_model), torch.nn.GELU(),
                                    torch.nn.Linear(t5_cfg.d_model, t5_cfg.d_model))

    cast = (lambda t: t.to(dtype) if t.is_floating_point() else t)  # noqa: E731
    parts: dict[str, dict[str, Any]] = {"t5": {}, "projector": {}, "vision": {}}
    for key, t in iter_tensors(layout.weights, cast):
        where = split_key(key)
        if where is not None:
            parts[where[0]][where[1]] = t
    t5_sd = parts["t5"]
    if "shared.weight" in t5_sd:
        for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            t5_sd.setdefault(alias, t5_sd["shared.weight"])
        if t5_cfg.tie_word_embeddings:
            t5_sd.setdefault("lm_head.weight", t5_sd["shared.weight"])
    _assign(t5, t5_sd, f"CLIP-FlanT5 checkpoint {str(layout.model_dir)!r} (T5 part)")
    _assign(projector, parts["projector"], f"CLIP-FlanT5 checkpoint {str(layout.model_dir)!r} (mm_projector.*)",
            prefix="mm_projector.")

    if parts["vision"]:
        vsd, vwhere = parts["vision"], f"CLIP-FlanT5 checkpoint {str(layout.model_dir)!r} ({VISION_KEYS_DOC})"
        vprefix = "vision_tower.vision_tower."
        log.info("vqascore: vision tower weights from the CLIP-FlanT5 checkpoint")
    else:
        if not layout.vision_weights or any(not p.is_file() for p in layout.vision_weights):
            from avits_core.errors import MissingWeightsError

            raise MissingWeightsError(
                f"VQAScore vision tower: the CLIP-FlanT5 checkpoint has no {VISION_KEYS_DOC} keys and "
                f"{str(layout.vision_dir)!r} has no complete weights")
        vsd = {k: t for k, t in iter_tensors(layout.vision_weights, cast) if k.startswith("vision_model.")}
        vwhere = f"vision tower {str(layout.vision_dir)!r} (vision_model.*)"
        vprefix = ""
        log.info("vqascore: vision tower weights from %s", layout.vision_dir)
    # Checkpoints spell the tower's keys vision_model.*; transformers 5's CLIPVisionModel has no
    # vision_model level (its keys are embeddings.*, encoder.*, ...), transformers 4's has.
    if not any(k.startswith("vision_model.") for k in vision.state_dict()):
        odd = sorted(k for k in vsd if not k.startswith("vision_model."))
        if odd:
            raise CheckpointError(f"{vwhere}: {state_dict_problems({}, {k: vsd[k] for k in odd}, prefix=vprefix)}")
        vsd = {k.removeprefix("vision_model."): t for k, t in vsd.items()}
        vprefix += "vision_model."
    _assign(vision, vsd, vwhere, prefix=vprefix)
    emb = getattr(vision, "vision_model", vision).embeddings
    if getattr(emb, "position_ids", None) is not None and emb.position_ids.is_meta:
        emb.register_buffer("position_ids", torch.arange(emb.num_positions).expand((1, -1)), persistent=False)
    still_meta = [n for n, t in list(t5.named_parameters()) + list(t5.named_buffers()) + list(vision.named_parameters())
                  + list(vision.named_buffers()) if t.is_meta]
    if still_meta:
        raise CheckpointError(f"tensors left unloaded after loading: {still_meta}")
    model = _module_classes()(t5, vision, projector.to(dtype), select_layer)
    model.requires_grad_(False)
    return model.to(device).eval()


VISION_KEYS_DOC = "vision_tower.vision_tower.vision_model.*"
