"""Test helpers shared by several test modules (import as ``from helpers import ...``: pytest puts tests/
on sys.path).

``tiny_config(tmp_path, **over)``: ``tests/data/tiny.yaml`` (SynthAV, 2 prompts x 2 candidates, 6 steps,
av_sync + synth_text, ARW) as a dict, with ``output_root`` = ``tmp_path/runs`` and the top-level keys in
``over`` replaced. ``write_config(cfg, path)`` writes a config dict as YAML; ``tiny_config_file(tmp_path,
name="cfg.yaml", **over)`` does both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = REPO / "tests" / "data" / "tiny.yaml"


def tiny_config(tmp_path: Path, **over: Any) -> dict[str, Any]:
    """The tiny config as a dict, run folders under ``tmp_path/runs``, top-level keys from ``over``."""
    cfg = yaml.safe_load(TINY_YAML.read_text())
    cfg["output_root"] = str(Path(tmp_path) / "runs")
    cfg.update(over)
    return cfg


def write_config(cfg: dict[str, Any], path: Path) -> Path:
    """Write ``cfg`` as YAML to ``path``; returns ``path``."""
    path = Path(path)
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_config_file(tmp_path: Path, name: str = "cfg.yaml", **over: Any) -> Path:
    """:func:`tiny_config` written to ``tmp_path/name``."""
    return write_config(tiny_config(tmp_path, **over), Path(tmp_path) / name)
