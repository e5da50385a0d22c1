"""The ImageBind family of verifiers on one embedding-backbone interface.

Backbone interface (:class:`EmbeddingBackbone`): four methods that return one embedding row per
input, in one shared space (rows need not be normalised; every score here L2-normalises them):
    embed_text(texts)                      -> (B, D)
    embed_frames(frames)                   -> (N, D)   uint8 RGB frames (H, W, 3), one image each
    embed_video(videos, fps)               -> (B, D)   uint8 (T, H, W, 3) clips with their frame rates
    embed_audio(waves, sample_rates)       -> (B, D)   mono float waves with their sample rates

Backbones
    ``ImageBindBackbone`` (``backbone="imagebind"``): the official ImageBind-huge model. It needs the
        ``imagebind`` package (github.com/facebookresearch/ImageBind, which needs torchvision and
        torchaudio, so it is *not* installable beside this project's CPU torch; install it on the GPU
        machine) and the official ``imagebind_huge.pth`` state dict as a local file (``model_path``;
        never downloaded at run time). Without either, :meth:`check_ready` raises MissingWeightsError
        saying what to install or fetch. Inputs are prepared here without torchvision/torchaudio,
        following ImageBind's ``data.py``: frames are resized (short side 224, bicubic), centre
        cropped and normalised with the CLIP mean/std; a video becomes 5 clips of 2 s (2 frames
        each, evenly spaced clip starts), short-side scaled to 224 (bilinear) with 3 spatial crops;
        audio is resampled to 16 kHz, cut into 3 clips of 2 s and turned into a 128-bin Kaldi log-mel
        filterbank (25 ms / 10 ms, Hanning, pre-emphasis 0.97, padded/cropped to 204 frames,
        normalised with mean -4.268, std 9.138). The model averages over clips and crops.
    ``TinyBackbone`` (``backbone="tiny"``): a small, randomly initialised (seeded) torch network with
        the same four towers. Its numbers mean nothing; it exists so that the whole pipeline and
        the formulas run on a CPU with no weights (tests, ``make demo``).
    Any object with the four methods can be passed as ``backbone=`` (tests use designed vectors).

Scores (all cosines in [-1, 1], higher is better)
    ib_tv        cos(text, video)
    ib_ta        cos(text, audio)
    ib_av        cos(video, audio)
    avh_score    mean over frames f of cos(frame_f, whole-clip audio) (TAVGBench's AVHScore), over
                 ``num_frames`` (16) frames sampled uniformly (all frames when fewer).
    javis_score  JavisScore: windows of ``window_s`` = 2.0 s with ``overlap_s`` = 1.5 s (step 0.5 s)
                 over D = min(video duration, audio duration); window w covers [s_w, s_w + 2.0) for
                 s_w = 0, 0.5, ... while s_w + 2.0 <= D. A clip shorter than one window is one window
                 [0, D). Per window: the cosines between each frame inside the window and the
                 embedding of the window's audio; the mean of the lowest ``fraction`` (40%) of them,
                 k = max(1, floor(0.4 n)) frames; JavisScore = the mean over windows. Frames: the
                 ``num_frames`` (16) frames sampled uniformly from the clip (JavisBench evaluates 16
                 frames per video), a frame at index i sitting at time i / fps; a window that holds
                 none of them uses the sampled frame nearest to its centre. ``num_frames=None``
                 uses every frame. Each frame is embedded once even when windows share it.

Protocol ``javisbench`` (``protocol="javisbench"``: JavisBench's evaluator, ``calc_imagebind_score`` and
``calc_av_score`` in JavisDiT ``eval/javisbench``; checked against its code, not its numbers)
    ib_tv, ib_av  the same recipe as ours (ImageBind's own video and audio transforms); only the
                  decoding differs (the evaluator reads files with pytorchvideo / torchaudio).
    ib_ta        the text is the CSV's ``audio_text`` column when the set has one, else ``text``.
    avh_score    EVERY frame of the clip (the evaluator embeds each decoded frame), not 16.
    javis_score  the evaluator's windows, counted in frames and samples, not seconds: audio
                 resampled to 16 kHz (librosa soxr_hq here; torchaudio there); frame windows of
                 int(2.0 * fps) frames with step int(2.0 * fps) - int(1.5 * fps), audio windows of
                 32000 samples with step 8000, each list's last window moved back to end at the last
                 frame / sample, both lists cut to the shorter; a clip with at most one window of
                 frames or of audio is one window of every frame and the whole audio. Per window: the
                 cosines of each of its frames with the window audio's embedding, the mean of the
                 k = int(0.4 * n) lowest (no max(1, .): k = 0, e.g. 2 frames, is an error row where
                 the evaluator would produce NaN); the mean over windows.
    The evaluator's text for ib_tv, avh and javis is ``text``; ``text_field`` cannot be changed.
"""

