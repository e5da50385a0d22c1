"""Pre-flight checks of a run config: one module for ``avits run``, the ``its`` flow and ``avits doctor``.

Everything that can fail cheaply is checked here, *before* any run folder is created, model is
loaded or candidate is generated. Each check yields findings, one line each, starting with
``ok:``, ``WARNING:``, ``MISSING:`` (a file to fetch) or ``ERROR:`` (a bad value):

  1. search       the method's parameters and the budget: ``search.n`` above :data:`MAX_N_PER_PROMPT`,
                  or more than :data:`MAX_CANDIDATES` candidates in the whole run, is refused unless
                  forced (``avits run --force``); EvoSearch schedules are validated by EvoSearchConfig
  2. names        generator, verifier and aggregator names against the registries (no import)
  3. aggregator   the aggregator's parameters (it is constructed; no data)
  4. output root  writable (or creatable) -- checked without creating anything
  5. run folder   an existing folder of the same run id must hold a run of the same config
  6. prompts      the prompt set parses (file present, columns, limit)
  7. generator    its parameters: a ``validate_params(params)`` classmethod when the class has one
                  (plugins), else the weight-free embedded generator is constructed (that is its
                  check: ``synth`` with ``num_steps=0`` is refused here), else the parameters are bound
                  to the constructor's signature (unknown names); with ``models`` also the weights
                  (``ltx2``: :func:`~avits_core.generators.ltx2.ltx2_doctor`; plugins: their
                  ``doctor(**params)`` hook)
  8. verifiers    every guided and evaluation verifier is constructed with its params (construction
                  never loads weights) and, with ``models``, ``check_ready()`` checks its weights on
                  disk; a CUDA device this machine lacks is an ERROR
  9. distribution the reference clips of ``evaluation.distribution`` exist; with ``models`` the
                  feature extractors' weights are on disk

:func:`check_run` stops at the first failure and raises :class:`PreflightError` (a ConfigError:
the CLI prints its one line and exits 2); :func:`collect` runs every check and returns every line
(``avits doctor``: one problem does not hide the next). Heavy libraries are imported only by the
check that needs them, so a refusal of a bad name or value costs well under a second.

Run status helpers (:func:`record_failure`) write a failed run's cause and step into ``run.json``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from avits_core.errors import AvitsError, ConfigError, MissingWeightsError

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.config import RunConfig
    from avits_core.prompts import Prompt

log = logging.getLogger(__name__)

PREFIXES = ("ok:", "WARNING:", "MISSING:", "ERROR:")

#: Most candidates per prompt a run may ask for without ``force``: Best-of-1024 is far beyond any
#: published ITS budget, and a typo such as ``search.n=1000000000`` would otherwise grow memory
#: until the process is killed.
MAX_N_PER_PROMPT = 1024
#: Most candidates in one run without ``force`` (prompts x candidates per prompt, every generation).
MAX_CANDIDATES = 1_000_000

JAVISBENCH_HINT = (
    "JavisBench prompt sets (JavisBench.csv, JavisBench-mini.csv) come with the benchmark: "
    "`hf download --repo-type dataset JavisVerse/JavisBench --local-dir data/eval/JavisBench` "
    "(older huggingface_hub: `huggingface-cli download ...`), then set prompts.source to "
    "data/eval/JavisBench/JavisBench-mini.csv (or --set prompts.source=...)"
)


class PreflightError(ConfigError):
    """A pre-flight check failed; ``findings`` holds every line produced up to the failure."""

    def __init__(self, message: str, findings: list[str] | None = None):
        super().__init__(message)
        self.findings = list(findings or [])


def is_failure(line: str) -> bool:
    return line.startswith(("MISSING:", "ERROR:"))


def finding(line: str) -> str:
    """Give an unprefixed line (e.g. ltx2_doctor's memory estimate) the ``ok:`` prefix."""
    return line if line.startswith(PREFIXES) else f"ok: {line}"


@dataclass
class _State:
    """What the checks share: the config, options, and what earlier checks found out."""

    cfg: "RunConfig"
    models: bool = True
    force: bool = False
    prompts: "list[Prompt] | None" = None
    verifiers: dict[str, Any] = field(default_factory=dict)  # (role, name) -> instance


# --------------------------------------------------------------------------- individual checks


def _search_lines(st: _State) -> list[str]:
    s = st.cfg.search
    try:  # the method's name (registry / entry point avits.search), its declared parameters, its budget
        from avits_core.search.base import search_from_config

        per_prompt_or_none, what = search_from_config(s).budget()
    except AvitsError as exc:
        return [f"ERROR: search: {exc}"]
    except Exception as exc:  # noqa: BLE001 - a bad parameter type is a finding, not a crash
        return [f"ERROR: search.params: {type(exc).__name__}: {exc}"]
    per_prompt = int(s.n) if per_prompt_or_none is None else per_prompt_or_none
    if per_prompt_or_none is None:
        what = f"search.n={s.n}"
    if not st.force and per_prompt > MAX_N_PER_PROMPT:
        return [f"ERROR: search: {what} asks for {per_prompt} candidates per prompt, above the limit of "
                f"{MAX_N_PER_PROMPT} (avits_core.preflight.MAX_N_PER_PROMPT); pass --force if you mean it"]
    line = f"ok: search {s.method} ({per_prompt} candidates per prompt)"
    if st.prompts is not None:
        total = per_prompt * len(st.prompts)
        if not st.force and total > MAX_CANDIDATES:
            return [f"ERROR: search: {len(st.prompts)} prompts x {per_prompt} candidates = {total} candidates, above "
                    f"the limit of {MAX_CANDIDATES} per run (avits_core.preflight.MAX_CANDIDATES); "
                    f"split the prompt set or pass --force"]
    return [line]


def _names_lines(st: _State) -> list[str]:
    """Unknown names, from the registries' name lists (no module is imported)."""
    from avits_core.registry import GENERATORS, VERIFIERS

    out = []
    gen = st.cfg.generator.name
    if gen not in GENERATORS.names():
        out.append(f"ERROR: generator {gen!r}: unknown generator {gen!r}; known generators: "
                   f"{', '.join(GENERATORS.names())}. A plugin generator must be installed in this environment "
                   f"and declare an entry point in the group 'avits.generators' (docs/plugins.md)")
    known = VERIFIERS.names()
    for role, names in (("guided", [v.name for v in st.cfg.verifiers]),
                        ("evaluation", [n for n, _ in st.cfg.evaluation.specs()])):
        for n in names:
            if n not in known:
                out.append(f"ERROR: verifier {n} ({role}): unknown verifier {n!r}; known verifiers: {', '.join(known)}")
    return out


def _aggregator_lines(st: _State) -> list[str]:
    from avits_core.aggregate import get_aggregator

    cfg = st.cfg
    try:
        get_aggregator(cfg.aggregator.name, [v.name for v in cfg.verifiers], cfg.weights, **cfg.aggregator.params)
    except Exception as exc:  # UnknownNameError, ConfigError, TypeError for a bad param
        return [f"ERROR: aggregator {cfg.aggregator.name!r}: {exc}"]
    return [f"ok: aggregator {cfg.aggregator.name}"]


def writable_line(root: str | Path) -> str:
    """Whether ``root`` is (or can be created as) a writable folder, checked without creating anything."""
    from avits_core.store import fs as sfs

    if sfs.is_url(root):
        return sfs.remote_root_line(root)
    p = Path(root).expanduser().absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"ERROR: output_root {str(root)!r} is not writable: {str(probe)!r} is a file, not a folder"
    if os.access(probe, os.W_OK | os.X_OK):
        return f"ok: output_root {str(p)} is writable" + ("" if probe == p else " (will be created)")
    return (f"ERROR: output_root {str(root)!r} is not writable ({str(probe)!r} denies write access); "
            f"set output_root")


def run_folder(cfg: "RunConfig") -> Path:
    """The folder a config's run lives in (it may not exist yet)."""
    from avits_core.store.fs import as_path

    return as_path(cfg.output_root) / cfg.resolved_run_id()


def read_run_json(folder: str | Path) -> dict[str, Any] | None:
    """A run folder's run.json as a dict, or None when there is none (nothing else is read)."""
    import json

    from avits_core.store.fs import as_path

    p = as_path(folder) / "run.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{p}: unreadable run.json ({exc})") from exc


