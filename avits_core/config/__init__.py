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

Layout: :mod:`~avits_core.config.schema` (the pydantic models, :class:`RunConfig`, the run identity),
:mod:`~avits_core.config.load` (YAML, ``--set`` overrides, validation with one-line errors, path rules),
:mod:`~avits_core.config.benchmark` (a benchmark file: several run configs, loaded and validated
together). The names below are the package's API: import them from ``avits_core.config``.
"""

from avits_core.config.load import apply_overrides, config_from_dict, load_config, load_yaml_text, parse_override
from avits_core.config.schema import (
    REFERENCE_VIDEO_SUFFIXES,
    SCHEDULING_KNOBS,
    AggregatorConfig,
    DistributionAudioConfig,
    DistributionConfig,
    DistributionVideoConfig,
    EvalVerifierSpec,
    EvaluationConfig,
    GeneratorConfig,
    PromptsConfig,
    RunConfig,
    RunnerConfig,
    SearchConfig,
    VerifierSpec,
)
from avits_core.errors import ConfigError

__all__ = [
    "REFERENCE_VIDEO_SUFFIXES",
    "SCHEDULING_KNOBS",
    "AggregatorConfig",
    "ConfigError",
    "DistributionAudioConfig",
    "DistributionConfig",
    "DistributionVideoConfig",
    "EvalVerifierSpec",
    "EvaluationConfig",
    "GeneratorConfig",
    "PromptsConfig",
    "RunConfig",
    "RunnerConfig",
    "SearchConfig",
    "VerifierSpec",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "load_yaml_text",
    "parse_override",
]