from __future__ import annotations

import logging
import math
import os
import re
import zlib
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from avits_core.errors import ConfigError, MissingWeightsError
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers import hf
from avits_core.verifiers.base import MinInput, Verifier
from avits_core.verifiers.clip import sample_frames, uniform_frame_indices

log = logging.getLogger(__name__)

DEFAULT_IMAGEBIND_PATH = ".checkpoints/imagebind_huge.pth"
IMAGEBIND_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IB_AUDIO_MEAN = -4.268
IB_AUDIO_STD = 9.138


@runtime_checkable
class EmbeddingBackbone(Protocol):
    """A joint text / image / video / audio embedding model (see the module docstring)."""

    name: str

    def embed_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray: ...

    def embed_video(self, videos: Sequence[np.ndarray], fps: Sequence[float]) -> np.ndarray: ...

    def embed_audio(self, waves: Sequence[np.ndarray], sample_rates: Sequence[int]) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------------
# Preprocessing without torchvision / torchaudio
# --------------------------------------------------------------------------------------------------
def kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float = 20.0,
                    high_freq: float | None = None) -> Any:
    """Kaldi's triangular mel filters on the mel scale 1127 ln(1 + f/700): (num_bins, n_fft//2 + 1).

    The last column (the Nyquist bin) is zero, as in Kaldi."""
    import torch

    high = sample_rate / 2.0 if not high_freq else float(high_freq)
    mel = lambda f: 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)  # noqa: E731
    mel_low, mel_high = mel(low_freq), mel(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64)[:, None]
    left = mel_low + b * delta
    center = left + delta
    right = center + delta
    m = mel(sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float64))[None, :]
    up = (m - left) / (center - left)
    down = (right - m) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1)).float()


def kaldi_fbank(wave: np.ndarray, sample_rate: int, num_mel_bins: int = 128,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
                preemphasis: float = 0.97, low_freq: float = 20.0) -> Any:
    """Kaldi-compatible log-mel filterbank (as torchaudio.compliance.kaldi.fbank with a Hanning
    window, dither 0, snip_edges, power spectrum, no energy): float32 tensor (frames, num_mel_bins).

    Per frame: remove the DC offset, pre-emphasise (x[i] - 0.97 x[i-1], x[-1] = x[0]), apply a
    symmetric Hann window, zero-pad to the next power of two, |rfft|^2, mel filters, log(max(., eps)).
    Audio shorter than one frame gives zero frames."""
    import torch

    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    win = int(sample_rate * frame_length_ms / 1000.0)
    shift = int(sample_rate * frame_shift_ms / 1000.0)
    if x.numel() < win:
        return torch.zeros((0, num_mel_bins), dtype=torch.float32)
    frames = x.unfold(0, win, shift)  # (n, win), snip_edges
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - preemphasis * prev) * torch.hann_window(win, periodic=False)
    n_fft = 1 << (win - 1).bit_length()
    power = torch.fft.rfft(frames, n=n_fft).abs().pow(2)
    mel = power @ kaldi_mel_banks(num_mel_bins, n_fft, sample_rate, low_freq).T
    return torch.clamp(mel, min=torch.finfo(torch.float32).eps).log()


def _even_clip_starts(duration: float, clip_duration: float, clips: int) -> list[float]:
    """Evenly spaced clip starts over [0, duration - clip_duration] (pytorchvideo's constant sampler)."""
    max_start = max(duration - clip_duration, 0.0)
    step = max_start / max(clips - 1, 1)
    return [i * step for i in range(clips)]


def ib_audio_input(wave: np.ndarray, sample_rate: int, *, target_rate: int = 16000, clip_duration: float = 2.0,
                   clips_per_audio: int = 3, num_mel_bins: int = 128, target_length: int = 204) -> Any:
    """ImageBind's audio input for one wave: float32 (clips_per_audio, 1, num_mel_bins, target_length)."""
    import torch

    w = hf.resample_audio(wave, int(sample_rate), target_rate)
    if w.size == 0:
        raise ValueError("the audio is empty")
    out = []
    for s in _even_clip_starts(w.shape[0] / target_rate, clip_duration, clips_per_audio):
        seg = w[int(s * target_rate): int((s + clip_duration) * target_rate)]
        seg = seg - seg.mean() if seg.size else seg
        fb = kaldi_fbank(seg, target_rate, num_mel_bins).T  # (bins, frames)
        n = fb.shape[1]
        if n < target_length:
            fb = torch.nn.functional.pad(fb, (0, target_length - n))
        else:
            fb = fb[:, :target_length]
        out.append(((fb - IB_AUDIO_MEAN) / IB_AUDIO_STD)[None])
    return torch.stack(out)


