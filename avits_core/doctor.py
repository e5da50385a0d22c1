"""``avits doctor``: what this machine and a config need, what is missing, and how to get it.

Every finding is one line starting with ``ok:``, ``WARNING:``, ``MISSING:`` or ``ERROR:``. Nothing
is downloaded. The overall result is not ok when any MISSING or ERROR line is present.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

log = logging.getLogger(__name__)


def _system_lines() -> list[str]:
    out = [f"ok: python {platform.python_version()} on {platform.machine()}"]
    try:
        import torch

        cuda = torch.cuda.is_available()
        out.append(f"ok: torch {torch.__version__}; CUDA {'available: ' + torch.cuda.get_device_name(0) if cuda else 'not available (CPU only)'}")
        if cuda:
            free, total = torch.cuda.mem_get_info()
            out.append(f"ok: GPU memory {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")
    except Exception as exc:
        out.append(f"ERROR: torch cannot be imported ({exc}); run `make setup`")
    try:
        import av

        codecs = av.codecs_available
        for c in ("libx264", "aac"):
            out.append(f"ok: PyAV {av.__version__} has encoder {c}" if c in codecs else f"ERROR: PyAV lacks encoder {c}")
    except Exception as exc:
        out.append(f"ERROR: PyAV cannot be imported ({exc})")
    try:
        import os

        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        out.append(f"ok: {os.cpu_count()} CPU cores, {pages * size / 2**30:.1f} GiB RAM")
    except (ValueError, OSError):  # pragma: no cover
        pass
    return out


def run_doctor(config: str | Path | None = None) -> tuple[list[str], bool]:
    from avits_core.errors import AvitsError

    lines = _system_lines()
    if config is not None:
        from avits_core import runner
        from avits_core.config import load_config

        try:
            cfg = load_config(config)
            prompts = runner.validate_config(cfg)
            lines.append(f"ok: config {config} is valid ({len(prompts)} prompts, generator {cfg.generator.name})")
        except AvitsError as exc:
            lines.append(f"ERROR: {exc}")
            return lines, False
        if cfg.generator.name == "ltx2":
            from avits_core.generators.ltx2 import ltx2_doctor

            p = cfg.generator.params
            lines += ltx2_doctor(p.get("model_path"), p.get("device", "cpu"))
        else:
            lines.append(f"ok: generator {cfg.generator.name} needs no weights" if cfg.generator.name == "synth"
                         else f"WARNING: no doctor checks for generator {cfg.generator.name}")
        names = [(v.name, v.params) for v in cfg.verifiers] + [(n, {}) for n in cfg.evaluation.verifiers]
        for name, params in names:
            try:
                v = runner.get_verifier(name, params)
                v.check_ready()
                lines.append(f"ok: verifier {name} v{v.version} ready")
            except AvitsError as exc:
                lines.append(f"MISSING: verifier {name}: {exc}")
            except Exception as exc:
                lines.append(f"ERROR: verifier {name}: {type(exc).__name__}: {exc}")
    ok = not any(line.startswith(("MISSING", "ERROR")) for line in lines)
    return lines, ok
