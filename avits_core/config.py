"""Run configs: one YAML file, validated by pydantic; every error names the field.

Example (data/configs/demo.yaml)::

    name: demo
    seed: 0
    output_root: runs
    generator: {name: synth, params: {num_steps: 20}}
    prompts: {source: ../prompts/synth-24.csv}
    search: {method: best_of_n, n: 8}
    verifiers:
      - {name: av_align, weight: 1.0}
      - {name: av_sync}
      - {name: synth_text}
    aggregator: {name: arw, params: {optimizer: adam, lr: 0.05, max_iter: 50}}
    evaluation: {oracle: true, verifiers: [quality]}

Path rules (decided here, documented in the README): ``prompts.source`` relative paths are resolved
against the folder of the config file (so a config and its prompt set travel together), and so are
``evaluation.distribution.reference`` and ``evaluation.distribution.video.path``;
``output_root`` relative paths against the current working directory (where runs usually live).
Model paths inside verifier params (and ``evaluation.distribution.audio.model_path``, which may be a
hub id) are used as given.

Run ids: ``run_id`` defaults to ``<name>-<8 hex of the config hash>``. The same config therefore
names the same run folder, and running it again *resumes* it (every table is a cache: nothing is
generated or scored twice). Set ``run_id`` (or ``--set run_id=...``) for a fresh run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from avits_core.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GeneratorConfig(_Strict):
    name: str = "synth"
    params: dict[str, Any] = Field(default_factory=dict)


class PromptsConfig(_Strict):
    source: str | list[str] = Field(description="a .csv/.txt path, or a list of prompt texts")
    text_column: str = "text"
    limit: int | None = Field(default=None, ge=1)


class SearchConfig(_Strict):
    method: Literal["best_of_n", "evosearch"] = "best_of_n"
    n: int = Field(default=8, ge=1, description="Best-of-N: candidates per prompt")
    prompts_per_task: int = Field(default=8, ge=1, description="prompts per generation task")
    params: dict[str, Any] = Field(default_factory=dict, description="method parameters (EvoSearch)")


class VerifierSpec(_Strict):
    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("weight")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v in (float("inf"), float("-inf")) or v < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {v}")
        return v


class AggregatorConfig(_Strict):
    name: str = "arw"
    params: dict[str, Any] = Field(default_factory=dict)


class EvalVerifierSpec(_Strict):
    """A held-out evaluation verifier with constructor params (e.g. ``model_path``, ``device``)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class DistributionVideoConfig(_Strict):
    """FVD/KVD video features: an I3D TorchScript file (see avits_core.metrics.features.I3DVideoFeatures)."""

    extractor: Literal["i3d"] = "i3d"
    path: str = Field(description="local I3D TorchScript .pt file; relative paths against the config's folder")
    num_frames: int = Field(default=16, ge=1)
    sampling: Literal["uniform", "first"] = "uniform"
    size: int = Field(default=224, ge=1)
    device: str = "cpu"
    batch_size: int = Field(default=8, ge=1)


class DistributionAudioConfig(_Strict):
    """FAD audio features: the CLAP audio tower (see avits_core.metrics.features.ClapAudioEmbedding)."""

    extractor: Literal["clap"] = "clap"
    model_path: str = Field(default="laion/clap-htsat-unfused",
                            description="a save_pretrained folder or a hub id in the local HF cache (as the clap verifier)")
    device: str = "cpu"
    batch_size: int = Field(default=8, ge=1)


REFERENCE_VIDEO_SUFFIXES = (".mp4",)


