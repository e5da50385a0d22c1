"""CLIP text-video score: mean over uniformly sampled frames of cos(CLIP text, CLIP frame).

What it computes, per (clip, prompt)
    (1/F) * sum_f cos(E_text(text), E_image(frame_f)) in [-1, 1], higher is better, over
    F = min(num_frames, T) frames sampled uniformly from the clip's T frames (segment centres:
    frame floor((i + 0.5) * T / F) for i = 0..F-1; with T <= num_frames every frame is used once).
    E_* are the projected embeddings of a transformers ``CLIPModel``, L2-normalised.

Conventions (documented in docs/metrics.md)
    We report the raw cosine. "CLIPScore" (Hessel et al.) is 2.5 * max(cos, 0) for images, and many
    video papers and JavisBench-style evaluators report 100 * cos (some clamp at 0); multiply by
    100 to compare with those, and note that a clamp hides negative similarities.

Protocol ``javisbench`` (JavisBench's evaluator, ``calc_clip_score``; ``protocol="javisbench"``)
    * 48 frames at indices round(linspace(0, T - 1, 48)) (torch's float32 linspace, round half to
      even): with T < 48 frames repeat and count several times in the mean;
    * the evaluator decodes frames with OpenCV, flips BGR -> RGB, and its frame transform converts
      BGR -> RGB once more, so CLIP sees the channels SWAPPED (blue as red); reproduced;
    * preprocessing of the openai ``clip`` package: PIL bicubic resize of the short side to the
      model's image size (long side ``int(size * long / short)``), centre crop with torchvision's
      rounding (``int(round((h - size) / 2))``), /255, the folder's CLIP mean/std;
    * text: the ``text`` column (``text_field`` cannot be changed), truncated to 77 tokens;
    * value: mean over the 48 frames of the cosine (the raw cosine, not x100).
    The evaluator loads ``clip.load("ViT-B/32")``, which runs in float16 on a GPU: use the
    transformers port ``openai/clip-vit-base-patch32`` with ``dtype: float16`` on CUDA to match it.

Input handling (decisions)
    - ``text`` is ``prompt.text`` or ``prompt.meta[text_field]`` (e.g. JavisBench's ``video_text``),
      truncated to the text tower's 77 positions (CLIP cannot read longer text).
    - Frames go through ``CLIPImageProcessorPil`` (Pillow; resize the short side, centre crop,
      normalise with the folder's preprocessor_config.json), since transformers 5's
      ``CLIPImageProcessor`` needs torchvision, which this project does not use.
    - Frames are embedded ``batch_size * num_frames`` at a time; prompts shared by several clips
      (Best-of-N) are embedded once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers import hf
from avits_core.verifiers.base import MinInput

log = logging.getLogger(__name__)

DEFAULT_CLIP = "openai/clip-vit-base-patch32"


def uniform_frame_indices(num_total: int, num_frames: int) -> np.ndarray:
    """Indices of ``min(num_frames, num_total)`` frames spread uniformly over ``num_total`` frames
    (the centre of each of ``num_frames`` equal segments); all frames when there are fewer."""
    if num_total < 1:
        raise ValueError(f"the clip has no frames (num_total={num_total})")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_total <= num_frames:
        return np.arange(num_total)
    return np.floor((np.arange(num_frames) + 0.5) * num_total / num_frames).astype(np.int64)


def sample_frames(clips: Sequence[AVClip], num_frames: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The frames :func:`uniform_frame_indices` picks from each clip, concatenated in clip order,
    and the index of the clip each frame came from (int array of the same length)."""
    frames: list[np.ndarray] = []
    owner: list[int] = []
    for ci, clip in enumerate(clips):
        for fi in uniform_frame_indices(clip.num_frames, num_frames):
            frames.append(clip.video[fi])
            owner.append(ci)
    return frames, np.asarray(owner)


