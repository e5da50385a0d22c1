"""What ``avits evaluate`` is asked to do: the protocols, metric names and summary keys, :class:`EvalSpec`,
its JSON form for the flow's parameters, and the ``--metrics`` / ``--metric-param`` parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from avits_core.errors import ConfigError

PROTOCOLS = ("avits", "javisbench")
#: Weight-free default metrics.
DEFAULT_METRICS = ("av_align", "temporal_flickering")
SET_METRICS = ("fvd", "kvd", "fad")
#: avits metric name -> the key JavisBench's evaluator writes in its JSON.
JAVISBENCH_KEYS = {
    "clip": "clip_score", "clap": "clap_score", "av_align": "av_align", "ib_tv": "ib_tv", "ib_ta": "ib_ta",
    "ib_av": "ib_av", "avh_score": "avh_score", "javis_score": "javis_score", "desync": "desync",
    "fvd": "fvd", "kvd": "kvd", "fad": "fad", "vqascore": "vqascore",
}
#: Categories per aspect in JavisBench's taxonomy (its configs/category.json): cat0 event scenario 5,
#: cat1 visual style 3, cat2 sound type 5, cat3 temporal composition 3, cat4 spatial composition 3.
JAVISBENCH_CATEGORIES = {0: 5, 1: 3, 2: 5, 3: 3, 4: 3}
#: Verifiers whose published variants are chosen by another parameter: name -> (parameter, {protocol: value}).
PROTOCOL_PARAMS: dict[str, tuple[str, dict[str, str]]] = {
    "desync": ("policy", {"javisbench": "javisbench"}),
    "vqascore": ("video_policy", {"javisbench": "tile"}),
}


@dataclass
class EvalSpec:
    """Everything ``avits evaluate`` was asked to do (validated by :func:`prepare`)."""

    folder: Path
    prompts: Path
    out: Path | None = None
    protocol: str = "avits"
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {m: {} for m in DEFAULT_METRICS})
    reference: Path | None = None
    naming: str = "auto"
    allow_extra: bool = False
    batch_size: int = 8


def spec_to_dict(spec: EvalSpec) -> dict[str, Any]:
    """A JSON-able form of ``spec`` (flow and task parameters)."""
    return {"folder": str(spec.folder), "prompts": str(spec.prompts), "out": str(spec.out) if spec.out else None,
            "protocol": spec.protocol, "metrics": {k: dict(v) for k, v in spec.metrics.items()},
            "reference": str(spec.reference) if spec.reference else None, "naming": spec.naming,
            "allow_extra": bool(spec.allow_extra), "batch_size": int(spec.batch_size)}


def spec_from_dict(d: Mapping[str, Any]) -> EvalSpec:
    d = dict(d)
    return EvalSpec(folder=Path(d["folder"]), prompts=Path(d["prompts"]), out=Path(d["out"]) if d.get("out") else None,
                    protocol=d.get("protocol", "avits"), metrics=d.get("metrics") or {m: {} for m in DEFAULT_METRICS},
                    reference=Path(d["reference"]) if d.get("reference") else None, naming=d.get("naming", "auto"),
                    allow_extra=bool(d.get("allow_extra", False)), batch_size=int(d.get("batch_size", 8)))


def parse_metrics(text: str | None, params: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """``"av_align,clip"`` and ``["clip.model_path=models/clip", "clip.num_frames=16"]`` -> metric specs.
    Values are YAML (``16`` is an int, ``true`` a bool)."""
    import yaml

    names = [m.strip() for m in (text or ",".join(DEFAULT_METRICS)).split(",") if m.strip()]
    if not names:
        raise ConfigError("--metrics is empty")
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for item in params:
        key, sep, value = item.partition("=")
        name, dot, pkey = key.strip().partition(".")
        if not (sep and dot and pkey):
            raise ConfigError(f"--metric-param {item!r}: expected METRIC.KEY=VALUE, e.g. clip.num_frames=16")
        if name not in out:
            raise ConfigError(f"--metric-param {item!r}: metric {name!r} is not in --metrics {names}")
        out[name][pkey] = yaml.safe_load(value)
    return out