def _normalise_chw(x: Any) -> Any:
    import torch

    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype).view(3, *([1] * (x.dim() - 1)))
    std = torch.tensor(CLIP_STD, dtype=x.dtype).view(3, *([1] * (x.dim() - 1)))
    return (x - mean) / std


def ib_image_input(frames: Sequence[np.ndarray], size: int = 224) -> Any:
    """ImageBind's vision input for single frames: resize the short side to ``size`` (PIL bicubic),
    centre crop, scale to [0, 1], CLIP mean/std. float32 (N, 3, size, size)."""
    import torch
    from PIL import Image

    out = []
    for f in frames:
        img = Image.fromarray(np.ascontiguousarray(f))
        w, h = img.size
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BICUBIC)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        out.append(_normalise_chw(t))
    return torch.stack(out)


def ib_video_input(video: np.ndarray, fps: float, *, clip_duration: float = 2.0, clips_per_video: int = 5,
                   frames_per_clip: int = 2, size: int = 224) -> Any:
    """ImageBind's vision input for one video: float32 (clips_per_video * 3, 3, frames_per_clip, size, size).

    Clips of ``clip_duration`` s at evenly spaced starts; in each, ``frames_per_clip`` frames evenly
    spaced over the frames with start <= i / fps < end; short side scaled to ``size`` (bilinear);
    CLIP mean/std; three crops along the long side (start, centre, end)."""
    import torch

    v = np.asarray(video)
    T = v.shape[0]
    if T == 0:
        raise ValueError("the video has no frames")
    times = np.arange(T) / float(fps)
    crops = []
    for s in _even_clip_starts(T / float(fps), clip_duration, clips_per_video):
        idx = np.nonzero((times >= s - 1e-9) & (times < s + clip_duration - 1e-9))[0]
        if idx.size == 0:
            idx = np.array([min(int(round(s * fps)), T - 1)])
        pick = idx[torch.linspace(0, idx.size - 1, frames_per_clip).long().numpy()]
        x = torch.from_numpy(v[pick].astype(np.float32) / 255.0).permute(3, 0, 1, 2)  # (C, t, H, W)
        h, w = x.shape[-2:]
        nh, nw = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        x = _normalise_chw(x)
        for k in range(3):
            y0, x0 = int(math.ceil((nh - size) / 2)), int(math.ceil((nw - size) / 2))
            if nh > nw:
                y0 = 0 if k == 0 else (nh - size if k == 2 else y0)
            else:
                x0 = 0 if k == 0 else (nw - size if k == 2 else x0)
            crops.append(x[:, :, y0:y0 + size, x0:x0 + size])
    return torch.stack(crops)


# --------------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------------
def _import_imagebind() -> tuple[Callable[..., Any], Any, Any, Path]:
    """(imagebind_huge, ModalityType, SimpleTokenizer, bpe_path) from the installed package."""
    import importlib

    try:
        ib_model = importlib.import_module("imagebind.models.imagebind_model")
        pre = importlib.import_module("imagebind.models.multimodal_preprocessors")
        pkg = importlib.import_module("imagebind")
    except Exception as exc:  # ImportError, or torchvision/torchaudio failing inside it
        raise MissingWeightsError(
            "ImageBind backbone: the `imagebind` package cannot be imported "
            f"({type(exc).__name__}: {exc}). Install it on a machine with matching torchvision and "
            "torchaudio: `pip install git+https://github.com/facebookresearch/ImageBind`; "
            "or use backbone='tiny' for a weight-free smoke run"
        ) from None
    pkg_dir = Path(getattr(pkg, "__file__", None) or next(iter(pkg.__path__))).parent
    bpe = pkg_dir / "bpe" / "bpe_simple_vocab_16e6.txt.gz"
    return ib_model.imagebind_huge, ib_model.ModalityType, pre.SimpleTokenizer, bpe


