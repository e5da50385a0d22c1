"""The ``vqascore`` verifier: VQAScore with CLIP-FlanT5 (see the package docstring for the recipe)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from avits_core.cache import SingleFlightCache
from avits_core.errors import ConfigError
from avits_core.loading import chunks_halving_on_oom
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers import hf
from avits_core.verifiers.base import MinInput, Verifier
from avits_core.verifiers.features import array_digest
from avits_core.verifiers.vqascore import checkpoint as ckpt
from avits_core.verifiers.vqascore import frames as fr

log = logging.getLogger(__name__)

SYSTEM_MSG = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
              "helpful, detailed, and polite answers to the user's questions.")
QUESTION_TEMPLATE = 'Does this figure show "{}"? Please answer yes or no.'
ANSWER_TEMPLATE = "Yes"
IMAGE_PLACEHOLDER = "<image>"
CONTEXT_LEN = 2048
POLICIES = ("tile", "mean")


def chat_prompt(question: str) -> str:
    """CLIP-FlanT5's ``t5_chat`` conversation: system line, `` USER: <image>\\n`` + question + `` ASSISTANT: ``."""
    return SYSTEM_MSG + " USER: " + IMAGE_PLACEHOLDER + "\n" + question + " ASSISTANT: "


def ids_with_image(text: str, tokenizer: Any) -> list[int]:
    """Token ids of ``text`` with the IMAGE_TOKEN id where ``<image>`` stands: every piece between
    placeholders is tokenised on its own, each with the tokenizer's trailing EOS (as t2v_metrics does);
    no BOS (T5 has none). Truncated to the first CONTEXT_LEN ids."""
    from avits_core.verifiers.vqascore.model import IMAGE_TOKEN

    ids: list[int] = []
    for i, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i:
            ids.append(IMAGE_TOKEN)
        ids.extend(int(x) for x in tokenizer(piece).input_ids)
    if len(ids) > CONTEXT_LEN:
        log.warning("vqascore: question of %d tokens truncated to %d", len(ids), CONTEXT_LEN)
        ids = ids[:CONTEXT_LEN]
    return ids


def _preprocessor(vision_dir: Path) -> dict[str, Any]:
    """size (short side), crop, mean, std from the vision tower's preprocessor_config.json."""
    import json

    p = vision_dir / "preprocessor_config.json"
    raw = json.loads(p.read_text())

    def side(v: Any, field: str) -> int:
        if isinstance(v, int):
            return v
        if isinstance(v, dict) and "shortest_edge" in v:
            return int(v["shortest_edge"])
        if isinstance(v, dict) and v.get("height") == v.get("width") and v.get("height"):
            return int(v["height"])
        raise ConfigError(f"{str(p)!r}: {field} {v!r} is not a short side or a square size")

    size = side(raw.get("size", 336), "size")
    crop = side(raw.get("crop_size", size), "crop_size") if raw.get("do_center_crop", True) else size
    mean = tuple(float(x) for x in raw.get("image_mean", fr.CLIP_MEAN))
    std = tuple(float(x) for x in raw.get("image_std", fr.CLIP_STD))
    resample = raw.get("resample", 3)
    if resample != 3:
        raise ConfigError(f"{str(p)!r}: resample {resample!r} is not bicubic (3), the only one implemented")
    return {"size": size, "crop": crop, "mean": mean, "std": std}


