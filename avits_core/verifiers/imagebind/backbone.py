"""The backbone interface of the ImageBind family, the official ImageBind-huge backbone and
:func:`make_backbone` (see the package docstring)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from avits_core.errors import ConfigError, MissingWeightsError
from avits_core.verifiers import hf
from avits_core.verifiers.imagebind.audio import ib_audio_input
from avits_core.verifiers.imagebind.tiny import TinyBackbone
from avits_core.verifiers.imagebind.vision import ib_image_input, ib_video_input

log = logging.getLogger(__name__)


DEFAULT_IMAGEBIND_PATH = ".checkpoints/imagebind_huge.pth"
IMAGEBIND_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"

@runtime_checkable
class EmbeddingBackbone(Protocol):
    """A joint text / image / video / audio embedding model (see the module docstring)."""

    name: str

    def embed_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray: ...

    def embed_video(self, videos: Sequence[np.ndarray], fps: Sequence[float]) -> np.ndarray: ...

    def embed_audio(self, waves: Sequence[np.ndarray], sample_rates: Sequence[int]) -> np.ndarray: ...


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
        self.dtype = hf.dtype_name(dtype)
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


# --------------------------------------------------------------------------------------------------
# Choosing a backbone
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