class ImageBindBackbone:
    """Official ImageBind-huge from a local state-dict file (see the module docstring)."""

    name = "imagebind_huge"

    def __init__(self, model_path: str | os.PathLike[str] | None = None, device: str = "cpu",
                 dtype: str = "float32", bpe_path: str | None = None) -> None:
        self.model_path = os.fspath(model_path) if model_path else os.environ.get(
            "AVITS_IMAGEBIND_WEIGHTS", DEFAULT_IMAGEBIND_PATH)
        self.device = hf.parse_device(device)
        self.dtype = str(hf.parse_dtype(dtype)).removeprefix("torch.")
        self.bpe_path = bpe_path

    def weights_file(self) -> Path:
        return hf.resolve_weights_file(
            self.model_path, what="ImageBind",
            hint=f"download the official checkpoint once with `wget {IMAGEBIND_URL} -O {self.model_path}` "
                 f"(4.5 GB) or pass model_path=<local imagebind_huge.pth>",
        )

    def check_ready(self) -> None:
        path = self.weights_file()
        _, _, _, bpe = _import_imagebind()
        bpe = Path(self.bpe_path) if self.bpe_path else bpe
        if not bpe.is_file():
            raise MissingWeightsError(f"ImageBind: BPE vocabulary {str(bpe)!r} not found (pass bpe_path=)")
        log.debug("ImageBind ready: %s", path)

    def _load(self) -> tuple[Any, Any, Any]:
        path = self.weights_file()
        build, modality, tokenizer_cls, bpe = _import_imagebind()

        def load() -> tuple[Any, Any, Any]:
            import torch

            model = build(pretrained=False)
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            model = model.to(device=self.device, dtype=hf.parse_dtype(self.dtype)).eval()
            return model, modality, tokenizer_cls(str(self.bpe_path or bpe))

        return hf.cached("ImageBind", path.resolve(), self.device, self.dtype, load)

    def _run(self, key: str, x: Any) -> np.ndarray:
        import torch

        model, modality, _ = self._load()
        mkey = getattr(modality, key)
        if x.is_floating_point():
            x = x.to(self.device, hf.parse_dtype(self.dtype))
        else:
            x = x.to(self.device)
        with torch.inference_mode():
            out = model({mkey: x})[mkey]
        return out.float().cpu().numpy().astype(np.float64)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        _, _, tok = self._load()
        return self._run("TEXT", tok(list(texts)))

    def embed_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return self._run("VISION", ib_image_input(frames))

    def embed_video(self, videos: Sequence[np.ndarray], fps: Sequence[float]) -> np.ndarray:
        import torch

        return self._run("VISION", torch.stack([ib_video_input(v, f) for v, f in zip(videos, fps)]))

    def embed_audio(self, waves: Sequence[np.ndarray], sample_rates: Sequence[int]) -> np.ndarray:
        import torch

        return self._run("AUDIO", torch.stack([ib_audio_input(w, r) for w, r in zip(waves, sample_rates)]))


class TinyBackbone:
    """A small seeded random network with ImageBind's four towers (no weights; numbers are not a
    measurement). Text: hashed word tokens -> mean embedding -> linear. Frames: 32x32 resize -> two
    strided convs -> pooled -> linear. Video: up to 8 uniformly sampled frames through the frame
    trunk; mean and mean absolute temporal difference -> linear. Audio: 16 kHz, 64-bin Kaldi
    log-mel -> mean and std over time -> linear. Deterministic for a given (dim, seed)."""

    name = "tiny"
    VOCAB = 4096
    #: Its own windowing: one 25 ms Kaldi frame of audio, one frame of video (see input_floor).
    min_input = MinInput(frames=1, audio_seconds=0.025)

    def __init__(self, dim: int = 32, seed: int = 0, device: str = "cpu", dtype: str = "float32") -> None:
        if not isinstance(dim, int) or dim < 2:
            raise ConfigError(f"TinyBackbone dim must be an integer >= 2, got {dim!r}")
        self.dim, self.seed = dim, int(seed)
        self.device = hf.parse_device(device)
        self.dtype = str(hf.parse_dtype(dtype)).removeprefix("torch.")

    def check_ready(self) -> None:
        """Nothing to fetch."""

    def _net(self) -> Any:
        def build() -> Any:
            import torch
            from torch import nn

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                d, h = self.dim, 16
                net = nn.ModuleDict({
                    "tok": nn.EmbeddingBag(self.VOCAB, d, mode="mean"),
                    "text": nn.Linear(d, d),
                    "trunk": nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(),
                                           nn.Conv2d(8, h, 3, stride=2, padding=1), nn.ReLU(),
                                           nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                    "image": nn.Linear(h, d),
                    "video": nn.Linear(2 * h, d),
                    "audio": nn.Linear(128, d),
                })
            return net.to(self.device, hf.parse_dtype(self.dtype)).eval()

        return hf.cached("TinyBackbone", f"dim={self.dim},seed={self.seed}", self.device, self.dtype, build)

    def _tokens(self, text: str) -> list[int]:
        words = re.findall(r"[a-z0-9]+", text.lower()) or [""]
        return [zlib.crc32(w.encode()) % self.VOCAB for w in words]

    def _trunk(self, frames: Sequence[np.ndarray]) -> Any:
        import torch

        small = []
        for f in frames:  # frames of several clips may differ in size
            x = torch.from_numpy(np.asarray(f, dtype=np.float32) / 255.0 - 0.5).permute(2, 0, 1)[None]
            x = x.to(self.device, hf.parse_dtype(self.dtype))
            small.append(torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False,
                                                         antialias=True))
        return self._net()["trunk"](torch.cat(small))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        net = self._net()
        toks = [self._tokens(t) for t in texts]
        flat = torch.tensor([i for t in toks for i in t], device=self.device)
        offsets = torch.tensor(np.cumsum([0] + [len(t) for t in toks[:-1]]), device=self.device)
        with torch.inference_mode():
            e = net["text"](net["tok"](flat, offsets))
        return e.float().cpu().numpy().astype(np.float64)

    def embed_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            e = self._net()["image"](self._trunk(frames))
        return e.float().cpu().numpy().astype(np.float64)

    def embed_video(self, videos: Sequence[np.ndarray], fps: Sequence[float]) -> np.ndarray:
        import torch

        rows = []
        with torch.inference_mode():
            for v in videos:
                v = np.asarray(v)
                h = self._trunk(v[uniform_frame_indices(v.shape[0], 8)])
                motion = (h[1:] - h[:-1]).abs().mean(0) if h.shape[0] > 1 else torch.zeros_like(h[0])
                rows.append(self._net()["video"](torch.cat([h.mean(0), motion])))
        return torch.stack(rows).float().cpu().numpy().astype(np.float64)

    def embed_audio(self, waves: Sequence[np.ndarray], sample_rates: Sequence[int]) -> np.ndarray:
        import torch

        rows = []
        for w, r in zip(waves, sample_rates):
            a = hf.resample_audio(w, int(r), 16000)
            if a.size < 400:
                a = np.pad(a, (0, 400 - a.size))
            fb = kaldi_fbank(a, 16000, num_mel_bins=64)
            rows.append(torch.cat([fb.mean(0), fb.std(0, unbiased=False)]))
        x = torch.stack(rows).to(self.device, hf.parse_dtype(self.dtype))
        with torch.inference_mode():
            e = self._net()["audio"](x)
        return e.float().cpu().numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------------
