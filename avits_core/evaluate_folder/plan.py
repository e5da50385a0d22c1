"""The validated request (:class:`EvalPlan`): :func:`prepare` checks folder, prompts, metrics, weights,
reference and output before any work; the evaluation id; the plan shared by the tasks of one flow run."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from avits_core.errors import ConfigError
from avits_core.evaluate_folder.match import ClipEntry, locate_clips
from avits_core.evaluate_folder.setlevel import set_extractors
from avits_core.evaluate_folder.spec import PROTOCOL_PARAMS, PROTOCOLS, SET_METRICS, EvalSpec, spec_from_dict
from avits_core.prompts import Prompt, load_prompts
from avits_core.verifiers.base import Verifier

log = logging.getLogger("avits_core.evaluate_folder")

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}$")


@dataclass
class EvalPlan:
    spec: EvalSpec
    prompts: list[Prompt]
    entries: list[ClipEntry]
    extra: list[str]
    naming: str
    verifiers: dict[str, Verifier]
    set_metrics: dict[str, dict[str, Any]]
    evaluation_id: str
    out: Path

    @property
    def run_id(self) -> str:
        return self.out.name

    def store(self):  # noqa: ANN201 - RunStore
        from avits_core.store.parquet import RunStore

        return RunStore(self.out.parent, self.out.name).create()


def _evaluation_id(protocol: str, verifiers: Mapping[str, Verifier], set_metrics: Mapping[str, Any],
                   entries: Sequence[ClipEntry], reference: Path | None) -> str:
    spec = {
        "protocol": protocol,
        "metrics": {n: [v.cache_version, describe(v, protocol)] for n, v in sorted(verifiers.items())},
        "set": {k: dict(v) for k, v in sorted(set_metrics.items())},
        "clips": [e.candidate_id for e in entries],
        "reference": str(reference) if reference else None,
    }
    return "eval-" + hashlib.blake2b(json.dumps(spec, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def describe(v: Verifier, protocol: str) -> str:
    from avits_core.metrics.embedding import describe_extractor

    d = describe_extractor(v)
    return d + v.identity_suffix() if hasattr(v, "identity_suffix") else d


def make_verifier(name: str, params: Mapping[str, Any], protocol: str) -> Verifier:
    """The verifier ``name`` with ``params``; ``protocol`` is passed when the verifier has that parameter
    (verifiers without a published counterpart keep their one recipe)."""
    from avits_core.registry import VERIFIERS

    kw = dict(params)
    cls = VERIFIERS.get_class(name)
    if "protocol" in getattr(cls, "identity_params", ()):
        kw.setdefault("protocol", protocol)
    elif name in PROTOCOL_PARAMS and protocol in PROTOCOL_PARAMS[name][1]:
        kw.setdefault(PROTOCOL_PARAMS[name][0], PROTOCOL_PARAMS[name][1][protocol])
    elif protocol != "avits":
        log.info("%s has no %s protocol; it is computed with its own recipe", name, protocol)
    try:
        return VERIFIERS.create(name, **kw)
    except TypeError as exc:
        raise ConfigError(f"metric {name!r}: bad parameters {sorted(kw)}: {exc}") from None


def prepare(spec: EvalSpec) -> EvalPlan:
    """Validate the request (folder, prompts, metrics, weights, reference, output) before any work."""
    from avits_core.registry import VERIFIERS

    if spec.protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol must be one of {PROTOCOLS}, got {spec.protocol!r}")
    folder = Path(spec.folder)
    if not folder.is_dir():
        raise ConfigError(f"FOLDER {folder} is not a folder")
    prompts = load_prompts(Path(spec.prompts))
    entries, extra, naming = locate_clips(folder, prompts, spec.naming)
    if extra and not spec.allow_extra:
        shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
        raise ConfigError(f"{folder}: {len(extra)} mp4 file(s) match no prompt of {spec.prompts} "
                          f"(naming={naming!r}): {shown}; rename them or pass --allow-extra")
    if not spec.metrics:
        raise ConfigError("no metrics to compute")
    known = set(VERIFIERS.names())
    verifiers: dict[str, Verifier] = {}
    set_metrics: dict[str, dict[str, Any]] = {}
    for name, params in spec.metrics.items():
        if name in SET_METRICS:
            set_metrics[name] = dict(params)
            continue
        if name not in known:
            raise ConfigError(f"unknown metric {name!r}; known: {sorted(known | set(SET_METRICS))}")
        v = make_verifier(name, params, spec.protocol)
        v.check_ready()
        verifiers[name] = v
    if set_metrics:
        if spec.reference is None:
            raise ConfigError(f"{sorted(set_metrics)} need --reference DIR (real clips to compare against)")
        ref = Path(spec.reference)
        if not (ref.is_dir() or (ref.is_file() and ref.suffix == ".pt")):
            raise ConfigError(f"--reference {ref} is neither a folder of mp4 files nor a .pt feature cache")
        if ref.is_file() and spec.protocol != "javisbench":
            raise ConfigError(f"--reference {ref} is a JavisBench feature cache: use --protocol javisbench "
                              "(its features come from the evaluator's I3D and AudioCLIP)")
        set_extractors(set_metrics, spec.protocol)  # raises for missing weights before any work
    out = Path(spec.out) if spec.out else Path.cwd() / f"eval-{folder.resolve().name}-{spec.protocol}"
    if not _RUN_ID.match(out.name):
        raise ConfigError(f"--out {out}: the folder name must start with a letter or digit and use only "
                          "letters, digits and . _ = + -")
    eid = _evaluation_id(spec.protocol, verifiers, set_metrics, entries, spec.reference)
    for e in entries:
        if e.problem:
            log.warning("%s", e.problem)
    return EvalPlan(spec, prompts, entries, extra, naming, verifiers, set_metrics, eid, out)


def batches(plan: EvalPlan) -> list[list[ClipEntry]]:
    n = max(1, int(plan.spec.batch_size))
    return [plan.entries[i:i + n] for i in range(0, len(plan.entries), n)]


_PLANS: dict[str, EvalPlan] = {}


def refresh_plan(spec: Mapping[str, Any]) -> EvalPlan:
    """:func:`prepare` now (the folder may have changed since an earlier run in this process) and keep
    the plan for the tasks of this run (:func:`cached_plan`)."""
    key = json.dumps(dict(spec), sort_keys=True, default=str)
    plan = _PLANS[key] = prepare(spec_from_dict(spec))
    return plan


def cached_plan(spec: Mapping[str, Any]) -> EvalPlan:
    """The plan :func:`refresh_plan` made for ``spec`` in this process (prepared now when there is none):
    the tasks of one flow run share it and its models."""
    key = json.dumps(dict(spec), sort_keys=True, default=str)
    plan = _PLANS.get(key)
    return plan if plan is not None else refresh_plan(spec)

