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
against the folder of the config file (so a config and its prompt set travel together);
``output_root`` relative paths against the current working directory (where runs usually live).

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


class EvaluationConfig(_Strict):
    oracle: bool = Field(default=True, description="held-out SynthAV oracle metrics (synth generator only)")
    verifiers: list[str | EvalVerifierSpec] = Field(
        default_factory=list,
        description="extra verifiers scored as held-out metrics: a name, or {name, params}",
    )

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
        d = self.model_dump(exclude={"run_id"})
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