# Formulas
# --------------------------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; a zero row becomes NaN (so its score is an error, never 0)."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, x / np.where(n > 0, n, 1.0), np.nan)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (B, D) arrays: (B,)."""
    return np.sum(_unit(a) * _unit(b), axis=-1)


def javis_windows(duration: float, window_s: float = 2.0, overlap_s: float = 1.5) -> list[tuple[float, float]]:
    """Sliding windows [start, end) of ``window_s`` seconds, step ``window_s - overlap_s``, that fit
    in ``duration``; one window [0, duration) when the clip is shorter than a window."""
    if window_s <= 0 or overlap_s < 0 or overlap_s >= window_s:
        raise ConfigError(f"need window_s > overlap_s >= 0, got window_s={window_s}, overlap_s={overlap_s}")
    if not duration > 0:
        raise ValueError(f"clip duration must be > 0, got {duration}")
    if duration <= window_s + 1e-9:
        return [(0.0, float(duration))]
    step = window_s - overlap_s
    n = int(math.floor((duration - window_s) / step + 1e-9)) + 1
    return [(i * step, i * step + window_s) for i in range(n)]


def lowest_fraction_mean(values: np.ndarray, fraction: float = 0.4) -> float:
    """Mean of the k = max(1, floor(fraction * n)) smallest values."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size == 0:
        raise ValueError("no values")
    k = max(1, int(math.floor(fraction * v.size + 1e-9)))
    return float(v[:k].mean())


# --------------------------------------------------------------------------------------------------
# Verifiers
# --------------------------------------------------------------------------------------------------
_METHODS = ("embed_text", "embed_frames", "embed_video", "embed_audio")


def make_backbone(backbone: str | Any = "imagebind", *, model_path: str | None = None, device: str = "cpu",
                  dtype: str = "float32", dim: int = 32, seed: int = 0) -> Any:
    """A backbone from its name ("imagebind", "tiny") or an object with the four embed methods."""
    if isinstance(backbone, str):
        if backbone == "imagebind":
            return ImageBindBackbone(model_path, device=device, dtype=dtype)
        if backbone == "tiny":
            return TinyBackbone(dim=dim, seed=seed, device=device, dtype=dtype)
        raise ConfigError(f"unknown ImageBind-family backbone {backbone!r}; known: 'imagebind', 'tiny'")
    missing = [m for m in _METHODS if not callable(getattr(backbone, m, None))]
    if missing:
        raise ConfigError(f"backbone {type(backbone).__name__} lacks {', '.join(missing)}")
    return backbone


#: Minimum input of the ImageBind towers. Audio: ImageBind cuts 2 s clips into 204 Kaldi fbank
#: frames (25 ms windows every 10 ms) and zero-pads the rest, so 23 ms of audio is no frame at all
#: and anything under 1 s is more than half padding: at least 1 s (98+ real frames of 204), at 8 kHz
#: or more. Video: the vision stem is a 2x14x14 Conv3d over frame pairs, so 2 frames (one frame
#: would be duplicated into a still "clip"); single-frame scores (avh_score, javis_score) need 1.
#: Pictures of at least 32x32 (smaller ones are upscaled blur at 224 px).
IB_AUDIO_SECONDS = 1.0
#: JavisBench's evaluator resamples audio to 16 kHz before cutting JavisScore windows.
JAVISBENCH_SR = 16000
IB_MIN_SIDE = 32


def silence_reason(name: str, clip: AVClip) -> str | None:
    """An error message when the clip's audio is digital silence (peak < 1e-4, -80 dBFS), else None:
    an embedding of silence says nothing about the text or the picture."""
    from avits_core.verifiers.features import SILENCE_PEAK

    a = np.asarray(clip.audio)
    peak = float(np.max(np.abs(a))) if a.size else 0.0
    if not peak >= SILENCE_PEAK:  # NaN counts as unmeasurable too
        return f"{name}: audio is silent (peak amplitude {peak:.2e} < {SILENCE_PEAK:g})"
    return None


class _EmbeddingVerifier(Verifier):
    value_range = (-1.0, 1.0)
    higher_is_better = True
    needs_weights = True

    def input_floor(self) -> tuple[MinInput, bool]:
        """(the smallest measurable clip, whether digital silence is refused) for this backbone.

        ImageBind: the class ``min_input`` (its windowing, see IB_AUDIO_SECONDS) and silence refused.
        A backbone object with its own ``min_input`` (TinyBackbone: one 25 ms fbank frame): that,
        with the verifier's modalities, and silence refused. Any other object (designed vectors in
        tests): no floor beyond a non-empty clip, silence allowed."""
        import dataclasses

        if isinstance(self.backbone, ImageBindBackbone):
            return self.min_input, True
        own = getattr(self.backbone, "min_input", None)
        if isinstance(own, MinInput):
            return dataclasses.replace(own, modalities=self.min_input.modalities), True
        return MinInput(modalities=self.min_input.modalities), False

    def check_input(self, clip: AVClip) -> str | None:
        """The backbone's input floor (see ``input_floor``), and digital silence where refused."""
        floor, refuse_silence = self.input_floor()
        short = floor.shortfall(clip)
        if short:
            return f"input too small for {self.name} ({self.backbone_name}): {short}"
        if refuse_silence and "audio" in floor.modalities:
            return silence_reason(self.name, clip)
        return None

    identity_params = ("protocol",)
    #: prompt column the javisbench protocol reads (the evaluator's): ``text``, or for text-audio
    #: ``audio_text`` when the prompt set has it.
    javisbench_text_field = "text"

    def __init__(self, backbone: str | Any = "imagebind", model_path: str | None = None, device: str = "cpu",
                 dtype: str = "float32", batch_size: int = 4, text_field: str = "text",
                 dim: int = 32, seed: int = 0, protocol: str = "avits") -> None:
        self.batch_size = hf.check_batch_size(batch_size)
        self.protocol = hf.check_protocol(self.name, protocol, text_field)
        self.text_field = self.javisbench_text_field if protocol == "javisbench" else str(text_field)
        self.backbone = make_backbone(backbone, model_path=model_path, device=device, dtype=dtype, dim=dim, seed=seed)

    @property
    def backbone_name(self) -> str:
        return str(getattr(self.backbone, "name", type(self.backbone).__name__))

    def check_ready(self) -> None:
        """Raise MissingWeightsError when the backbone's package or weights file is missing."""
        ready = getattr(self.backbone, "check_ready", None)
        if callable(ready):
            ready()

    def _chunks(self, fn: Callable[..., np.ndarray], *cols: Sequence[Any], size: int | None = None) -> np.ndarray:
        n = len(cols[0])
        step = size or self.batch_size
        parts = [np.asarray(fn(*[list(c[i:i + step]) for c in cols]), dtype=np.float64) for i in range(0, n, step)]
        out = np.concatenate(parts) if parts else np.zeros((0, 0))
        if out.shape[0] != n:
            raise RuntimeError(f"backbone {self.backbone_name} returned {out.shape[0]} rows for {n} inputs")
        return out

    def _text(self, prompts: Sequence[Prompt]) -> np.ndarray:
        return hf.embed_prompt_texts(lambda u: self._chunks(self.backbone.embed_text, u), prompts, self.text_field)

    def _video(self, clips: Sequence[AVClip]) -> np.ndarray:
        return self._chunks(self.backbone.embed_video, [c.video for c in clips], [c.fps for c in clips])

    def _audio(self, waves: Sequence[np.ndarray], rates: Sequence[int]) -> np.ndarray:
        for i, w in enumerate(waves):
            if np.asarray(w).size == 0:
                raise ValueError(f"{self.name}: audio {i} is empty")
            if not np.all(np.isfinite(w)):
                raise ValueError(f"{self.name}: audio {i} contains NaN or infinite samples")
        return self._chunks(self.backbone.embed_audio, waves, rates)

    def _frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return self._chunks(self.backbone.embed_frames, frames, size=self.batch_size * 8)

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        return self.score_clips([clip], [prompt])[0]


