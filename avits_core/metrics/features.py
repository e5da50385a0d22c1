"""Feature extractors for the distribution metrics (FVD/KVD on video, FAD on audio).

Every extractor returns a :class:`FeatureSet` ``(features, extractor)``: a float64 (N, D) array and
the extractor's name, which goes into every metrics row, because a Fréchet distance is only
comparable with numbers computed on the same features. :func:`fvd`, :func:`kvd_video` and
:func:`fad` refuse to compare feature sets whose extractor names differ.

FVD features: :class:`I3DVideoFeatures`
    A TorchScript I3D loaded from a local file (the usual one is StyleGAN-V's
    ``i3d_torchscript.pt``, Kinetics-400 I3D ported from the TF-Hub model that defines FVD; it is
    never downloaded at run time). Preprocessing of each clip, in this order:
      1. frames: ``num_frames`` (16) frames; ``sampling="uniform"`` takes the centres of 16 equal
         segments of the clip (JavisBench-style whole-clip coverage), ``"first"`` the first 16
         consecutive frames (the original FVD recipe). A clip with fewer frames repeats frames
         (uniform: nearest-index resampling over the clip; first: the last frame is repeated).
      2. each frame resized to ``size`` x ``size`` (224) with bilinear interpolation, ignoring the
         aspect ratio (as TF FVD's ``resize_bilinear``), no antialiasing;
      3. values scaled from uint8 to ``input_range`` ([-1, 1]);
      4. layout (B, 3, T, size, size), float32, called as ``model(x, **call_kwargs)`` with
         ``call_kwargs = {"rescale": False, "resize": False, "return_features": True}`` (the
         StyleGAN-V module then returns its 400-d pre-softmax features).
    Any TorchScript module with that calling convention works; the name records the file, the
    frame count, the sampling and the size, e.g. ``i3d:i3d_torchscript.pt/16f-uniform-224``.

FAD features: any :class:`AudioEmbedding` (``name`` + ``embed(waves, sample_rates) -> (N, D)``):
    :class:`ClapAudioEmbedding` (the CLAP audio tower, L2-normalised 512-d embeddings of audio
    resampled to 48 kHz; "FAD-CLAP"), :class:`BackboneAudioEmbedding` (the audio tower of an
    ImageBind-family backbone), or :class:`CallableAudioEmbedding` (wrap any function). The
    original FAD uses VGGish; its weights are not shipped here, so we do not claim VGGish numbers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from avits_core.errors import ConfigError
from avits_core.media import AVClip
from avits_core.metrics.frechet import (
    JAVISBENCH_FAD_SCALE,
    check_protocol,
    frechet_distance,
    frechet_distance_javisbench,
    kvd as _kvd,
    truncate_to_common,
)
from avits_core.verifiers import hf

log = logging.getLogger(__name__)

I3D_HINT = (
    "get StyleGAN-V's I3D TorchScript once (`wget 'https://www.dropbox.com/s/ge9e5ujwgetktms/"
    "i3d_torchscript.pt?dl=1' -O i3d_torchscript.pt`) and pass model_path=<that file>"
)


class FeatureSet(NamedTuple):
    """float64 (N, D) features and the name of the extractor that produced them."""

    features: np.ndarray
    extractor: str


def _frame_indices(num_total: int, num_frames: int, sampling: str) -> np.ndarray:
    if num_total < 1:
        raise ValueError("the clip has no frames")
    if sampling == "first":
        return np.minimum(np.arange(num_frames), num_total - 1)
    if num_total >= num_frames:
        return np.floor((np.arange(num_frames) + 0.5) * num_total / num_frames).astype(np.int64)
    return np.round(np.linspace(0, num_total - 1, num_frames)).astype(np.int64)


class I3DVideoFeatures:
    """FVD/KVD video features from a local I3D TorchScript file (preprocessing in the module docstring)."""

    def __init__(self, model_path: str | os.PathLike[str], device: str = "cpu", num_frames: int = 16,
                 size: int = 224, batch_size: int = 8, sampling: str = "uniform",
                 input_range: tuple[float, float] = (-1.0, 1.0), call_kwargs: dict[str, Any] | None = None) -> None:
        if sampling not in ("uniform", "first"):
            raise ConfigError(f"sampling must be 'uniform' or 'first', got {sampling!r}")
        lo, hi = (float(v) for v in input_range)
        if not hi > lo:
            raise ConfigError(f"input_range must be (low, high) with high > low, got {input_range!r}")
        self.model_path = os.fspath(model_path)
        self.device = hf.parse_device(device)
        self.num_frames = hf.check_batch_size(num_frames, "num_frames")
        self.size = hf.check_batch_size(size, "size")
        self.batch_size = hf.check_batch_size(batch_size)
        self.sampling = sampling
        self.input_range = (lo, hi)
        self.call_kwargs = dict(call_kwargs) if call_kwargs is not None else {
            "rescale": False, "resize": False, "return_features": True}

    @property
    def name(self) -> str:
        return f"i3d:{Path(self.model_path).name}/{self.num_frames}f-{self.sampling}-{self.size}"

    def check_ready(self) -> None:
        hf.resolve_weights_file(self.model_path, what="FVD I3D", hint=I3D_HINT)

    def _model(self) -> Any:
        path = hf.resolve_weights_file(self.model_path, what="FVD I3D", hint=I3D_HINT)

        def load() -> Any:
            import warnings

            import torch

            with warnings.catch_warnings():  # FVD's I3D only exists as TorchScript; the warning is noise
                warnings.filterwarnings("ignore", message=".*jit.load.* is deprecated", category=DeprecationWarning)
                return torch.jit.load(str(path), map_location=self.device).eval()

        return hf.cached("I3D-TorchScript", path.resolve(), self.device, "float32", load)

    def preprocess(self, video: np.ndarray) -> Any:
        """One clip's uint8 (T, H, W, 3) video -> float32 (3, num_frames, size, size) in input_range."""
        import torch

        v = np.asarray(video)
        if v.ndim != 4 or v.shape[-1] != 3:
            raise ValueError(f"video must be (T, H, W, 3), got {v.shape}")
        x = torch.from_numpy(v[_frame_indices(v.shape[0], self.num_frames, self.sampling)].astype(np.float32))
        x = x.permute(0, 3, 1, 2)  # (T, 3, H, W)
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        lo, hi = self.input_range
        x = (x / 255.0 * (hi - lo) + lo).clamp(lo, hi)
        return x.permute(1, 0, 2, 3).contiguous()

    def __call__(self, clips: Sequence[AVClip]) -> FeatureSet:
        import torch

        model = self._model()
        out = []
        for i in range(0, len(clips), self.batch_size):
            x = torch.stack([self.preprocess(c.video) for c in clips[i:i + self.batch_size]]).to(self.device)
            with torch.inference_mode():
                f = model(x, **self.call_kwargs)
            out.append(f.reshape(f.shape[0], -1).float().cpu().numpy())
        feats = np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))
        return FeatureSet(feats, self.name)