class ClipScore(hf.HFModelVerifier):
    """Mean CLIP text-frame cosine over uniformly sampled frames, in [-1, 1] (higher is better)."""

    name = "clip"
    version = "1"
    #: Frames only (any count; the processor resizes any size): at least one 32x32 picture, one
    #: ViT-B/32 patch of real pixels (smaller pictures are upscaled blur).
    min_input = MinInput(frames=1, height=32, width=32, modalities=("video", "text"))
    default_repo = DEFAULT_CLIP
    model_label = "CLIP (clip verifier)"
    cache_kind = "CLIPModel"

    def __init__(
        self,
        model_path: str = DEFAULT_CLIP,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        num_frames: int = 8,
        text_field: str = "text",
        cache_dir: str | None = None,
        protocol: str = "avits",
    ) -> None:
        super().__init__(model_path, device, dtype, batch_size, text_field, cache_dir)
        self.num_frames = hf.check_batch_size(num_frames, "num_frames")
        self.protocol = hf.check_protocol("clip", protocol, text_field)

    identity_params = ("protocol",)

    def _load(self, path: Path) -> tuple[Any, Any, Any]:
        from transformers import AutoTokenizer, CLIPModel
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        model = CLIPModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        model = model.to(device=self.device, dtype=hf.parse_dtype(self.dtype)).eval()
        proc = CLIPImageProcessorPil.from_pretrained(str(path), local_files_only=True)
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return model, proc, tok

    def _text_max_len(self, model: Any, tok: Any) -> int:
        return min(int(tok.model_max_length), int(model.config.text_config.max_position_embeddings))

    def embed_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised CLIP image embeddings of uint8 RGB frames (H, W, 3), float64 (N, D)."""
        import torch
        from PIL import Image

        model, proc, _ = self._components()
        dt = hf.parse_dtype(self.dtype)
        step = self.batch_size * self.num_frames
        out = []
        for i in range(0, len(frames), step):
            imgs = [Image.fromarray(np.ascontiguousarray(f)) for f in frames[i : i + step]]
            px = proc(imgs, return_tensors="pt")["pixel_values"].to(self.device, dt)
            with torch.inference_mode():
                f = hf.features_of(model.get_image_features(pixel_values=px))
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))

    def javisbench_pixels(self, frames: Sequence[np.ndarray]) -> Any:
        """The evaluator's CLIP input for uint8 frames as it holds them (see the module docstring)."""
        import torch
        from PIL import Image

        model, proc, _ = self._components()
        size = int(model.config.vision_config.image_size)
        mean = np.asarray(proc.image_mean, np.float32)
        std = np.asarray(proc.image_std, np.float32)
        out = []
        for f in frames:
            img = Image.fromarray(np.ascontiguousarray(f))
            w, h = img.size
            short, long = (w, h) if w <= h else (h, w)
            if short != size:
                nl = int(size * long / short)
                img = img.resize((size, nl) if w <= h else (nl, size), Image.BICUBIC)
            w, h = img.size
            top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
            x = np.asarray(img.crop((left, top, left + size, top + size)).convert("RGB"), np.float32) / 255.0
            out.append(torch.from_numpy(((x - mean) / std).transpose(2, 0, 1).copy()))
        return torch.stack(out)

    def _score_javisbench(self, clips: Sequence[AVClip], t: np.ndarray) -> list[float]:
        import torch

        model, _, _ = self._components()
        dt = hf.parse_dtype(self.dtype)
        scores = []
        for ci, clip in enumerate(clips):
            idx = torch.linspace(0, clip.num_frames - 1, 48).round().long().tolist()
            px = self.javisbench_pixels([clip.video[i][..., ::-1] for i in idx])  # channels swapped, as there
            with torch.inference_mode():
                f = hf.features_of(model.get_image_features(pixel_values=px.to(self.device, dt)))
            e = torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy().astype(np.float64)
            scores.append(float(np.mean(e @ t[ci])))
        return scores

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        t = self.prompt_embeddings(prompts)
        if self.protocol == "javisbench":
            return self._score_javisbench(clips, t)
        frames, own = sample_frames(clips, self.num_frames)
        e = self.embed_frames(frames)
        return [float(np.mean(e[own == ci] @ t[ci])) for ci in range(len(t))]