class VQAScore(Verifier):
    """VQAScore (CLIP-FlanT5): P("Yes" | picture, 'Does this figure show "{text}"? ...'), in (0, 1].

    Per (clip, prompt): the geometric mean, over the answer's tokens including the EOS, of the model's
    probability of each token, i.e. ``exp(mean_j log p(answer_j | image, question, answer_<j))``, for
    ``frames`` frames ``i * floor(T / frames)``; ``video_policy="tile"`` scores ONE picture made of those
    frames side by side (JPEG round trips, 10 px gaps; JavisBench's evaluator through t2v_metrics),
    ``video_policy="mean"`` scores every frame on its own and averages (the ITS paper's reward code).
    Reads the video track and the prompt text (``text_field``); higher is better.
    """

    name = "vqascore"
    version = "1"
    higher_is_better = True
    value_range = (0.0, 1.0)
    needs_weights = True
    min_input: ClassVar[MinInput] = MinInput(frames=8, modalities=("video", "text"))
    identity_params = ("frames", "video_policy", "question_template", "answer_template")
    identity_always = ("video_policy",)
    cache_kind: ClassVar[str] = "CLIPFlanT5"

    def __init__(
        self,
        model_path: str = ckpt.DEFAULT_MODEL,
        video_policy: str = "tile",
        frames: int = 8,
        device: str = "cpu",
        dtype: str | None = None,
        batch_size: int = 8,
        question_template: str = QUESTION_TEMPLATE,
        answer_template: str = ANSWER_TEMPLATE,
        text_field: str = "text",
        vision_tower_path: str | None = None,
        tokenizer_path: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        if video_policy not in POLICIES:
            raise ConfigError(f"vqascore: video_policy must be one of {POLICIES}, got {video_policy!r}")
        self.video_policy = video_policy
        self.frames = hf.check_batch_size(frames, "frames")
        self.min_input = MinInput(frames=self.frames, modalities=("video", "text"))
        self.model_path = str(model_path)
        self.device = hf.parse_device(device)
        if dtype is None:
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.dtype = hf.dtype_name(dtype)
        self.batch_size = hf.check_batch_size(batch_size)
        for field, tpl in (("question_template", question_template), ("answer_template", answer_template)):
            if not isinstance(tpl, str) or not tpl.strip():
                raise ConfigError(f"vqascore: {field} must be a non-empty string, got {tpl!r}")
            if IMAGE_PLACEHOLDER in tpl:
                raise ConfigError(f"vqascore: {field} must not contain {IMAGE_PLACEHOLDER!r} (the chat template places it)")
        if "{}" not in question_template:
            raise ConfigError(f"vqascore: question_template must hold '{{}}' where the prompt goes, got {question_template!r}")
        self.question_template = question_template
        self.answer_template = answer_template
        self.text_field = str(text_field)
        self.vision_tower_path = vision_tower_path
        self.tokenizer_path = tokenizer_path
        self.cache_dir = cache_dir
        self.last_peak_memory_bytes: int | None = None

    # -- weights -------------------------------------------------------------------------------
    def layout(self) -> ckpt.Layout:
        return ckpt.inspect_layout(self.model_path, self.vision_tower_path, self.tokenizer_path, self.cache_dir)

    def check_ready(self) -> None:
        """Raise MissingWeightsError listing every missing file (model, shards, vision tower, tokenizer)."""
        self.layout().raise_if_missing()

    def _load(self, lay: ckpt.Layout) -> tuple[Any, Any, dict[str, Any]]:
        from transformers import T5Tokenizer

        from avits_core.verifiers.vqascore.model import load_model

        model = load_model(lay, self.device, hf.parse_dtype(self.dtype))
        tok = T5Tokenizer.from_pretrained(str(lay.tokenizer_dir), local_files_only=True)
        return model, tok, _preprocessor(lay.vision_dir)

    def components(self) -> tuple[Any, Any, dict[str, Any]]:
        """(model, tokenizer, preprocessing) loaded once per process per folders/device/dtype."""
        lay = self.layout()
        lay.raise_if_missing()
        key = f"{lay.model_dir.resolve()}|{lay.vision_dir.resolve()}|{lay.tokenizer_dir.resolve()}"
        return hf.cached(self.cache_kind, key, self.device, self.dtype, lambda: self._load(lay))

    # -- inputs --------------------------------------------------------------------------------
    def pictures(self, clip: AVClip) -> tuple[np.ndarray, list[np.ndarray]]:
        """The sampled frame indices and the RGB pictures the model scores for this clip
        (tile: one tiled picture; mean: one per frame)."""
        idx = fr.frame_indices(clip.num_frames, self.frames)
        frames = [np.ascontiguousarray(clip.video[i]) for i in idx]
        if self.video_policy == "tile":
            return idx, [fr.evaluator_tile(frames)]
        return idx, frames

    def question(self, prompt: Prompt) -> str:
        text = hf.prompt_text(prompt, self.text_field)
        if IMAGE_PLACEHOLDER in text:
            raise ValueError(f"prompt {prompt.prompt_id!r} contains {IMAGE_PLACEHOLDER!r}, which would add an image slot")
        return chat_prompt(self.question_template.format(text))

    def answer(self, prompt: Prompt) -> str:
        return self.answer_template.format(hf.prompt_text(prompt, self.text_field))

    # -- scoring -------------------------------------------------------------------------------
    def _run_pairs(self, model: Any, pixels: np.ndarray, q_ids: list[list[int]], a_ids: list[list[int]]) -> np.ndarray:
        """Score (picture, question, answer) triples ``batch_size`` at a time; halve on CUDA OOM."""
        import torch

        cuda = str(self.device).startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        out = chunks_halving_on_oom(
            self, len(q_ids), lambda lo, hi: model.score(torch.from_numpy(pixels[lo:hi]), q_ids[lo:hi], a_ids[lo:hi]),
            device=self.device, what="vqascore", unit="pictures")
        self.last_peak_memory_bytes = int(torch.cuda.max_memory_allocated(self.device)) if cuda else None
        return np.concatenate(out) if out else np.zeros(0)

    def _frame_scores(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[tuple[list[int], np.ndarray]]:
        """Per clip: (sampled frame indices, the model's score of each picture), all pictures of the batch
        through the model together. Each result is also remembered in :data:`_RESULTS` under its content
        key (the latest result replaces an earlier one), where :meth:`score_details` finds it."""
        model, tok, pre = self.components()
        colour = fr.mean_colour(pre["mean"])
        q_cache: dict[str, list[int]] = {}
        a_cache: dict[str, list[int]] = {}
        pixels, q_ids, a_ids, owner, indices = [], [], [], [], []
        for ci, (clip, prompt) in enumerate(zip(clips, prompts)):
            q, a = self.question(prompt), self.answer(prompt)
            if q not in q_cache:
                q_cache[q] = ids_with_image(q, tok)
            if a not in a_cache:
                a_cache[a] = [int(x) for x in tok(a).input_ids]
            idx, pics = self.pictures(clip)
            indices.append([int(i) for i in idx])
            for pic in pics:
                pixels.append(fr.clip_input(pic, colour, pre["size"], pre["crop"], pre["mean"], pre["std"]))
                q_ids.append(q_cache[q])
                a_ids.append(a_cache[a])
                owner.append(ci)
        pair_scores = self._run_pairs(model, np.stack(pixels), q_ids, a_ids)
        own = np.asarray(owner)
        out = [(indices[ci], pair_scores[own == ci]) for ci in range(len(clips))]
        for clip, prompt, res in zip(clips, prompts, out):
            _RESULTS.put(self._result_key(clip, prompt, res[0]), res)
        return out

    def _result_key(self, clip: AVClip, prompt: Prompt, idx: Sequence[int]) -> tuple:
        """Everything a clip's frame scores depend on: the weights, device and dtype, the policy and the
        content of the sampled frames, the question and the answer."""
        frames = np.ascontiguousarray(clip.video[np.asarray(idx, dtype=np.int64)])
        return (self.model_path, self.vision_tower_path, self.tokenizer_path, self.cache_dir, self.device,
                self.dtype, self.video_policy, array_digest(frames), self.question(prompt), self.answer(prompt))

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        return [float(np.mean(s)) for _, s in self._frame_scores(clips, prompts)]

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        return self.score_clips([clip], [prompt])[0]

    def score_details(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[dict[str, Any]] | None:
        """Per clip: ``frame_indices`` (the frames read) and, for ``video_policy="mean"``, ``frame_scores``.

        Taken from the result :meth:`score_clips` remembered for the same (weights, policy, frames,
        question, answer) content, never from state of the instance: two threads scoring different
        clips with one (shared) instance each get their own. A result no longer remembered is computed
        again."""
        results: list[tuple[list[int], np.ndarray] | None] = []
        todo: list[int] = []
        for i, (clip, prompt) in enumerate(zip(clips, prompts)):
            idx = [int(k) for k in fr.frame_indices(clip.num_frames, self.frames)]
            results.append(_RESULTS.peek(self._result_key(clip, prompt, idx)))
            if results[-1] is None:
                todo.append(i)
        if todo:
            for i, res in zip(todo, self._frame_scores([clips[i] for i in todo], [prompts[i] for i in todo])):
                results[i] = res
        details = []
        for idx, s in results:  # type: ignore[misc]
            d: dict[str, Any] = {"frame_indices": list(idx)}
            if self.video_policy == "mean":
                d["frame_scores"] = [float(x) for x in s]
            details.append(d)
        return details


#: The frame scores of recently scored clips, by content (see VQAScore._result_key): what score_details reads.
_RESULTS: SingleFlightCache[tuple, tuple[list[int], np.ndarray]] = SingleFlightCache(max_entries=4096)