class DistributionConfig(_Strict):
    """Set-level distribution metrics (FVD, KVD, FAD) of the baseline and the selected clips against
    a reference set of clips. ``reference`` is a folder (every ``*.mp4`` under it, recursively, in
    sorted order) or a ``.txt`` (one path per line; blank lines and ``#`` comments skipped) / ``.csv``
    (column ``path``) list of clip paths; paths inside a list are relative to the list's folder."""

    reference: str = Field(description="folder of reference mp4 files, or a .csv/.txt list of their paths")
    video: DistributionVideoConfig | None = None
    audio: DistributionAudioConfig | None = None
    metrics: list[Literal["fvd", "kvd", "fad"]] | None = Field(
        default=None, description="default: fvd and kvd when video is set, fad when audio is set")

    @model_validator(mode="after")
    def _extractors(self) -> "DistributionConfig":
        if self.video is None and self.audio is None:
            raise ValueError("set video (for fvd, kvd) and/or audio (for fad)")
        if self.metrics is not None:
            if not self.metrics:
                raise ValueError("metrics is empty; leave it out for every metric that has an extractor")
            dup = sorted({m for m in self.metrics if self.metrics.count(m) > 1})
            if dup:
                raise ValueError(f"metrics listed twice: {dup}")
            for m in self.metrics:
                if m in ("fvd", "kvd") and self.video is None:
                    raise ValueError(f"metric {m!r} needs video features: set video: {{extractor: i3d, path: ...}}")
                if m == "fad" and self.audio is None:
                    raise ValueError("metric 'fad' needs audio features: set audio: {extractor: clap, model_path: ...}")
        return self

    def metric_names(self) -> list[str]:
        """The metrics to compute, in the order fvd, kvd, fad."""
        if self.metrics is not None:
            return [m for m in ("fvd", "kvd", "fad") if m in self.metrics]
        return (["fvd", "kvd"] if self.video is not None else []) + (["fad"] if self.audio is not None else [])

    def reference_files(self) -> list[Path]:
        """The reference clip files (absolute), checked to exist. ConfigError names the missing path."""
        field = "evaluation.distribution.reference"
        ref = Path(self.reference).expanduser()
        if not ref.exists():
            raise ConfigError(f"{field}: {str(ref)!r} does not exist (a folder of mp4 files or a .csv/.txt list)")
        if ref.is_dir():
            files = sorted(p for p in ref.rglob("*") if p.suffix.lower() in REFERENCE_VIDEO_SUFFIXES and p.is_file())
            if len(files) < 2:
                raise ConfigError(f"{field}: folder {str(ref)!r} holds {len(files)} mp4 file(s); "
                                  "a distribution distance needs at least 2 reference clips")
            return [p.resolve() for p in files]
        if ref.suffix == ".txt":
            lines = ref.read_text(encoding="utf-8").splitlines()
            items = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        elif ref.suffix == ".csv":
            import csv

            with ref.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if "path" not in (reader.fieldnames or []):
                    raise ConfigError(f"{field}: {str(ref)!r} has no 'path' column (columns: {reader.fieldnames})")
                items = [(row["path"] or "").strip() for row in reader]
            if any(not x for x in items):
                raise ConfigError(f"{field}: {str(ref)!r} has an empty 'path' cell")
        else:
            raise ConfigError(f"{field}: {str(ref)!r} is neither a folder nor a .csv/.txt list of clip paths")
        files = [p if p.is_absolute() else (ref.parent / p) for p in (Path(x).expanduser() for x in items)]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise ConfigError(f"{field}: {len(missing)} clip(s) listed in {str(ref)!r} do not exist, "
                              f"e.g. {missing[0]!r}")
        if len(files) < 2:
            raise ConfigError(f"{field}: {str(ref)!r} lists {len(files)} clip(s); "
                              "a distribution distance needs at least 2 reference clips")
        return [p.resolve() for p in files]


