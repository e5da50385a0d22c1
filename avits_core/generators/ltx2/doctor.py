"""``avits doctor`` for LTX-2: which component files are present, missing or unreadable, and their sizes."""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from pathlib import Path

import torch

from avits_core.generators.ltx2.loading import COMPONENTS, WEIGHTED_COMPONENTS, HOW_TO_GET_WEIGHTS, _component_problem, _hf_cache_dir, _hf_cache_snapshot

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Doctor
# --------------------------------------------------------------------------------------------------


def _safetensors_numel(path: Path) -> int:
    """Number of tensor elements in a .safetensors file, read from its JSON header only."""
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _component_numel(folder: Path) -> int | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    try:
        return sum(_safetensors_numel(f) for f in files)
    except (OSError, ValueError, KeyError, struct.error):
        return None


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _fmt_count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    return f"{n / 1e3:.1f} k"


def ltx2_doctor(model_path: str | os.PathLike[str] | None, device: str = "cpu") -> list[str]:
    """Human-readable findings about an LTX-2 setup: diffusers, the weight folder, the device, memory.

    Never raises for a bad setup (each problem is one finding starting with "MISSING" / "ERROR" /
    "WARNING"); never downloads anything.
    """
    out: list[str] = []
    try:
        import diffusers

        out.append(f"ok: diffusers {diffusers.__version__} importable")
    except Exception as exc:  # pragma: no cover - depends on the environment
        out.append(f"ERROR: diffusers cannot be imported ({exc}); install the 'ltx2' extra")

    root: Path | None = None
    if model_path is None or str(model_path).strip() == "":
        out.append("MISSING: model_path is not set. " + HOW_TO_GET_WEIGHTS.replace("\n", " "))
    else:
        local = Path(str(model_path)).expanduser()
        if local.is_dir():
            root = local
            out.append(f"ok: model folder {local}")
        else:
            root = _hf_cache_snapshot(str(model_path))
            if root is None:
                out.append(f"MISSING: {model_path!r} is neither a local folder nor in the Hugging Face cache "
                           f"({_hf_cache_dir()}). " + HOW_TO_GET_WEIGHTS.replace("\n", " "))
            else:
                out.append(f"ok: {model_path} found in the Hugging Face cache at {root}")

    total_numel = 0
    unknown: list[str] = []
    if root is not None:
        if (root / "model_index.json").is_file():
            out.append("ok: model_index.json")
        else:
            out.append("MISSING: model_index.json")
        for name in COMPONENTS:
            why = _component_problem(root, name)
            sub = root / name
            cls = ""
            cfg_file = sub / ("scheduler_config.json" if name == "scheduler" else "config.json")
            if cfg_file.is_file():
                try:
                    cfg = json.loads(cfg_file.read_text())
                    cls = cfg.get("_class_name") or (cfg.get("architectures") or [""])[0] or ""
                except (OSError, ValueError, AttributeError, IndexError):
                    cls = "(unreadable config)"
            if why:
                out.append(f"MISSING: {name}/ - {why}")
                continue
            if name in WEIGHTED_COMPONENTS:
                size = sum(p.stat().st_size for p in sub.iterdir() if p.name.endswith((".safetensors", ".bin")))
                numel = _component_numel(sub)
                if numel is None:
                    unknown.append(name)
                    out.append(f"ok: {name}/ {cls} - weights {_fmt_bytes(size)} on disk")
                else:
                    total_numel += numel
                    out.append(f"ok: {name}/ {cls} - {_fmt_count(numel)} parameters, {_fmt_bytes(size)} on disk")
            else:
                out.append(f"ok: {name}/ {cls}".rstrip())

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        out.append(f"ERROR: device {device!r} is not a torch device")
        dev = None
    gpu_bytes: int | None = None
    if dev is not None:
        if dev.type == "cuda":
            if torch.cuda.is_available():
                idx = dev.index or 0
                if idx < torch.cuda.device_count():
                    props = torch.cuda.get_device_properties(idx)
                    gpu_bytes = int(props.total_memory)
                    out.append(f"ok: {device} = {props.name}, {_fmt_bytes(gpu_bytes)}")
                else:
                    out.append(f"ERROR: {device} does not exist ({torch.cuda.device_count()} CUDA devices)")
            else:
                out.append(f"ERROR: {device} requested but CUDA is not available (torch {torch.__version__})")
        elif dev.type == "cpu":
            out.append("WARNING: device cpu - the real LTX-2 (19B DiT + 12B Gemma) is impractically slow on a CPU")
        else:
            out.append(f"ok: device {device}")

    if total_numel:
        bf16, fp32 = total_numel * 2, total_numel * 4
        line = (f"memory estimate: weights {_fmt_count(total_numel)} parameters = {_fmt_bytes(bf16)} in bfloat16, "
                f"{_fmt_bytes(fp32)} in float32; add activations per candidate batch (docs/ltx2.md)")
        if unknown:
            line += f" (not counted: {', '.join(unknown)})"
        out.append(line)
        if gpu_bytes is not None and bf16 > gpu_bytes:
            out.append(f"WARNING: bfloat16 weights ({_fmt_bytes(bf16)}) exceed the GPU memory "
                       f"({_fmt_bytes(gpu_bytes)}); use cpu_offload=True")
    return out
