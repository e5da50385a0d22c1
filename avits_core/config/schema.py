"""The run config's schema: pydantic models, one per block of the YAML file; unknown keys are errors.

:class:`RunConfig` is the whole file (``name, run_id, seed, output_root, generator, prompts, search,
verifiers, aggregator, evaluation, runner, storage``); every block has its own model below, with its
fields' meaning in ``Field(description=...)``. :meth:`RunConfig.identity` is what the run id hashes:
the config minus :data:`SCHEDULING_KNOBS`. Reading a YAML file into these models (path rules,
``--set`` overrides, one-line errors) is :mod:`avits_core.config.load`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from avits_core.errors import ConfigError
from avits_core.names import NAME_MAX, UnsafeNameError, check_name

#: Config keys that only schedule work (left out of the run identity, see RunConfig.identity).
#: URL schemes ``output_root`` may use besides a local path (what the store is built and tested on: s3fs).
OBJECT_STORE_SCHEMES: tuple[str, ...] = ("s3", "s3a")

SCHEDULING_KNOBS: tuple[str, ...] = ("output_root", "runner", "storage", "search.prompts_per_task", "verifiers.*.params.batch_size",
                                     "evaluation.verifiers.*.params.batch_size",
                                     "evaluation.distribution.video.batch_size",
                                     "evaluation.distribution.audio.batch_size")


def _safe(value: str, what: str, max_len: int) -> str:
    try:
        return check_name(value, what, max_len=max_len)
    except UnsafeNameError as exc:  # pydantic reports a ValueError with the field's location
        raise ValueError(str(exc)) from None


def _drop(node: Any, keys: list[str]) -> None:
    """Remove the dotted key ``keys`` from a model_dump in place (``*``: every list item or dict value)."""
    k, rest = keys[0], keys[1:]
    if k == "*":
        for item in node if isinstance(node, list) else node.values() if isinstance(node, dict) else ():
            _drop(item, rest)
    elif isinstance(node, dict):
        if rest:
            _drop(node.get(k), rest)
        else:
            node.pop(k, None)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GeneratorConfig(_Strict):
    name: str = "synth"
    params: dict[str, Any] = Field(default_factory=dict)


class PromptsConfig(_Strict):
    source: str | list[str] = Field(description="a .csv/.tsv/.jsonl/.txt path, or a list of prompt texts "
                                                "(how files are read: docs/inputs.md)")
    text_column: str = "text"
    limit: int | None = Field(default=None, ge=1)


class SearchConfig(_Strict):
    method: str = Field(default="best_of_n", description="a search method of avits_core.registry.SEARCH_METHODS")
    n: int = Field(default=8, ge=1, description="Best-of-N: candidates per prompt")
    prompts_per_task: int = Field(default=8, ge=1, description="prompts per generation task")
    params: dict[str, Any] = Field(default_factory=dict, description="method parameters (EvoSearch)")
    arw_shards: int = Field(default=1, ge=1, le=4096, description="ARW state per shard of prompts (prompt i in shard "
                            "i mod K; set by `avits run --shards K` for multi-event methods); 1 = one state for the run")


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
    """FVD/KVD video features: ``i3d`` = an I3D TorchScript file (avits_core.metrics.features.I3DVideoFeatures);
    ``i3d-jb`` = JavisBench's Inception-I3D state dict ``i3d_pretrained_400.pt`` with the evaluator's input
    pipeline (avits_core.metrics.i3d_javisbench; 24 frames, ``sampling`` unused)."""

    extractor: Literal["i3d", "i3d-jb"] = "i3d"
    path: str = Field(description="local I3D file (TorchScript for i3d, i3d_pretrained_400.pt for i3d-jb); relative "
                                  "paths against the config's folder")
    num_frames: int | None = Field(default=None, ge=1, description="frames per clip (default 16 for i3d, 24 for i3d-jb)")
    sampling: Literal["uniform", "first"] = "uniform"
    size: int = Field(default=224, ge=1)
    device: str = "cpu"
    batch_size: int = Field(default=8, ge=1)


class DistributionAudioConfig(_Strict):
    """FAD audio features: the CLAP audio tower (see avits_core.metrics.features.ClapAudioEmbedding)."""

    extractor: Literal["clap", "audioclip"] = "clap"
    model_path: str = Field(default="laion/clap-htsat-unfused",
                            description="clap: a save_pretrained folder or a hub id in the local HF cache (as the clap "
                                        "verifier); audioclip: the AudioCLIP checkpoint (AudioCLIP-Full-Training.pt)")
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
    protocol: Literal["avits", "javisbench"] = Field(
        default="avits", description="javisbench: the evaluator's float32 Fréchet recipe on sets cut to min(m, n) "
                                     "rows, FAD x10000, full-set KVD (docs/metrics.md); recorded in metrics.extractor")

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
        from avits_core.prompts import read_text_file

        if ref.suffix == ".txt":
            lines = read_text_file(ref, "reference list").splitlines()
            items = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        elif ref.suffix == ".csv":
            import csv

            import io

            with io.StringIO(read_text_file(ref, "reference list"), newline="") as f:
                reader = csv.DictReader(f)
                if "path" not in (reader.fieldnames or []):
                    raise ConfigError(f"{field}: {str(ref)!r} has no 'path' column (columns: {reader.fieldnames})")
                items = []
                for row in reader:
                    if None in row or None in row.values():  # more or fewer fields than the header
                        raise ConfigError(f"{field}: {str(ref)!r} line {reader.line_num}: the row has "
                                          f"{'more' if None in row else 'fewer'} fields than the header")
                    if any((v or "").strip() for v in row.values()):  # empty rows are skipped
                        items.append((row["path"] or "").strip())
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


class RunnerConfig(_Strict):
    """How the flow runs its tasks inside one machine (a scheduling knob: not part of the run identity).

    ``thread`` (default): Prefect's thread pool; ``workers`` threads when set (at most that many tasks at
    once), else Prefect's default pool (PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS; up to 6 threads on
    2 cores). Parallel tasks trade CPU for wall on a small machine: the demo on 2 cores with ``workers: 1``
    or ``2`` spent ~6 % less CPU (the same calls cost less without other busy threads) and ~30–45 % more
    wall (bench/bench_workers.py, issue 17). ``dask``: prefect-dask's DaskTaskRunner over a local
    Dask cluster of ``workers`` workers (default: the CPU count), threads when ``processes`` is false
    (works in Prefect's ephemeral mode; CI), worker processes when true (needs a real Prefect server:
    ``avits server start`` or PREFECT_API_URL). Every flow that runs a run's tasks uses it: ``its``,
    ``its-shard`` (each GPU worker's shard) and ``rerank`` (the run's stored block); flows/task_runner.py.

    ``compute_slots`` bounds the tasks of one process that compute at the same moment, whatever the pool's
    size: with the default (cores // numeric threads: 2 on 2 cores) the pool still runs every task at
    once, but only that many generate, decode or score, taking turns chunk by chunk, so the cores are
    not oversubscribed and a short task does not leave a core idle (avits_core/threads.py)."""

    kind: Literal["thread", "dask"] = "thread"
    workers: int | None = Field(default=None, ge=1, le=1024)
    processes: bool = False
    threads: int | None = Field(default=None, ge=1, le=1024, description=(
        "threads per numeric library (torch, BLAS, OpenMP, OpenCV) in each task; default: "
        "cores // parallel tasks, or OMP_NUM_THREADS when set (avits_core/threads.py)"))
    compute_slots: int | None = Field(default=None, ge=0, le=4096, description=(
        "tasks of one process that generate, decode or score at the same moment (the others wait between "
        "chunks of candidates); default: cores // numeric threads; 0: no bound (avits_core/threads.py)"))


class RunConfig(_Strict):
    name: str = Field(default="run", description="run name; the default run id is <name>-<8 hex of the config hash>")
    run_id: str | None = Field(default=None, description="folder name under output_root (default <name>-<hash>)")
    seed: int = 0
    output_root: str = "runs"
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    prompts: PromptsConfig
    search: SearchConfig = Field(default_factory=SearchConfig)
    verifiers: list[VerifierSpec] = Field(min_length=1)
    aggregator: AggregatorConfig = Field(default_factory=AggregatorConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="task runner: thread | dask")
    storage: dict[str, Any] = Field(default_factory=dict, description=(
        "fsspec/s3fs options for an object-store output_root (endpoint_url, ...); prefer the standard "
        "AWS_* environment for credentials (this block is stored in run.json)"))

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        # the default run id appends "-" and 8 hex characters
        return _safe(v, "run name", NAME_MAX - 9)

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, v: str | None) -> str | None:
        return None if v is None else _safe(v, "run id", NAME_MAX)

    @field_validator("output_root")
    @classmethod
    def _supported_storage(cls, v: str) -> str:
        # a URL scheme the store does not support failed deep inside the first read (a traceback from
        # fsspec, or "install gcsfs"): refused here, at load, for every command
        scheme = v.split("://", 1)[0].lower() if "://" in v else ""
        if scheme not in ("", "file") + OBJECT_STORE_SCHEMES:
            raise ValueError(f"storage scheme {scheme!r} of {v!r} is not supported: use a local folder or "
                             f"s3://bucket/prefix (any S3-compatible store: AWS_ENDPOINT_URL)")
        return f"{scheme}://{v.split('://', 1)[1]}" if scheme else v  # S3:// -> s3:// (fsspec wants lower case)

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

    def identity(self) -> dict[str, Any]:
        """What the run id hashes: the config minus everything that cannot change a result.

        Left out: ``run_id`` (it is the name, not the content), ``output_root`` (a moved or copied run
        folder is the same run: it resumes instead of regenerating), ``search.prompts_per_task``
        (:data:`SCHEDULING_KNOBS`: how prompts are packed into tasks), and ``batch_size`` in verifier
        and distribution-extractor params (how many clips a model sees at once). ``device`` and
        ``dtype`` stay in: they change the numbers. A prompt *file* enters by its content, not its
        path: the same prompts give the same run wherever the repository lives, and an edited prompt
        file gives a new run instead of mixing stored candidates of the old texts into it."""
        d = self.model_dump(exclude={"run_id"})
        for knob in SCHEDULING_KNOBS:
            _drop(d, knob.split("."))
        if d["evaluation"].get("distribution") is None:  # added later: configs without it keep their hash
            d["evaluation"].pop("distribution", None)
        if d["search"].get("arw_shards") == 1:  # added later: run-scope configs keep their hash
            d["search"].pop("arw_shards")
        src = d["prompts"]["source"]
        if isinstance(src, str) and Path(src).is_file():
            d["prompts"]["source"] = "sha256:" + hashlib.sha256(Path(src).read_bytes()).hexdigest()
        return d

    def config_hash(self) -> str:
        """SHA-256 of :meth:`identity` (canonical JSON): equal for two configs that give the same results."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()

    def resolved_run_id(self) -> str:
        return self.run_id or f"{self.name}-{self.config_hash()[:8]}"

    @property
    def weights(self) -> dict[str, float]:
        """Verifier weights normalised to sum 1 (config weights are relative)."""
        total = sum(v.weight for v in self.verifiers)
        return {v.name: v.weight / total for v in self.verifiers}
