"""TinyBackbone: a seeded random network with ImageBind's four towers, for tests and the demo (no weights)."""

from __future__ import annotations

import re
import zlib
from typing import Any, Sequence

import numpy as np

from avits_core.errors import ConfigError
from avits_core.verifiers import hf
from avits_core.verifiers.base import MinInput
from avits_core.verifiers.clip import uniform_frame_indices
from avits_core.verifiers.imagebind.audio import kaldi_fbank


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
        self.dtype = hf.dtype_name(dtype)

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
