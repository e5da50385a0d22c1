"""The ``videoreward`` verifier: VideoReward's VQ / MQ / TA heads (and their sum) for a clip and its prompt.

What it computes, per (clip, prompt)
    The three raw outputs of VideoReward (VideoAlign's Qwen2-VL-2B reward model) read at the
    ``<|VQ_reward|>``, ``<|MQ_reward|>``, ``<|TA_reward|>`` tokens of its prompt template filled with
    the prompt text, for the clip's video track (the audio is not read). With ``normalize: true``
    (default) each head is standardised with the checkpoint's own ``inference_config``:
    ``(raw - mean) / std`` (released values: VQ 3.6757/2.2476, MQ 1.1646/1.3811, TA 2.8105/2.5121).
    The value is the chosen ``head``: ``VQ`` (visual quality), ``MQ`` (motion quality), ``TA`` (text
    alignment, the paper's "VideoReward-TA", default), or ``overall`` = VQ + MQ + TA (normalised
    heads when ``normalize``, raw ones otherwise, as the reference). Unbounded; higher is better.
    Raw bf16 outputs are quantised (steps of ~0.0156 near 3), so Best-of-N can see ties (they go to
    the lowest candidate id).

Every head is recorded (decision)
    One forward yields all three heads, so every rewards row carries all of them in
    ``rewards.details`` (JSON): ``VQ_raw, MQ_raw, TA_raw`` (raw), ``VQ, MQ, TA`` (normalised),
    ``overall`` and ``overall_raw``, plus ``frames``, ``height``, ``width`` (what the model read). The
    row's ``value`` is the configured head; any other head can be re-read from ``details`` with SQL
    without scoring again. We chose the details column over one rewards row per head because a
    run's verifier names are unique and ARW aggregates one value per verifier.

One forward for all heads (cache)
    The raw heads are cached per process, keyed by the model (checkpoint files, base folder,
    template hash, device, dtype, frame settings), the media content (a BLAKE2 hash of the sampled
    frames with their shape and indices) and the prompt text. Verifier objects with other heads or
    ``normalize`` (same model) reuse the entry: scoring VQ, MQ and TA of one run costs one forward
    per clip. The cache is bounded (LRU, ``CACHE_SIZE`` entries; a key is three 128-bit hashes).

Input
    The clip's frames (uint8, its own fps): frame sampling at 2 fps, resize, patches and the chat
    text exactly as :mod:`.frames` and :mod:`.template` describe. At least 2 frames (``min_input``);
    smaller pictures are upscaled. A prompt containing a control token (``<|im_end|>``,
    ``<|TA_reward|>``...) is an error row.

Weights and speed
    ``model_path`` (reward checkpoint folder or ``KwaiVGI/VideoReward`` in the HF cache),
    ``base_model_path`` (Qwen2-VL-2B-Instruct folder or hub id; default: the base named in
    ``model_config.json``), ``template_path`` (VideoAlign's ``prompt_template.py`` or the template as
    text; hash-checked). Nothing is downloaded: :meth:`check_ready` lists every missing file with
    the command that fetches it. ``dtype: auto`` is bfloat16 on CUDA (the reference's dtype) and
    float32 on CPU. Clips go through the model ``batch_size`` at a time (right padding); a CUDA
    out-of-memory error halves the batch and retries (down to 1).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avits_core.errors import ConfigError, MissingWeightsError
from avits_core.loading import chunks_halving_on_oom
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers import hf
from avits_core.verifiers.base import MinInput, Verifier
from avits_core.verifiers.videoreward import checkpoint as ck
from avits_core.verifiers.videoreward import frames as fr
from avits_core.verifiers.videoreward import template as tp


HEAD_NAMES = ("VQ", "MQ", "TA", "overall")
CACHE_SIZE = 100_000
_HEADS: "OrderedDict[tuple[str, str, str], np.ndarray]" = OrderedDict()  # (model, media, text) hashes -> raw
_HEADS_LOCK = threading.Lock()


def clear_head_cache() -> None:
    with _HEADS_LOCK:
        _HEADS.clear()


def _resolve_folder(path: str, *, what: str, hint: str, cache_dir: str | None) -> Path:
    """A local folder, or a hub id's snapshot in the local HF cache; MissingWeightsError otherwise."""
    return hf.resolve_folder(path, what=what, hint=hint, cache_dir=cache_dir)