@runtime_checkable
class AudioEmbedding(Protocol):
    """FAD audio features: ``name`` and ``embed(waves, sample_rates) -> (N, D)``."""

    name: str

    def embed(self, waves: Sequence[np.ndarray], sample_rates: Sequence[int]) -> np.ndarray: ...


class CallableAudioEmbedding:
    """Wraps ``fn(waves, sample_rates) -> (N, D)`` under the given name."""

    def __init__(self, fn: Callable[[Sequence[np.ndarray], Sequence[int]], np.ndarray], name: str) -> None:
        if not name:
            raise ConfigError("an audio embedding needs a non-empty name (it is recorded in every metrics row)")
        self.fn, self.name = fn, name

    def embed(self, waves: Sequence[np.ndarray], sample_rates: Sequence[int]) -> np.ndarray:
        return np.asarray(self.fn(waves, sample_rates), dtype=np.float64)


class ClapAudioEmbedding:
    """CLAP audio-tower embeddings (L2-normalised) of audio resampled to the model's rate."""

    def __init__(self, model_path: str = "laion/clap-htsat-unfused", device: str = "cpu", dtype: str = "float32",
                 batch_size: int = 8, cache_dir: str | None = None) -> None:
        from avits_core.verifiers.clap import ClapScore

        self._clap = ClapScore(model_path=model_path, device=device, dtype=dtype, batch_size=batch_size,
                               cache_dir=cache_dir)
        self.name = f"clap:{model_path}"

    def check_ready(self) -> None:
        self._clap.check_ready()

    def embed(self, waves: Sequence[np.ndarray], sample_rates: Sequence[int]) -> np.ndarray:
        return self._clap.embed_audio(waves, sample_rates)


class BackboneAudioEmbedding:
    """The audio tower of an ImageBind-family backbone (see avits_core.verifiers.imagebind)."""

    def __init__(self, backbone: Any) -> None:
        if not callable(getattr(backbone, "embed_audio", None)):
            raise ConfigError(f"{type(backbone).__name__} has no embed_audio method")
        self.backbone = backbone
        self.name = f"{getattr(backbone, 'name', type(backbone).__name__)}:audio"

    def check_ready(self) -> None:
        ready = getattr(self.backbone, "check_ready", None)
        if callable(ready):
            ready()

    def embed(self, waves: Sequence[np.ndarray], sample_rates: Sequence[int]) -> np.ndarray:
        return np.asarray(self.backbone.embed_audio(waves, sample_rates), dtype=np.float64)