def _run_folder_lines(st: _State) -> list[str]:
    folder = run_folder(st.cfg)
    try:
        info = read_run_json(folder)
    except ConfigError as exc:
        return [f"ERROR: run folder: {exc}"]
    if info is None:
        return [f"ok: run folder {folder} (new run)"]
    stored = info.get("config_hash")
    if stored not in (None, st.cfg.config_hash()):
        return [f"ERROR: run folder {folder} holds a run of a different config (config hash {str(stored)[:8]} "
                f"vs {st.cfg.config_hash()[:8]}); give a new --run-id to start a new run"]
    return [f"ok: run folder {folder} holds this config's run (status {info.get('status')}; it resumes)"]


def _prompt_lines(st: _State) -> list[str]:
    from avits_core.prompts import load_prompts

    cfg = st.cfg
    src = cfg.prompts.source
    try:
        prompts = load_prompts(src, text_column=cfg.prompts.text_column, limit=cfg.prompts.limit)
    except AvitsError as exc:
        missing = isinstance(src, str) and not Path(src).exists()
        line = f"MISSING: prompts: {exc}" if missing else f"ERROR: prompts: {exc}"
        if isinstance(src, str) and "javis" in Path(src).name.lower():
            line += f". {JAVISBENCH_HINT}"
        elif missing:
            line += ". Point prompts.source at a .csv, .tsv, .txt or .jsonl file (relative paths are resolved against the config's folder)"
        return [line]
    st.prompts = prompts
    where = "inline" if not isinstance(src, str) else src
    aspects = sorted({k[: -len("_ind")] for p in prompts for k in p.meta if k.startswith("cat") and k.endswith("_ind")})
    extra = f"; JavisBench categories {', '.join(aspects)} (per-category results)" if aspects else ""
    return [f"ok: {len(prompts)} prompts from {where}{extra}"]


