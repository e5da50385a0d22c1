"""JavisBench's FVD features: its Inception-v1 I3D (``i3d_pretrained_400.pt``) and its preprocessing.

JavisBench's evaluator computes FVD/KVD on the 400 Kinetics logits of an Inception-v1 I3D in the
PyTorch layout of ``pytorch_i3d`` (weights ``i3d_pretrained_400.pt``, a plain state dict), not on
StyleGAN-V's TorchScript features that :class:`avits_core.metrics.features.I3DVideoFeatures` uses.
This module rebuilds that network in plain torch with the same parameter names (strict loading from
a local path; nothing is downloaded) and its input pipeline.

Network (Carreira & Zisserman's I3D as ported to PyTorch)
    Every convolution and max-pool pads "SAME" the TensorFlow way, computed from the input size:
    pad = max(k - s, 0) when the size divides by the stride, else max(k - size % s, 0), split with the
    smaller half in front. Units are conv3d (no bias) + batch norm (eps 1e-5) + ReLU.
    Stem: 7x7x7/2 -> 64, max-pool 1x3x3/(1,2,2), 1x1x1 -> 64, 3x3x3 -> 192, max-pool 1x3x3/(1,2,2);
    Inception blocks 3b, 3c, max-pool 3x3x3/2, 4b-4f, max-pool 2x2x2/2, 5b, 5c (four branches:
    1x1; 1x1 -> 3x3; 1x1 -> 3x3; max-pool 3x3x3/1 -> 1x1; concatenated); average pool 2x7x7 (stride
    1, no padding); dropout (identity in eval); 1x1x1 conv with bias to 400 logits; squeeze the
    spatial axes and average over the remaining time steps -> (B, 400).

Input pipeline of the evaluator (``FVDFADDataset`` + ``get_fvd_logits``)
    1. ``max_frames`` (24) frames at round(linspace(0, T - 1, 24)) (repeats for short clips);
    2. each frame to float in [0, 1], resized (bilinear, antialiased, as torchvision's tensor Resize)
       so that its LONGER side is 224 (the other int(224 * short / long)), then zero-padded to
       224 x 224 (smaller half of the padding in front);
    3. the QUIRK: the result is mapped as if it were in [-1, 1]: uint8(trunc(clamp((x + 1) * 127.5,
       0, 255))), so frames end up in 127..255 and the padding is grey 127;
    4. x / 255 - 0.5, times 2 (the evaluator's resize to 224 and centre crop are no-ops here), layout
       (B, 3, T, 224, 224), float32.
Frames come as uint8 RGB (the evaluator decodes with OpenCV and flips BGR -> RGB).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avits_core.loading import check_state_dict
from avits_core.media import AVClip
from avits_core.verifiers import hf

I3D_JB_HINT = ("get JavisBench's I3D once (`wget https://huggingface.co/spaces/LanguageBind/Open-Sora-Plan-v1.0.0/"
               "resolve/810fa8c4bdb3a4c8eec9bd57375c29bde6fb46de/opensora/eval/fvd/videogpt/i3d_pretrained_400.pt`) "
               "and pass its path")
#: (name, input channels, branch widths) of the Inception blocks, in order.
_MIXED = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    p = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return p // 2, p - p // 2


def build_i3d(num_classes: int = 400) -> Any:
    """A randomly initialised JavisBench I3D (eval mode); load weights with :func:`load_i3d`."""
    import torch

    nn, F = torch.nn, torch.nn.functional

    def pad3d(x, k, s):  # noqa: ANN001, ANN202
        t, h, w = x.shape[-3:]
        pt, ph, pw = _same_pad(t, k[0], s[0]), _same_pad(h, k[1], s[1]), _same_pad(w, k[2], s[2])
        return F.pad(x, (pw[0], pw[1], ph[0], ph[1], pt[0], pt[1]))

    class Unit(nn.Module):
        def __init__(self, cin: int, cout: int, k=(1, 1, 1), s=(1, 1, 1), bn: bool = True, relu: bool = True,
                     bias: bool = False) -> None:
            super().__init__()
            self.k, self.s, self.relu = tuple(k), tuple(s), relu
            self.conv3d = nn.Conv3d(cin, cout, self.k, stride=self.s, padding=0, bias=bias)
            self.bn = nn.BatchNorm3d(cout, eps=1e-5, momentum=0.001) if bn else None

        def forward(self, x):  # noqa: ANN001, ANN202
            x = self.conv3d(pad3d(x, self.k, self.s))
            if self.bn is not None:
                x = self.bn(x)
            return F.relu(x) if self.relu else x

    class Pool(nn.Module):
        def __init__(self, k, s) -> None:  # noqa: ANN001
            super().__init__()
            self.k, self.s = tuple(k), tuple(s)

        def forward(self, x):  # noqa: ANN001, ANN202
            return F.max_pool3d(pad3d(x, self.k, self.s), self.k, self.s)

    class Mixed(nn.Module):
        def __init__(self, cin: int, w: Sequence[int]) -> None:
            super().__init__()
            self.b0 = Unit(cin, w[0])
            self.b1a, self.b1b = Unit(cin, w[1]), Unit(w[1], w[2], (3, 3, 3))
            self.b2a, self.b2b = Unit(cin, w[3]), Unit(w[3], w[4], (3, 3, 3))
            self.b3a, self.b3b = Pool((3, 3, 3), (1, 1, 1)), Unit(cin, w[5])

        def forward(self, x):  # noqa: ANN001, ANN202
            return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)

    class I3D(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.order: list[str] = []

            def add(name: str, mod: Any) -> None:
                self.add_module(name, mod)
                self.order.append(name)

            add("Conv3d_1a_7x7", Unit(3, 64, (7, 7, 7), (2, 2, 2)))
            add("MaxPool3d_2a_3x3", Pool((1, 3, 3), (1, 2, 2)))
            add("Conv3d_2b_1x1", Unit(64, 64))
            add("Conv3d_2c_3x3", Unit(64, 192, (3, 3, 3)))
            add("MaxPool3d_3a_3x3", Pool((1, 3, 3), (1, 2, 2)))
            for name, cin, w in _MIXED:
                if name == "Mixed_4b":
                    add("MaxPool3d_4a_3x3", Pool((3, 3, 3), (2, 2, 2)))
                if name == "Mixed_5b":
                    add("MaxPool3d_5a_2x2", Pool((2, 2, 2), (2, 2, 2)))
                add(name, Mixed(cin, w))
            self.logits = Unit(1024, num_classes, bn=False, relu=False, bias=True)

        def forward(self, x):  # noqa: ANN001, ANN202
            for name in self.order:
                x = getattr(self, name)(x)
            x = self.logits(F.avg_pool3d(x, (2, 7, 7), stride=1))
            return x.squeeze(3).squeeze(3).mean(dim=2)

    return I3D().eval()


def load_i3d(path: str | os.PathLike[str], device: str = "cpu") -> Any:
    """The I3D with the state dict at ``path`` (strict: a missing or extra key is an error naming it)."""
    import torch

    p = hf.resolve_weights_file(path, what="JavisBench I3D", hint=I3D_JB_HINT)
    sd = torch.load(str(p), map_location="cpu", weights_only=True)
    model = build_i3d()
    check_state_dict(model.state_dict(), sd, what=f"{p}: not JavisBench's I3D layout",
                     ignore_missing=lambda k: k.endswith("num_batches_tracked"))
    model.load_state_dict(sd, strict=False)  # strict but for BatchNorm counters (checked above)
    return model.to(hf.parse_device(device)).eval()


def frame_indices(num_total: int, num_frames: int = 24) -> list[int]:
    """round(linspace(0, T - 1, n)) in float32, as the evaluator picks frames."""
    import torch

    if num_total < 1:
        raise ValueError("the clip has no frames")
    return torch.linspace(0, num_total - 1, num_frames).round().long().tolist()


def preprocess(video: np.ndarray, num_frames: int = 24, size: int = 224) -> Any:
    """uint8 RGB (T, H, W, 3) -> the evaluator's float32 I3D input (3, num_frames, size, size)."""
    import torch

    v = np.asarray(video)
    if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8:
        raise ValueError(f"video must be uint8 (T, H, W, 3), got {v.dtype} {v.shape}")
    x = torch.from_numpy(v[frame_indices(v.shape[0], num_frames)].astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    nh, nw = (size, int(size * w / h)) if h > w else (int(size * h / w), size)
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (size - nh) // 2, (size - nw) // 2
    x = torch.nn.functional.pad(x, (left, size - nw - left, top, size - nh - top))
    u8 = ((x + 1) * 127.5).clamp(0, 255).to(torch.uint8)  # the evaluator's [-1, 1] -> uint8 mapping
    return ((u8.float() / 255.0 - 0.5) * 2).permute(1, 0, 2, 3).contiguous()


class JavisBenchI3DFeatures:
    """FVD/KVD features as JavisBench computes them (a video extractor: clips -> FeatureSet)."""

    def __init__(self, model_path: str | os.PathLike[str], device: str = "cpu", batch_size: int = 4,
                 num_frames: int = 24, size: int = 224) -> None:
        self.model_path = os.fspath(model_path)
        self.device = hf.parse_device(device)
        self.batch_size = hf.check_batch_size(batch_size)
        self.num_frames = hf.check_batch_size(num_frames, "num_frames")
        self.size = hf.check_batch_size(size, "size")

    @property
    def name(self) -> str:
        return f"i3d-jb:{Path(self.model_path).name}/{self.num_frames}f-pad{self.size}"

    def check_ready(self) -> None:
        hf.resolve_weights_file(self.model_path, what="JavisBench I3D", hint=I3D_JB_HINT)

    def __call__(self, clips: Sequence[AVClip]) -> Any:
        import torch

        from avits_core.metrics.features import FeatureSet

        p = hf.resolve_weights_file(self.model_path, what="JavisBench I3D", hint=I3D_JB_HINT)
        model = hf.cached("I3D-JavisBench", p.resolve(), self.device, "float32", lambda: load_i3d(p, self.device))
        out = []
        for i in range(0, len(clips), self.batch_size):
            x = torch.stack([preprocess(c.video, self.num_frames, self.size) for c in clips[i:i + self.batch_size]])
            with torch.inference_mode():
                out.append(model(x.to(self.device)).float().cpu().numpy())
        feats = np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))
        return FeatureSet(feats, self.name)


__all__ = ["JavisBenchI3DFeatures", "build_i3d", "load_i3d", "preprocess", "frame_indices"]