def video_features(clips: Sequence[AVClip], extractor: Callable[[Sequence[AVClip]], FeatureSet]) -> FeatureSet:
    """Features of the clips' videos: ``(features (N, D), extractor name)``."""
    fs = extractor(clips)
    return FeatureSet(_check_rows(fs.features, len(clips), fs.extractor), fs.extractor)


def audio_features(clips: Sequence[AVClip], embedding: AudioEmbedding, batch_size: int = 16) -> FeatureSet:
    """Features of the clips' audio tracks: ``(features (N, D), embedding name)``."""
    hf.check_batch_size(batch_size)
    parts = []
    for i in range(0, len(clips), batch_size):
        chunk = clips[i:i + batch_size]
        parts.append(np.asarray(embedding.embed([c.audio for c in chunk], [c.sample_rate for c in chunk]),
                                dtype=np.float64))
    feats = np.concatenate(parts) if parts else np.zeros((0, 0))
    return FeatureSet(_check_rows(feats, len(clips), embedding.name), embedding.name)


def _check_rows(feats: np.ndarray, n: int, name: str) -> np.ndarray:
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] != n:
        raise ValueError(f"extractor {name!r} returned features of shape {f.shape} for {n} clips")
    return f


#: Direction of the set-level distribution metrics (metric name -> higher is better): all are
#: distances to the reference set, so lower is better.
DISTRIBUTION_HIGHER_IS_BETTER: dict[str, bool] = {"fvd": False, "kvd": False, "fad": False}


@dataclass(frozen=True)
class DistanceResult:
    """One distribution metric between two feature sets, with its provenance."""

    metric: str
    value: float
    extractor: str
    n_a: int
    n_b: int

    def as_row(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "extractor": self.extractor,
                "n_a": self.n_a, "n_b": self.n_b}


def _same_space(a: FeatureSet, b: FeatureSet, metric: str) -> None:
    if a.extractor != b.extractor:
        raise ValueError(f"{metric}: feature sets come from different extractors "
                         f"({a.extractor!r} vs {b.extractor!r}); their distance is meaningless")


def _tag(extractor: str, protocol: str) -> str:
    """The ``extractor`` recorded in metrics rows: the features' name, plus ``+protocol=javisbench``."""
    return extractor if protocol == "avits" else f"{extractor}+protocol={protocol}"


def _fd(a: np.ndarray, b: np.ndarray, protocol: str) -> float:
    if protocol == "javisbench":
        return frechet_distance_javisbench(*truncate_to_common(a, b))
    return frechet_distance(a, b)


def fvd(generated: FeatureSet, reference: FeatureSet, protocol: str = "avits") -> DistanceResult:
    """FVD: Fréchet distance between two video feature sets of one extractor (lower is better).

    ``protocol="javisbench"``: the evaluator's float32 SVD recipe on both sets cut to their first
    min(m, n) rows (:func:`avits_core.metrics.frechet.frechet_distance_javisbench`)."""
    check_protocol(protocol, "fvd")
    _same_space(generated, reference, "fvd")
    return DistanceResult("fvd", _fd(generated.features, reference.features, protocol),
                          _tag(generated.extractor, protocol), len(generated.features), len(reference.features))


def kvd_video(generated: FeatureSet, reference: FeatureSet, subset_size: int | None = None,
              num_subsets: int = 100, seed: int = 0, protocol: str = "avits") -> DistanceResult:
    """KVD: unbiased polynomial-kernel MMD^2 between two video feature sets (lower is better); the
    sets may differ in size. ``protocol="javisbench"``: full sets cut to their first min(m, n) rows."""
    check_protocol(protocol, "kvd")
    _same_space(generated, reference, "kvd")
    a, b = generated.features, reference.features
    if protocol == "javisbench":
        if subset_size is not None:
            raise ConfigError("kvd: the javisbench protocol uses the full sets (no subset_size)")
        a, b = truncate_to_common(a, b)
    v = _kvd(a, b, subset_size=subset_size, num_subsets=num_subsets, seed=seed)
    return DistanceResult("kvd", v, _tag(generated.extractor, protocol), len(generated.features),
                          len(reference.features))


def fad(generated: FeatureSet, reference: FeatureSet, protocol: str = "avits") -> DistanceResult:
    """FAD: Fréchet distance between two audio feature sets of one embedding (lower is better).

    ``protocol="javisbench"``: the evaluator's float32 recipe on the first min(m, n) rows, times
    10000 (JavisBench's scale for AudioCLIP features)."""
    check_protocol(protocol, "fad")
    _same_space(generated, reference, "fad")
    v = _fd(generated.features, reference.features, protocol)
    if protocol == "javisbench":
        v *= JAVISBENCH_FAD_SCALE
    return DistanceResult("fad", v, _tag(generated.extractor, protocol), len(generated.features),
                          len(reference.features))