def device_line(what: str, device: Any) -> str | None:
    """ERROR when ``device`` names a CUDA device this machine does not have; None when fine."""
    if device is None or not str(device).startswith("cuda"):
        return None
    try:
        from avits_core.loading import check_device

        check_device(device, what=what)  # the same check a generator makes before loading weights
    except ConfigError as exc:
        return f"ERROR: {exc}"
    except ImportError as exc:
        return f"ERROR: {what}: cannot check device {str(device)!r} ({exc})"
    return None


def _bind_line(what: str, cls: type, params: dict[str, Any]) -> str | None:
    """ERROR when ``params`` do not fit the constructor's signature (unknown or missing names)."""
    import inspect

    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):  # builtins / C classes: nothing to check
        return None
    try:
        sig.bind(**params)
    except TypeError as exc:
        return f"ERROR: {what}: params {params} do not fit {cls.__qualname__}{sig}: {exc}"
    return None


def _generator_lines(st: _State) -> list[str]:
    from avits_core.registry import GENERATORS

    name, params = st.cfg.generator.name, dict(st.cfg.generator.params)
    what = f"generator {name}"
    try:
        cls = GENERATORS.get_class(name)
    except Exception as exc:  # UnknownNameError, or the plugin's import failing
        return [f"ERROR: generator {name!r}: {exc}. A plugin generator must be installed in this environment "
                f"and declare an entry point in the group 'avits.generators' (docs/plugins.md)"]
    validate = getattr(cls, "validate_params", None)
    try:
        if callable(validate):
            validate(params)
        elif name == "synth" or getattr(cls, "needs_weights", None) is False:
            cls(**params)  # weight-free: constructing it is the check (and cheap)
        else:
            bad = _bind_line(what, cls, params)
            if bad:
                return [bad]
    except AvitsError as exc:
        return [f"ERROR: generator.params: {exc}"]
    except Exception as exc:  # noqa: BLE001 - a bad parameter is a finding
        return [f"ERROR: generator.params: {name}: {type(exc).__name__}: {exc}"]
    if name == "synth":
        return ["ok: generator synth (embedded SynthAV world) needs no weights"]
    if not st.models:
        return [f"ok: generator {name} parameters"]
    if name == "ltx2":
        from avits_core.generators.ltx2 import ltx2_doctor

        out = []
        for line in ltx2_doctor(params.get("model_path"), params.get("device", "cpu")):
            head, _, rest = finding(line).partition(": ")
            out.append(f"{head}: generator ltx2: {rest}")
        return out
    where = f"{cls.__module__}.{cls.__qualname__}"
    lines = []
    dev = device_line(what, params.get("device"))
    if dev:
        lines.append(dev)
    hook = getattr(cls, "doctor", None)
    if callable(hook):
        try:
            found = hook(**params)
            lines += [f"ok: generator {name} ({where})"] + [finding(str(x)) for x in found]
        except Exception as exc:  # noqa: BLE001 - a broken hook is a finding
            lines.append(f"ERROR: generator {name}: its doctor() hook failed: {type(exc).__name__}: {exc}")
        return lines
    return lines + [f"WARNING: generator {name} ({where}) is importable but has no doctor() hook; "
                    f"its weights and device are not checked here"]


