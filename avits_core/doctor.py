"""``avits doctor [CONFIG]``: what this machine and a config need, what is missing, and how to get it.

Every finding is one line starting with ``ok:``, ``WARNING:``, ``MISSING:`` or ``ERROR:``; the
overall result is not ok when any MISSING or ERROR line is present (the CLI then exits 1). Nothing
is downloaded, nothing is written (the output root is checked for write access without creating it).

Without a config: Python, torch and CUDA (GPU name and free memory), PyAV's H.264/AAC encoders, CPU
cores and RAM. With a config, also, each check on its own so that one problem does not hide the next:
  - the config itself (YAML + schema; a broken config stops here, since nothing else can be read);
  - the prompt set (file present and parseable; JavisBench category columns noticed); a missing
    JavisBench CSV says where to download the benchmark;
  - the generator: ``synth`` needs nothing; ``ltx2`` runs :func:`~avits_core.generators.ltx2.ltx2_doctor`
    (diffusers, the weight folder and each component, the device, a memory estimate); a plugin
    generator is checked by its optional ``doctor(**params) -> list[str]`` classmethod (findings in
    this same format), else it is only imported, not constructed (construction may load weights),
    and a WARNING says that nothing else was checked;
  - every guided and evaluation verifier with its params: constructed and ``check_ready()`` (weights
    on disk: the MissingWeightsError message names the path and the command that fetches it), and
    its ``device`` checked against the machine;
  - the aggregator (name and params), the search parameters, and whether ``output_root`` is writable.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREFIXES = ("ok:", "WARNING:", "MISSING:", "ERROR:")

JAVISBENCH_HINT = (
    "JavisBench prompt sets (JavisBench.csv, JavisBench-mini.csv) come with the benchmark: "
    "`hf download --repo-type dataset JavisVerse/JavisBench --local-dir data/eval/JavisBench` "
    "(older huggingface_hub: `huggingface-cli download ...`), then set prompts.source to "
    "data/eval/JavisBench/JavisBench-mini.csv (or --set prompts.source=...)"
)


def _system_lines() -> list[str]:
    out = [f"ok: python {platform.python_version()} on {platform.machine()}"]
    try:
        import torch

        cuda = torch.cuda.is_available()
        out.append(f"ok: torch {torch.__version__}; CUDA "
                   f"{'available: ' + torch.cuda.get_device_name(0) if cuda else 'not available (CPU only)'}")
        if cuda:
            free, total = torch.cuda.mem_get_info()
            out.append(f"ok: GPU memory {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")
    except Exception as exc:
        out.append(f"ERROR: torch cannot be imported ({exc}); run `make setup`")
    try:
        import av

        codecs = av.codecs_available
        for c in ("libx264", "aac"):
            out.append(f"ok: PyAV {av.__version__} has encoder {c}" if c in codecs
                       else f"ERROR: PyAV lacks encoder {c}; reinstall PyAV from its wheels (`pip install --force-reinstall av`)")
    except Exception as exc:
        out.append(f"ERROR: PyAV cannot be imported ({exc}); run `make setup`")
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        out.append(f"ok: {os.cpu_count()} CPU cores, {pages * size / 2**30:.1f} GiB RAM")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        pass
    return out


def _finding(line: str) -> str:
    """Give an unprefixed line (e.g. ltx2_doctor's memory estimate) the ``ok:`` prefix."""
    return line if line.startswith(PREFIXES) else f"ok: {line}"


def _eval_specs(cfg: Any) -> list[tuple[str, dict[str, Any]]]:
    """(name, params) of the evaluation verifiers: a bare name, or an object/dict with name and params."""
    specs = getattr(cfg.evaluation, "specs", None)
    if callable(specs):
        return list(specs())
    out = []
    for v in cfg.evaluation.verifiers:
        if isinstance(v, str):
            out.append((v, {}))
        elif isinstance(v, dict):
            out.append((v["name"], dict(v.get("params") or {})))
        else:
            out.append((v.name, dict(getattr(v, "params", {}) or {})))
    return out


def _device_line(what: str, device: Any) -> str | None:
    """ERROR when ``device`` names a CUDA device this machine does not have; None when fine."""
    if device is None:
        return None
    dev = str(device)
    if not dev.startswith("cuda"):
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return f"ERROR: {what}: device {dev!r} but CUDA is not available here (torch {torch.__version__})"
        idx = int(dev.split(":")[1]) if ":" in dev else 0
        if idx >= torch.cuda.device_count():
            return f"ERROR: {what}: device {dev!r} does not exist ({torch.cuda.device_count()} CUDA devices)"
    except (ImportError, ValueError) as exc:
        return f"ERROR: {what}: cannot check device {dev!r} ({exc})"
    return None


def _writable_line(root: Path) -> str:
    """Check that ``root`` is (or can be created as) a writable folder, without creating anything."""
    p = root.expanduser().absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"ERROR: output_root {str(root)!r}: {str(probe)!r} is a file, not a folder"
    if os.access(probe, os.W_OK | os.X_OK):
        return f"ok: output_root {str(p)} is writable" + ("" if probe == p else " (will be created)")
    return f"ERROR: output_root {str(root)!r} is not writable ({str(probe)!r} denies write access); set output_root"


def _prompt_lines(cfg: Any) -> list[str]:
    from avits_core.errors import AvitsError
    from avits_core.prompts import load_prompts

    src = cfg.prompts.source
    try:
        prompts = load_prompts(src, text_column=cfg.prompts.text_column, limit=cfg.prompts.limit)
    except AvitsError as exc:
        line = f"MISSING: prompts: {exc}" if isinstance(src, str) and not Path(src).exists() else f"ERROR: prompts: {exc}"
        if isinstance(src, str) and "javis" in Path(src).name.lower():
            line += f". {JAVISBENCH_HINT}"
        elif isinstance(src, str) and not Path(src).exists():
            line += ". Point prompts.source at a .csv or .txt file (relative paths are resolved against the config's folder)"
        return [line]
    where = "inline" if not isinstance(src, str) else src
    aspects = sorted({k[: -len("_ind")] for p in prompts for k in p.meta if k.startswith("cat") and k.endswith("_ind")})
    extra = f"; JavisBench categories {', '.join(aspects)} (per-category results)" if aspects else ""
    return [f"ok: {len(prompts)} prompts from {where}{extra}"]


def _generator_lines(cfg: Any) -> list[str]:
    from avits_core.registry import GENERATORS

    name, params = cfg.generator.name, dict(cfg.generator.params)
    try:
        cls = GENERATORS.get_class(name)
    except Exception as exc:  # UnknownNameError, or the plugin's import failing
        return [f"ERROR: generator {name!r}: {exc}. A plugin generator must be installed in this environment "
                f"and declare an entry point in the group 'avits.generators' (docs/plugins.md)"]
    if name == "synth":
        return ["ok: generator synth (embedded SynthAV world) needs no weights"]
    if name == "ltx2":
        from avits_core.generators.ltx2 import ltx2_doctor

        out = []
        for line in ltx2_doctor(params.get("model_path"), params.get("device", "cpu")):
            line = _finding(line)
            head, _, rest = line.partition(": ")
            out.append(f"{head}: generator ltx2: {rest}")
        return out
    where = f"{cls.__module__}.{cls.__qualname__}"
    hook = getattr(cls, "doctor", None)
    lines = []
    dev = _device_line(f"generator {name}", params.get("device"))
    if dev:
        lines.append(dev)
    if callable(hook):
        try:
            found = hook(**params)
            lines += [f"ok: generator {name} ({where})"] + [_finding(str(x)) for x in found]
        except Exception as exc:  # noqa: BLE001 - a broken hook is a finding
            lines.append(f"ERROR: generator {name}: its doctor() hook failed: {type(exc).__name__}: {exc}")
        return lines
    return lines + [f"WARNING: generator {name} ({where}) is importable but has no doctor() hook; "
                    f"its weights and device are not checked here"]


def _verifier_lines(name: str, params: dict[str, Any], role: str) -> list[str]:
    from avits_core import runner
    from avits_core.errors import AvitsError, MissingWeightsError

    what = f"verifier {name} ({role})"
    try:
        v = runner.get_verifier(name, params)
    except AvitsError as exc:
        return [f"ERROR: {what}: {exc}"]
    except Exception as exc:  # bad params (TypeError), optional dependency missing
        return [f"ERROR: {what}: cannot be created with params {params}: {type(exc).__name__}: {exc}"]
    lines = []
    device = getattr(v, "device", None) or getattr(getattr(v, "backbone", None), "device", None)
    dev = _device_line(what, device)
    if dev:
        lines.append(dev)
    try:
        v.check_ready()
    except MissingWeightsError as exc:
        return lines + [f"MISSING: {what}: {exc}"]
    except AvitsError as exc:
        return lines + [f"ERROR: {what}: {exc}"]
    except Exception as exc:
        return lines + [f"ERROR: {what}: {type(exc).__name__}: {exc}"]
    weights = " (weights found)" if getattr(v, "needs_weights", False) else " (needs no weights)"
    return lines + [f"ok: {what} v{v.version} ready{weights}"]


def _method_lines(cfg: Any) -> list[str]:
    from avits_core.aggregate import get_aggregator

    out = []
    try:
        get_aggregator(cfg.aggregator.name, [v.name for v in cfg.verifiers], cfg.weights, **cfg.aggregator.params)
        out.append(f"ok: aggregator {cfg.aggregator.name}")
    except Exception as exc:  # UnknownNameError, ConfigError, TypeError for a bad param
        out.append(f"ERROR: aggregator {cfg.aggregator.name!r}: {exc}")
    if cfg.search.method == "evosearch":
        from avits_core.search.evosearch import EvoSearchConfig

        try:
            EvoSearchConfig.from_params(cfg.search.params)
            out.append("ok: search evosearch parameters")
        except Exception as exc:
            out.append(f"ERROR: search.params: {exc}")
    else:
        out.append(f"ok: search {cfg.search.method} (n={cfg.search.n})")
    return out


def run_doctor(config: str | Path | None = None) -> tuple[list[str], bool]:
    """Findings about this machine and (optionally) a run config; ``ok`` is False on MISSING/ERROR."""
    from avits_core.errors import AvitsError

    lines = _system_lines()
    if config is not None:
        from avits_core.config import load_config

        try:
            cfg = load_config(config)
            lines.append(f"ok: config {config} parses (generator {cfg.generator.name}, "
                         f"{len(cfg.verifiers)} guided verifiers)")
        except AvitsError as exc:
            lines.append(f"ERROR: {exc}")
            return lines, False
        lines += _prompt_lines(cfg)
        lines += _generator_lines(cfg)
        guided = {v.name for v in cfg.verifiers}
        for spec in cfg.verifiers:
            lines += _verifier_lines(spec.name, dict(spec.params), "guided")
        for name, params in _eval_specs(cfg):
            if name not in guided:
                lines += _verifier_lines(name, params, "evaluation")
        lines += _method_lines(cfg)
        lines.append(_writable_line(Path(cfg.output_root)))
    ok = not any(line.startswith(("MISSING", "ERROR")) for line in lines)
    return lines, ok