class IBTextVideo(_EmbeddingVerifier):
    """ImageBind text-video cosine in [-1, 1]: cos(E_text(text), E_video(video))."""

    name = "ib_tv"
    version = "1"
    min_input = MinInput(frames=2, height=IB_MIN_SIDE, width=IB_MIN_SIDE, modalities=("video", "text"))

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        return cosine_rows(self._text(prompts), self._video(clips)).tolist()


class IBTextAudio(_EmbeddingVerifier):
    """ImageBind text-audio cosine in [-1, 1]: cos(E_text(text), E_audio(audio))."""

    name = "ib_ta"
    version = "1"
    javisbench_text_field = hf.JAVISBENCH_AUDIO_TEXT
    min_input = MinInput(audio_seconds=IB_AUDIO_SECONDS, sample_rate=8000, modalities=("audio", "text"))

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        a = self._audio([c.audio for c in clips], [c.sample_rate for c in clips])
        return cosine_rows(self._text(prompts), a).tolist()


class IBAudioVideo(_EmbeddingVerifier):
    """ImageBind audio-video cosine in [-1, 1]: cos(E_video(video), E_audio(audio)); ignores the prompt."""

    name = "ib_av"
    version = "1"
    min_input = MinInput(frames=2, height=IB_MIN_SIDE, width=IB_MIN_SIDE, audio_seconds=IB_AUDIO_SECONDS,
                         sample_rate=8000, modalities=("video", "audio"))

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        a = self._audio([c.audio for c in clips], [c.sample_rate for c in clips])
        return cosine_rows(self._video(clips), a).tolist()


