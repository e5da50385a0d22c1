"""AudioCLIP's audio tower (ESResNeXt-fbsp) in plain torch, for FAD in the JavisBench protocol.

JavisBench's FAD is the Fréchet distance of AudioCLIP audio embeddings times 10000. AudioCLIP's
code needs torchvision; this module rebuilds the audio tower from its published architecture with
the same parameter names, so the released checkpoint (``AudioCLIP-Full-Training.pt``, a state dict
whose audio keys start with ``audio.``) loads strictly from a local path. Nothing is downloaded.

Architecture (as in AudioCLIP; defaults are the released model's)
    input      mono float audio (B, L). AudioCLIP rescales it from the int16 range to [-1, 1]:
               x' = (x + 32768) * 2 / 65535 - 1 (so audio already in [-1, 1] comes out squeezed near
               -5e-6 .. +3e-5: JavisBench feeds it so, which is why its distances are tiny and are
               multiplied by 10000).
    framing    frames of ``win_length`` (1654) samples every ``hop_length`` (561): n = 1 if L <= 1654
               else 1 + ceil((L - 1654) / 561); the signal is zero-padded to (n - 1) * 561 + 1654,
               half of the padding (floor) in front; each frame times a periodic Blackman-Harris
               window, then zero-padded on both sides (floor half in front) to ``n_fft`` (2048).
    fbsp       a learnable "Fourier basis with B-spline-like window": for output bin k (1025 bins)
               and t_j = pi * linspace(-1, 1, n_fft)_j + 1e-8, weight_kj = sqrt(fb_k) * w_kj *
               exp(-i fc_k t_j) / sqrt(n_fft) with w_kj = sinc(fb_k t_j / (m_k + 1e-8)) raised to
               the complex power m_k (|w|^m_k e^{i m_k arg w}); spectrum = frames @ weight^T.
    power      the first 3 * (1025 // 3) = 1023 bins, split into 3 bands of 341 bins = the 3 image
               channels; power |.|^2 (0 replaced by 1e-18), 10 * log10 -> (B, 3, 341, frames).
    network    ResNeXt-50 32x4d (torchvision layout: conv1 7x7/2, bn1, maxpool 3/2, layer1..4 of
               [3, 4, 6, 3] bottlenecks) with an attention gate after every stage and after the
               average pool: gate = sigmoid(bn(pointwise(depthwise(adaptive_max_pool(input, out size)))))
               multiplied into the stage output; then ``fc`` 2048 -> 1024: the RAW embedding (not
               normalised) that JavisBench's FAD uses.

Everything runs in float32, in eval mode (batch norm with running statistics).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avits_core.errors import ConfigError
from avits_core.loading import check_state_dict
from avits_core.verifiers import hf

AUDIOCLIP_HINT = ("get AudioCLIP's checkpoint once (`wget https://github.com/AndreyGuzhov/AudioCLIP/releases/"
                  "download/v0.1/AudioCLIP-Full-Training.pt`) and pass its path")
#: JavisBench's FAD input: 16 kHz audio cut or zero-padded to 4 s.
JAVISBENCH_SR = 16000
JAVISBENCH_SECONDS = 4.0


def _torch():
    import torch

    return torch


def build_audio_tower(*, embed_dim: int = 1024, layers: Sequence[int] = (3, 4, 6, 3), groups: int = 32,
                      width_per_group: int = 4, n_fft: int = 2048, hop_length: int = 561,
                      win_length: int = 1654, attention: bool = True) -> Any:
    """A randomly initialised audio tower (eval mode); load weights with :func:`load_audio_tower`."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class Gate(nn.Module):
        def __init__(self, cin: int, cout: int, k: tuple[int, int], p: tuple[int, int]) -> None:
            super().__init__()
            self.conv_depth = nn.Conv2d(cin, cin, k, padding=p, groups=cin)
            self.conv_point = nn.Conv2d(cin, cout, (1, 1))
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x, size):  # noqa: ANN001, ANN202
            return torch.sigmoid(self.bn(self.conv_point(self.conv_depth(F.adaptive_max_pool2d(x, size)))))

    class Block(nn.Module):
        def __init__(self, cin: int, planes: int, stride: int) -> None:
            super().__init__()
            width = int(planes * (width_per_group / 64.0)) * groups
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride=stride, bias=False),
                                             nn.BatchNorm2d(planes * 4))
                               if stride != 1 or cin != planes * 4 else None)

        def forward(self, x):  # noqa: ANN001, ANN202
            out = F.relu(self.bn1(self.conv1(x)))
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return F.relu(out + (x if self.downsample is None else self.downsample(x)))

    class FBSP(nn.Module):
        def __init__(self, bins: int) -> None:
            super().__init__()
            self.m = nn.Parameter(torch.zeros(bins))
            self.fb = nn.Parameter(torch.ones(bins))
            self.fc = nn.Parameter(torch.arange(bins, dtype=torch.float32))

        def weights(self, n: int, dtype, device):  # noqa: ANN001, ANN202
            eps = 1e-8
            t = math.pi * torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device).reshape(1, -1) + eps
            m, fb, fc = self.m.reshape(-1, 1), self.fb.reshape(-1, 1), self.fc.reshape(-1, 1)
            arg = fb * t / (m + eps)
            w = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / arg)
            zero = torch.zeros_like(w)
            mag = (w ** 2 + zero ** 2) ** 0.5  # |w| evaluated in AudioCLIP's order (float parity)
            ph = torch.atan2(zero, w)
            mag_out = (mag ** 2) ** (0.5 * m)  # complex power w^m with a real exponent
            w_re, w_im = mag_out * torch.cos(m * ph), mag_out * torch.sin(m * ph)
            k_re, k_im = torch.cos(fc * t), -torch.sin(fc * t)
            s = fb.sqrt()
            re = s * (w_re * k_re - w_im * k_im)
            im = s * (w_re * k_im + w_im * k_re)
            return re / (n ** 0.5), im / (n ** 0.5)

    class AudioTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
            self.fbsp = FBSP(int(round(n_fft / 2)) + 1)
            from scipy.signal import get_window

            self.register_buffer("window", torch.from_numpy(
                get_window("blackmanharris", win_length, fftbins=True)).to(torch.float32))
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            cin = 64
            specs = ((64, 1, (3, 1), (1, 0)), (128, 2, (1, 5), (0, 2)), (256, 2, (3, 1), (1, 0)),
                     (512, 2, (1, 5), (0, 2)))
            for i, ((planes, stride, k, p), n) in enumerate(zip(specs, layers), start=1):
                blocks = [Block(cin, planes, stride)] + [Block(planes * 4, planes, 1) for _ in range(n - 1)]
                self.add_module(f"layer{i}", nn.Sequential(*blocks))
                if attention:
                    self.add_module(f"att{i}", Gate(cin, planes * 4, k, p))
                cin = planes * 4
            if attention:
                self.att5 = Gate(cin, cin, (3, 5), (1, 2))
            self.fc = nn.Linear(cin, embed_dim)
            self.attention = attention

        def frames(self, x):  # noqa: ANN001, ANN202
            L, fl, hop = x.shape[-1], self.win_length, self.hop_length
            n = 1 if L <= fl else 1 + int(math.ceil((1.0 * L - fl) / hop))
            pad = (n - 1) * hop + fl - L
            if pad > 0:
                x = F.pad(x, (pad // 2, pad - pad // 2))
            idx = torch.arange(fl, device=x.device)[None, :] + hop * torch.arange(n, device=x.device)[:, None]
            fr = x[..., idx] * self.window
            if self.n_fft > fl:
                extra = self.n_fft - fl
                fr = F.pad(fr, (extra // 2, extra - extra // 2))
            return fr

        def log_power(self, audio):  # noqa: ANN001, ANN202
            """(B, L) audio -> (B, 3, bins // 3, frames) dB, AudioCLIP's input image."""
            x = audio.to(torch.float32)
            x = (x + 32768.0) * 2.0 / 65535.0 - 1.0
            fr = self.frames(x)
            w_re, w_im = self.fbsp.weights(fr.shape[-1], fr.dtype, fr.device)
            re, im = F.linear(fr, w_re), F.linear(fr, w_im)  # (B, frames, bins)
            per = re.shape[-1] // 3
            p = (re[..., :3 * per] ** 2 + im[..., :3 * per] ** 2).transpose(1, 2)  # (B, bins, frames)
            p = p.reshape(p.shape[0], 3, per, p.shape[-1])
            p = torch.where(p > 0.0, p, torch.full_like(p, 1e-18))
            return torch.log10(p) * 10.0

        def forward(self, audio):  # noqa: ANN001, ANN202
            x = self.log_power(audio)
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
            for i in range(1, 5):
                y = getattr(self, f"layer{i}")(x)
                x = y * getattr(self, f"att{i}")(x, y.shape[-2:]) if self.attention else y
            y = F.adaptive_avg_pool2d(x, (1, 1))
            if self.attention:
                y = y * self.att5(x, y.shape[-2:])
            return self.fc(torch.flatten(y, 1))

    return AudioTower().eval()


def load_audio_tower(path: str | os.PathLike[str], device: str = "cpu", **arch: Any) -> Any:
    """The audio tower with the ``audio.*`` weights of an AudioCLIP checkpoint (a state dict), strict:
    a missing or unexpected audio key is an error naming it."""
    torch = _torch()
    p = hf.resolve_weights_file(path, what="AudioCLIP", hint=AUDIOCLIP_HINT)
    sd = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    audio = {k[len("audio."):]: v for k, v in sd.items() if k.startswith("audio.")}
    if "fbsp.bias" in audio and audio["fbsp.bias"].numel() == 0:  # AudioCLIP stores its unused bias empty
        del audio["fbsp.bias"]
    if not audio:
        raise ConfigError(f"{p}: no 'audio.*' keys; is this an AudioCLIP checkpoint?")
    model = build_audio_tower(**arch)
    check_state_dict(model.state_dict(), audio, what=f"{p}: AudioCLIP audio weights do not match the architecture",
                     prefix="audio.", ignore_missing=lambda k: k.endswith("num_batches_tracked"))
    model.load_state_dict(audio, strict=False)  # strict but for BatchNorm counters (checked above)
    return model.to(hf.parse_device(device)).eval()


class AudioClipEmbedding:
    """FAD features as JavisBench computes them: AudioCLIP's raw audio embedding of the clip's audio
    resampled to 16 kHz (soxr, like ``librosa.load``), cut or zero-padded to 4 s (an ``AudioEmbedding``)."""

    def __init__(self, model_path: str | os.PathLike[str], device: str = "cpu", batch_size: int = 8,
                 seconds: float = JAVISBENCH_SECONDS, sample_rate: int = JAVISBENCH_SR, **arch: Any) -> None:
        self.model_path = os.fspath(model_path)
        self.device = hf.parse_device(device)
        self.batch_size = hf.check_batch_size(batch_size)
        self.seconds, self.sample_rate = float(seconds), int(sample_rate)
        self.arch = dict(arch)
        self.name = f"audioclip:{Path(self.model_path).name}/{self.sample_rate // 1000}k-{self.seconds:g}s"

    def check_ready(self) -> None:
        hf.resolve_weights_file(self.model_path, what="AudioCLIP", hint=AUDIOCLIP_HINT)

    def _model(self) -> Any:
        p = hf.resolve_weights_file(self.model_path, what="AudioCLIP", hint=AUDIOCLIP_HINT)
        key = f"{p.resolve()}|{sorted(self.arch.items())}"
        return hf.cached("AudioCLIP-audio", key, self.device, "float32",
                         lambda: load_audio_tower(p, self.device, **self.arch))

    def prepare(self, wave: np.ndarray, sr: int) -> np.ndarray:
        a = hf.resample_javisbench(np.asarray(wave, np.float32), int(sr), self.sample_rate)
        n = int(self.seconds * self.sample_rate)
        return a[:n] if a.shape[0] >= n else np.pad(a, (0, n - a.shape[0]))

    def embed(self, waves: Sequence[np.ndarray], sample_rates: Sequence[int]) -> np.ndarray:
        torch = _torch()
        model = self._model()
        x = np.stack([self.prepare(w, r) for w, r in zip(waves, sample_rates)])
        out = []
        for i in range(0, len(x), self.batch_size):
            with torch.inference_mode():
                out.append(model(torch.from_numpy(x[i:i + self.batch_size]).to(self.device)).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)