def _verifier_lines(st: _State, name: str, params: dict[str, Any], role: str) -> list[str]:
    from avits_core.registry import VERIFIERS

    what = f"verifier {name} ({role})"
    try:
        v = VERIFIERS.create(name, **params)
    except AvitsError as exc:
        return [f"ERROR: {what}: {exc}"]
    except Exception as exc:  # bad params (TypeError), optional dependency missing
        return [f"ERROR: {what}: cannot be created with params {params}: {type(exc).__name__}: {exc}"]
    st.verifiers[(role, name)] = v
    lines = []
    device = getattr(v, "device", None) or getattr(getattr(v, "backbone", None), "device", None)
    dev = device_line(what, device)
    if dev:
        lines.append(dev)
    if not st.models:
        return lines + [f"ok: {what} v{v.version} parameters"]
    try:
        v.check_ready()
    except MissingWeightsError as exc:
        return lines + [f"MISSING: {what}: {exc}"]
    except AvitsError as exc:
        return lines + [f"ERROR: {what}: {exc}"]
    except Exception as exc:  # noqa: BLE001
        return lines + [f"ERROR: {what}: {type(exc).__name__}: {exc}"]
    weights = " (weights found)" if getattr(v, "needs_weights", False) else " (needs no weights)"
    return lines + [f"ok: {what} v{v.version} ready{weights}"]


def _distribution_lines(st: _State) -> list[str]:
    dist = st.cfg.evaluation.distribution
    if dist is None:
        return []
    try:
        files = dist.reference_files()
    except AvitsError as exc:
        return [f"ERROR: {exc}"]
    out = [f"ok: evaluation.distribution: {len(files)} reference clips"]
    if not st.models:
        return out
    try:
        from avits_core.metrics.features import ClapAudioEmbedding, I3DVideoFeatures

        if dist.video is not None:
            v = dist.video
            I3DVideoFeatures(v.path, device=v.device, num_frames=v.num_frames, size=v.size,
                             batch_size=v.batch_size, sampling=v.sampling).check_ready()
        if dist.audio is not None:
            a = dist.audio
            ClapAudioEmbedding(a.model_path, device=a.device, batch_size=a.batch_size).check_ready()
    except MissingWeightsError as exc:
        return out + [f"MISSING: evaluation.distribution: {exc}"]
    except AvitsError as exc:
        return out + [f"ERROR: evaluation.distribution: {exc}"]
    return out + ["ok: evaluation.distribution feature extractors ready"]


# --------------------------------------------------------------------------- drivers


def _checks(st: _State) -> Iterator[tuple[str, Callable[[], list[str]]]]:
    """(step, check) in the order they run: cheapest and most likely to fail first."""
    cfg = st.cfg
    yield "names", lambda: _names_lines(st)
    yield "aggregator", lambda: _aggregator_lines(st)
    yield "output_root", lambda: [writable_line(cfg.output_root)]
    yield "run folder", lambda: _run_folder_lines(st)
    yield "prompts", lambda: _prompt_lines(st)
    yield "search", lambda: _search_lines(st)
    yield "generator", lambda: _generator_lines(st)
    guided = {v.name for v in cfg.verifiers}
    for spec in cfg.verifiers:
        yield "verifiers", (lambda s=spec: _verifier_lines(st, s.name, dict(s.params), "guided"))
    for name, params in cfg.evaluation.specs():
        if name not in guided:
            yield "verifiers", (lambda n=name, p=params: _verifier_lines(st, n, dict(p), "evaluation"))
    yield "distribution", lambda: _distribution_lines(st)


def collect(cfg: "RunConfig", *, models: bool = True, force: bool = False) -> list[str]:
    """Every check's lines (``avits doctor``): a failed check does not stop the next one.

    The names check is skipped in favour of the per-component checks (which name the same
    problems with more context)."""
    st = _State(cfg, models=models, force=force)
    out: list[str] = []
    for step, check in _checks(st):
        if step == "names":
            continue
        out += check()
    return out


@dataclass
class Preflight:
    """The result of a passed :func:`check_run`: the prompts and every finding line."""

    prompts: "list[Prompt]"
    findings: list[str]
    seconds: float
    verifiers: dict[str, Any] = field(default_factory=dict)


#: The steps of :func:`check_run`, in order.
STEPS = ("names", "aggregator", "output_root", "run folder", "prompts", "search", "generator", "verifiers",
         "distribution")