class VideoReward(Verifier):
    """VideoReward head (VQ, MQ, TA or overall), normalised with the checkpoint's inference_config
    by default; unbounded, higher is better. See the module docstring for the exact definition."""

    name = "videoreward"
    version = "1"
    higher_is_better = True
    value_range = (None, None)
    needs_weights = True
    min_input = MinInput(frames=2, modalities=("video", "text"))
    identity_params = ("head", "normalize", "fps", "nframes", "min_pixels", "max_pixels", "template_sha256")

    def __init__(
        self,
        head: str = "TA",
        normalize: bool = True,
        model_path: str = ck.REWARD_REPO,
        base_model_path: str | None = None,
        template_path: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 4,
        fps: float | None = None,
        nframes: int | None = None,
        min_pixels: int = fr.VIDEO_MIN_PIXELS,
        max_pixels: int | None = None,
        text_field: str = "text",
        cache_dir: str | None = None,
        template_sha256: str = tp.TEMPLATE_SHA256,
    ) -> None:
        if head not in HEAD_NAMES:
            raise ConfigError(f"videoreward: head must be one of {list(HEAD_NAMES)}, got {head!r}")
        if not isinstance(normalize, bool):
            raise ConfigError(f"videoreward: normalize must be true or false, got {normalize!r}")
        self.head, self.normalize = head, normalize
        self.model_path = str(model_path)
        self.base_model_path = None if base_model_path is None else str(base_model_path)
        self.template_path = None if template_path is None else str(template_path)
        self.device = hf.parse_device(device)
        if str(dtype).lower() == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.dtype = hf.dtype_name(dtype)
        self.batch_size = hf.check_batch_size(batch_size)
        if fps is not None and not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and fps > 0):
            raise ConfigError(f"videoreward: fps must be a number > 0, got {fps!r}")
        if nframes is not None:
            hf.check_batch_size(nframes, "videoreward: nframes")
            if fps is not None:
                raise ConfigError("videoreward: give fps or nframes, not both")
        for key, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
            if v is not None:
                hf.check_batch_size(v, f"videoreward: {key}")
        self.fps, self.nframes = fps, nframes
        self.min_pixels, self.max_pixels = int(min_pixels), max_pixels
        self.text_field = str(text_field)
        self.cache_dir = cache_dir
        self.template_sha256 = str(template_sha256)

    # -- weights -------------------------------------------------------------------------------
    def _reward_dir(self) -> Path:
        return _resolve_folder(self.model_path, what="VideoReward (model_path)", hint=ck.reward_hint(),
                               cache_dir=self.cache_dir)

    def _base_dir(self, cfg: ck.RewardConfig | None) -> Path:
        base = self.base_model_path or (cfg.base_model if cfg else ck.BASE_REPO)
        return _resolve_folder(base, what="VideoReward base model (base_model_path)", hint=ck.base_hint(),
                               cache_dir=self.cache_dir)

    def missing_files(self) -> list[str]:
        """Every file this verifier needs that is not on disk, each with where to get it (empty = ready)."""
        missing: list[str] = []
        cfg = None
        layout = None
        try:
            reward = self._reward_dir()
            mc = reward / "model_config.json"
            if not mc.is_file():
                missing.append(f"{mc} ({ck.reward_hint()})")
            else:
                cfg = ck.read_model_config(mc)
            steps = ck.checkpoint_steps(reward)
            if not steps:
                missing.append(f"{reward}/checkpoint-<step>/{ck.FULL_FILE} (or {ck.ADAPTER_FILE} + "
                               f"{ck.NON_LORA_FILE}) ({ck.reward_hint()})")
            else:
                layout, _ = ck.checkpoint_layout(steps[0][1])
        except MissingWeightsError as exc:
            missing.append(str(exc))
        try:
            base = self._base_dir(cfg)
            need = [base / "config.json", base / "tokenizer_config.json"]
            if not (base / "tokenizer.json").is_file() and not (base / "vocab.json").is_file():
                need.append(base / "tokenizer.json")
            if layout == "adapter":
                need += ck.base_weight_files(base)
            missing += [f"{p} ({ck.base_hint()})" for p in need if not p.is_file()]
        except MissingWeightsError as exc:
            missing.append(str(exc))
        if self.template_path is None:
            missing.append(f"template_path is not set: {tp.template_hint()}")
        elif not Path(os.path.expanduser(self.template_path)).is_file():
            missing.append(f"{self.template_path} ({tp.template_hint(self.template_path)})")
        return missing

    def check_ready(self) -> None:
        """Raise MissingWeightsError listing every missing file; TemplateError / CheckpointError when a
        file is there but wrong (template hash, model_config.json fields)."""
        missing = self.missing_files()
        if missing:
            raise MissingWeightsError("VideoReward cannot run; missing:\n" + "\n".join(f"  - {m}" for m in missing))
        self._template()

    def _template(self) -> str:
        if self.template_path is None:
            raise MissingWeightsError(f"videoreward: template_path is not set: {tp.template_hint()}")
        return tp.load_template(self.template_path, expected_sha256=self.template_sha256)

    def _settings(self, cfg: ck.RewardConfig) -> dict[str, Any]:
        fps = None if self.nframes is not None else float(self.fps if self.fps is not None else cfg.fps)
        return dict(fps=fps, nframes=self.nframes, min_pixels=self.min_pixels,
                    max_pixels=int(self.max_pixels if self.max_pixels is not None else cfg.max_pixels))

    def _components(self) -> tuple[Any, ck.RewardConfig, str, dict[str, Any], str]:
        """(loaded model, reward config, template, frame settings, model cache key)."""
        from avits_core.verifiers.videoreward.model import load_reward_model

        reward = self._reward_dir()
        cfg = ck.read_model_config(reward / "model_config.json")
        base = self._base_dir(cfg)
        template = self._template()
        steps = ck.checkpoint_steps(reward)
        if not steps:
            raise MissingWeightsError(f"VideoReward: no checkpoint-<step> folder in {str(reward)!r}; {ck.reward_hint()}")
        _, files = ck.checkpoint_layout(steps[0][1])
        ident = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        key_path = f"{base.resolve()}|{ident}"
        model = hf.cached("VideoReward", key_path, self.device, self.dtype,
                          lambda: load_reward_model(base, reward, self.device, hf.parse_dtype(self.dtype), cfg))
        settings = self._settings(cfg)
        model_key = hashlib.blake2b(repr((key_path, self.device, self.dtype, tp.sha256_text(template),
                                          sorted(settings.items()))).encode(), digest_size=16).hexdigest()
        return model, cfg, template, settings, model_key

    # -- scoring -------------------------------------------------------------------------------
    @staticmethod
    def _media_key(clip: AVClip, settings: dict[str, Any]) -> tuple[str, list[int], tuple[int, int]]:
        """(content hash of the frames the model reads, their indices, model picture size)."""
        v = np.asarray(clip.video)
        if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8:
            raise ValueError(f"videoreward: video must be uint8 (T, H, W, 3), got {v.dtype} {v.shape}")
        n = fr.num_frames(int(v.shape[0]), float(clip.fps), fps=settings["fps"] or 2.0, nframes=settings["nframes"])
        idx = fr.frame_indices(int(v.shape[0]), n)
        size = fr.smart_resize(int(v.shape[1]), int(v.shape[2]), min_pixels=settings["min_pixels"],
                               max_pixels=settings["max_pixels"])
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((v.shape, idx, size)).encode())
        for i in idx:
            h.update(np.ascontiguousarray(v[i]).tobytes())
        return h.hexdigest(), idx, size

    def raw_heads(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> np.ndarray:
        """Raw (B, 3) VQ, MQ, TA for the clips, from the cache or from the model (one forward per missing clip)."""
        model, _, template, settings, model_key = self._components()
        keys, texts = [], []
        for c, p in zip(clips, prompts):
            text = tp.format_prompt(template, hf.prompt_text(p, self.text_field))
            digest, _, _ = self._media_key(c, settings)
            texts.append(text)
            keys.append((model_key, digest, hashlib.blake2b(text.encode(), digest_size=16).hexdigest()))
        out = np.full((len(clips), 3), np.nan)
        todo: list[int] = []
        with _HEADS_LOCK:
            for i, k in enumerate(keys):
                if k in _HEADS:
                    _HEADS.move_to_end(k)
                    out[i] = _HEADS[k]
                else:
                    todo.append(i)
        # identical (clip, prompt) pairs inside one batch are forwarded once
        first: dict[tuple, int] = {}
        uniq = [i for i in todo if first.setdefault(keys[i], i) == i]
        if uniq:
            values = self._forward(model, [clips[i] for i in uniq], [texts[i] for i in uniq], settings)
            with _HEADS_LOCK:
                for i, v in zip(uniq, values):
                    _HEADS[keys[i]] = v
                    _HEADS.move_to_end(keys[i])
                while len(_HEADS) > CACHE_SIZE:
                    _HEADS.popitem(last=False)
            for i, v in zip(uniq, values):
                out[i] = v
            for i in todo:
                out[i] = out[first[keys[i]]]
        return out

    def _forward(self, model: Any, clips: Sequence[AVClip], texts: Sequence[str], settings: dict[str, Any]) -> np.ndarray:
        items = []
        for c, text in zip(clips, texts):
            vi = fr.prepare_video(c.video, float(c.fps), fps=settings["fps"] or 2.0, nframes=settings["nframes"],
                                  min_pixels=settings["min_pixels"], max_pixels=settings["max_pixels"])
            items.append((model.token_ids(text, vi.num_tokens), vi.patches, vi.grid))

        def run(lo: int, hi: int) -> np.ndarray:
            chunk = items[lo:hi]
            return model.forward([t for t, _, _ in chunk], [p for _, p, _ in chunk], [g for _, _, g in chunk])

        return np.concatenate(chunks_halving_on_oom(self, len(items), run, device=self.device,
                                                    what="videoreward", unit="clips"))

    def heads(self, raw: np.ndarray) -> list[dict[str, float]]:
        """Per clip: raw and normalised heads, ``overall`` and ``overall_raw`` (see the module docstring)."""
        cfg = ck.read_model_config(self._reward_dir() / "model_config.json")
        rows = []
        for r in np.asarray(raw, dtype=np.float64):
            d: dict[str, float] = {}
            for j, h in enumerate(tp.HEADS):
                mean, std = cfg.norm[h]
                d[f"{h}_raw"] = float(r[j])
                d[h] = float((r[j] - mean) / std)
            d["overall"] = d["VQ"] + d["MQ"] + d["TA"]
            d["overall_raw"] = d["VQ_raw"] + d["MQ_raw"] + d["TA_raw"]
            rows.append(d)
        return rows

    def _value(self, d: dict[str, float]) -> float:
        key = self.head if self.normalize else f"{self.head}_raw"
        return d[key]

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        return [self._value(d) for d in self.heads(self.raw_heads(clips, prompts))]

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        return self.score_clips([clip], [prompt])[0]

    def score_details(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[dict[str, Any]]:
        """Every head raw and normalised, and the frames/size the model read (served from the cache)."""
        _, _, _, settings, _ = self._components()
        rows = self.heads(self.raw_heads(clips, prompts))
        for d, c in zip(rows, clips):
            _, idx, (h, w) = self._media_key(c, settings)
            d.update(frames=len(idx), height=h, width=w)
        return rows