class AVHScore(_EmbeddingVerifier):
    """AVHScore in [-1, 1]: mean over ``num_frames`` uniformly sampled frames of
    cos(E_frame(frame), E_audio(whole-clip audio)); ignores the prompt."""

    name = "avh_score"
    version = "1"
    min_input = MinInput(frames=1, height=IB_MIN_SIDE, width=IB_MIN_SIDE, audio_seconds=IB_AUDIO_SECONDS,
                         sample_rate=8000, modalities=("video", "audio"))

    def __init__(self, *args: Any, num_frames: int = 16, protocol: str = "avits", **kwargs: Any) -> None:
        super().__init__(*args, protocol=protocol, **kwargs)
        self.num_frames = hf.check_batch_size(num_frames, "num_frames")

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        a = _unit(self._audio([c.audio for c in clips], [c.sample_rate for c in clips]))
        # javisbench: every frame of the clip (the evaluator embeds each decoded frame)
        n = max(c.num_frames for c in clips) if self.protocol == "javisbench" else self.num_frames
        frames, own = sample_frames(clips, n)
        f = _unit(self._frames(frames))
        return [float(np.mean(f[own == ci] @ a[ci])) for ci in range(len(clips))]


class JavisScore(_EmbeddingVerifier):
    """JavisScore in [-1, 1]: mean over sliding windows (2.0 s, 1.5 s overlap) of the mean of the
    lowest 40% of cos(E_frame(frame in window), E_audio(window audio)); see the module docstring."""

    name = "javis_score"
    version = "1"
    #: Its windows span min(video, audio) duration: both tracks need IB_AUDIO_SECONDS.
    min_input = MinInput(frames=1, video_seconds=IB_AUDIO_SECONDS, height=IB_MIN_SIDE, width=IB_MIN_SIDE,
                         audio_seconds=IB_AUDIO_SECONDS, sample_rate=8000, modalities=("video", "audio"))

    def __init__(self, *args: Any, window_s: float = 2.0, overlap_s: float = 1.5, fraction: float = 0.4,
                 num_frames: int | None = 16, protocol: str = "avits", **kwargs: Any) -> None:
        super().__init__(*args, protocol=protocol, **kwargs)
        javis_windows(window_s, window_s, overlap_s)  # validates the window parameters
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
        self.window_s, self.overlap_s, self.fraction = float(window_s), float(overlap_s), float(fraction)
        self.num_frames = None if num_frames is None else hf.check_batch_size(num_frames, "num_frames")

    def plan(self, clip: AVClip) -> list[tuple[float, float, np.ndarray]]:
        """(start, end, frame indices) per window for one clip."""
        duration = min(clip.duration, clip.audio_duration)
        wins = javis_windows(duration, self.window_s, self.overlap_s)
        idx = (np.arange(clip.num_frames) if self.num_frames is None
               else uniform_frame_indices(clip.num_frames, self.num_frames))
        t = idx / float(clip.fps)
        out = []
        for s, e in wins:
            inside = idx[(t >= s - 1e-9) & (t < e - 1e-9)]
            if inside.size == 0:
                inside = idx[[int(np.argmin(np.abs(t - (s + e) / 2.0)))]]
            out.append((s, e, inside))
        return out

    def javisbench_plan(self, clip: AVClip) -> tuple[list[np.ndarray], list[tuple[int, int]], np.ndarray]:
        """The evaluator's windows: (frame indices per window, (start, end) sample ranges of the
        16 kHz audio per window, that audio). Frame windows of int(window_s * fps) frames, step
        int(window_s * fps) - int(overlap_s * fps), the last one moved back to end at the last frame;
        audio windows likewise in samples; both lists cut to the shorter one. A clip with at most
        one window of frames or of audio is one window: every frame and the whole audio."""
        wave = hf.resample_javisbench(clip.audio, clip.sample_rate, JAVISBENCH_SR)
        n_v, n_a = clip.num_frames, int(wave.shape[0])
        vs, vo = int(self.window_s * clip.fps), int(self.overlap_s * clip.fps)
        as_, ao = int(self.window_s * JAVISBENCH_SR), int(self.overlap_s * JAVISBENCH_SR)
        if n_v <= vs or n_a <= as_:
            return [np.arange(n_v)], [(0, n_a)], wave

        def windows(n: int, size: int, step: int) -> list[tuple[int, int]]:
            if step < 1:
                raise ValueError(f"javis_score (javisbench): window step {step} < 1 at this frame rate")
            out = []
            for start in range(0, n, step):
                start = min(start, n - size)
                out.append((start, start + size))
                if start + size >= n:
                    break
            return out

        vw, aw = windows(n_v, vs, vs - vo), windows(n_a, as_, as_ - ao)
        m = min(len(vw), len(aw))
        return [np.arange(s, e) for s, e in vw[:m]], aw[:m], wave

    def _score_javisbench(self, clips: Sequence[AVClip]) -> list[float]:
        scores = []
        for c in clips:
            fwins, awins, wave = self.javisbench_plan(c)
            f = _unit(self._frames([c.video[i] for i in range(c.num_frames)]))
            a = _unit(self._audio([wave[s:e] for s, e in awins], [JAVISBENCH_SR] * len(awins)))
            per = []
            for w, idx in enumerate(fwins):
                k = int(len(idx) * self.fraction)
                if k < 1:  # the evaluator's mean of an empty top-k is NaN
                    raise ValueError(f"javis_score (javisbench): {len(idx)} frames per window give k = 0")
                per.append(float(np.sort(f[idx] @ a[w])[:k].mean()))
            scores.append(float(np.mean(per)))
        return scores

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        if self.protocol == "javisbench":
            return self._score_javisbench(clips)
        plans = [self.plan(c) for c in clips]
        frame_keys: dict[tuple[int, int], int] = {}
        frames, waves, rates = [], [], []
        for ci, (c, plan) in enumerate(zip(clips, plans)):
            for s, e, inside in plan:
                for fi in inside:
                    if (ci, int(fi)) not in frame_keys:
                        frame_keys[(ci, int(fi))] = len(frames)
                        frames.append(c.video[fi])
                r = c.sample_rate
                waves.append(c.audio[int(round(s * r)): int(round(e * r))])
                rates.append(r)
        f = _unit(self._frames(frames))
        a = _unit(self._audio(waves, rates))
        scores, w = [], 0
        for ci, plan in enumerate(plans):
            per_window = []
            for _, _, inside in plan:
                cos = f[[frame_keys[(ci, int(fi))] for fi in inside]] @ a[w]
                per_window.append(lowest_fraction_mean(cos, self.fraction))
                w += 1
            scores.append(float(np.mean(per_window)))
        return scores