def check_run(cfg: "RunConfig", *, models: bool = True, force: bool = False, skip: Iterable[str] = (),
              only: Iterable[str] | None = None) -> Preflight:
    """Check ``cfg`` before a run; raise :class:`PreflightError` at the first problem.

    Creates nothing. ``models`` also checks weights on disk (generator and verifiers);
    ``force`` lifts the budget limits; ``skip``/``only`` leave out / keep steps of :data:`STEPS` (the
    CLI defers the generator check, which imports the generator, until a run has generation to do).
    Returns the loaded prompts and the findings."""
    t0 = time.perf_counter()
    st = _State(cfg, models=models, force=force)
    skip = set(skip)
    keep = set(only) if only is not None else None
    bad_steps = (skip | (keep or set())) - set(STEPS)
    if bad_steps:
        raise ValueError(f"unknown pre-flight steps {sorted(bad_steps)}; steps are {STEPS}")
    found: list[str] = []
    for step, check in _checks(st):
        if step in skip or (keep is not None and step not in keep):
            continue
        lines = check()
        found += lines
        bad = [ln for ln in lines if is_failure(ln)]
        if bad:
            raise PreflightError(bad[0].split(": ", 1)[1], found)
    dt = time.perf_counter() - t0
    log.info("pre-flight checks passed in %.2fs", dt)
    result = Preflight(prompts=list(st.prompts or []), findings=found, seconds=dt,
                       verifiers={name: v for (role, name), v in st.verifiers.items()})
    if models:  # a check with the weights on disk can stand in for the run's own (take_passed)
        _remember(cfg, {s for s in STEPS if s not in skip and (keep is None or s in keep)}, force, result)
    return result


# --------------------------------------------------------------------------- once per command
#: Checks with weights passed in this process, not yet used by a run: full config JSON -> (steps run,
#: with force, the Preflight that loaded the prompts). One command checks a config (the CLI), then its
#: flow's :func:`avits_core.runner.prepare_run` takes the entry (:func:`take_passed`) instead of checking
#: again. An entry serves one run: a later run of the same config in a long-lived process checks anew.
_PASSED: dict[str, tuple[set[str], bool, Preflight | None]] = {}
_PASSED_LOCK = threading.Lock()


def _config_key(cfg: "RunConfig") -> str:
    import json

    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True, default=str)


def _remember(cfg: "RunConfig", steps: set[str], force: bool, result: Preflight) -> None:
    key = _config_key(cfg)
    with _PASSED_LOCK:
        old_steps, old_force, old = _PASSED.get(key, (set(), False, None))
        keep = result if "prompts" in steps else old  # the Preflight that holds the prompts
        _PASSED[key] = (old_steps | steps, old_force or force, keep)


def take_passed(cfg: "RunConfig", *, force: bool = True) -> Preflight | None:
    """The Preflight of earlier :func:`check_run` calls with weights in this process that, together, ran
    every step of :data:`STEPS` on this exact config (budget limits enforced unless ``force``), removing
    it; None when there is none (then the caller checks)."""
    key = _config_key(cfg)
    with _PASSED_LOCK:
        entry = _PASSED.get(key)
        if entry is None:
            return None
        steps, with_force, result = entry
        if set(STEPS) - steps or (with_force and not force) or result is None:
            return None
        del _PASSED[key]
    return result


def validate_config(cfg: "RunConfig", *, models: bool = True, force: bool = False) -> "list[Prompt]":
    """:func:`check_run` for callers that only need the prompts (the runner's ``prepare_run``)."""
    return check_run(cfg, models=models, force=force).prompts


# --------------------------------------------------------------------------- run status


def record_failure(run_path: str | Path, step: str, cause: str | BaseException) -> dict[str, Any] | None:
    """Mark a run failed in its ``run.json``: ``status: failed``, ``failure: {step, cause, at}``.

    ``cause`` is one line (an exception becomes ``Type: message``). Returns the new run.json, or None
    when the folder has no run.json (the run never started: nothing to record)."""
    from avits_core.store import RunStore
    from avits_core.store.fs import as_path

    p = as_path(run_path)
    if not (p / "run.json").is_file():
        return None
    if isinstance(cause, BaseException):
        cause = one_line(cause)
    store = RunStore(p.parent, p.name)
    return store.update_run_json(status="failed", finished_at=time.time(),
                                 failure={"step": step, "cause": str(cause), "at": time.time()})


def one_line(exc: BaseException) -> str:
    """An exception as one line: ``message`` for our own errors, ``Type: message`` otherwise."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, AvitsError):
        return msg
    return f"{type(exc).__name__}: {msg}"


def lines_ok(lines: Iterable[str]) -> bool:
    return not any(is_failure(ln) for ln in lines)