class EvaluationConfig(_Strict):
    oracle: bool = Field(default=True, description="held-out SynthAV oracle metrics (synth generator only)")
    verifiers: list[str | EvalVerifierSpec] = Field(
        default_factory=list,
        description="extra verifiers scored as held-out metrics: a name, or {name, params}",
    )
    distribution: DistributionConfig | None = Field(
        default=None, description="set-level FVD/KVD/FAD of the baseline and selected clips against reference clips")

    @model_validator(mode="after")
    def _unique_names(self) -> "EvaluationConfig":
        names = [n for n, _ in self.specs()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"evaluation verifiers listed twice: {dup}")
        return self

    def specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, constructor params) of each evaluation verifier; a bare name means default params."""
        return [(v, {}) if isinstance(v, str) else (v.name, dict(v.params)) for v in self.verifiers]


class RunConfig(_Strict):
    name: str = Field(default="run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    output_root: str = "runs"
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    prompts: PromptsConfig
    search: SearchConfig = Field(default_factory=SearchConfig)
    verifiers: list[VerifierSpec] = Field(min_length=1)
    aggregator: AggregatorConfig = Field(default_factory=AggregatorConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @model_validator(mode="after")
    def _unique_verifiers(self) -> "RunConfig":
        names = [v.name for v in self.verifiers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"verifiers listed twice: {dup}")
        if sum(v.weight for v in self.verifiers) <= 0:
            raise ValueError("verifier weights sum to 0: at least one weight must be > 0")
        guided = {v.name: v.params for v in self.verifiers}
        for name, params in self.evaluation.specs():
            if name in guided and params and params != guided[name]:
                raise ValueError(
                    f"evaluation verifier {name!r} is also a guided verifier with other params; "
                    f"a run scores each verifier once (its guided params)"
                )
        return self

    def config_hash(self) -> str:
        """SHA-256 of the config (run_id excluded). A prompt *file* enters by its content, not its path:
        the same prompts give the same run wherever the repository lives, and an edited prompt file
        gives a new run instead of mixing stored candidates of the old texts into it."""
        d = self.model_dump(exclude={"run_id"})
        if d["evaluation"].get("distribution") is None:  # added later: configs without it keep their hash
            d["evaluation"].pop("distribution", None)
        src = d["prompts"]["source"]
        if isinstance(src, str) and Path(src).is_file():
            d["prompts"]["source"] = "sha256:" + hashlib.sha256(Path(src).read_bytes()).hexdigest()
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    def resolved_run_id(self) -> str:
        return self.run_id or f"{self.name}-{self.config_hash()[:8]}"

    @property
    def weights(self) -> dict[str, float]:
        """Verifier weights normalised to sum 1 (config weights are relative)."""
        total = sum(v.weight for v in self.verifiers)
        return {v.name: v.weight / total for v in self.verifiers}


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        inp = err.get("input")
        shown = "" if isinstance(inp, dict) or inp is None else f" (got {inp!r})"
        lines.append(f"  - {loc}: {msg}{shown}")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` -> (["a", "b", "c"], yaml-parsed VALUE)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. search.n=4)")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {exc}") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))  # deep copy
    for item in overrides:
        keys, value = parse_override(item)
        node: Any = data
        for i, k in enumerate(keys[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(k)]
                except (ValueError, IndexError) as exc:
                    raise ConfigError(f"--set {item!r}: {'.'.join(keys[: i + 1])} is not a valid list index") from exc
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(keys[:i])} is not a mapping")
            node = node.setdefault(k, {})
        last = keys[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError) as exc:
                raise ConfigError(f"--set {item!r}: {last!r} is not a valid list index") from exc
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {item!r}: {'.'.join(keys[:-1])} is not a mapping")
    return data


def config_from_dict(data: dict[str, Any], *, base_dir: Path | None = None, source: str = "config") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    src = cfg.prompts.source
    if isinstance(src, str) and base_dir is not None and not Path(src).is_absolute():
        cfg.prompts.source = str((base_dir / src).resolve())
    dist = cfg.evaluation.distribution
    if dist is not None and base_dir is not None:  # the same rule as prompts.source
        if not Path(dist.reference).expanduser().is_absolute():
            dist.reference = str((base_dir / dist.reference).resolve())
        if dist.video is not None and not Path(dist.video.path).expanduser().is_absolute():
            dist.video.path = str((base_dir / dist.video.path).resolve())
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a YAML run config. Raises ConfigError naming the file and field."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data, base_dir=path.resolve().parent, source=str(path))
