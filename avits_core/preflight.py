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

The checks themselves live in :mod:`avits_core.checks`, one module per kind (``inputs``: steps 2-6;
``models``: steps 7-9; ``base``: the finding lines); this module holds the order they run in, the
budget limits (step 1), and the once-per-command bookkeeping (:func:`take_passed`).

Run status helpers (:func:`record_failure`) write a failed run's cause and step into ``run.json``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from avits_core.checks.base import CheckState, is_failure
from avits_core.checks.inputs import aggregator_lines, names_lines, prompt_lines, run_folder_lines, writable_line
from avits_core.checks.models import distribution_lines, generator_lines, verifier_lines
from avits_core.errors import AvitsError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.config import RunConfig
    from avits_core.prompts import Prompt

log = logging.getLogger(__name__)

#: Most candidates per prompt a run may ask for without ``force``: Best-of-1024 is far beyond any
#: published ITS budget, and a typo such as ``search.n=1000000000`` would otherwise grow memory
#: until the process is killed.
MAX_N_PER_PROMPT = 1024
#: Most candidates in one run without ``force`` (prompts x candidates per prompt, every generation).
MAX_CANDIDATES = 1_000_000


class PreflightError(ConfigError):
    """A pre-flight check failed; ``findings`` holds every line produced up to the failure."""

    def __init__(self, message: str, findings: list[str] | None = None):
        super().__init__(message)
        self.findings = list(findings or [])


# --------------------------------------------------------------------------- the budget (step 1)


def _search_lines(st: CheckState) -> list[str]:
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


# --------------------------------------------------------------------------- drivers


def _checks(st: CheckState) -> Iterator[tuple[str, Callable[[], list[str]]]]:
    """(step, check) in the order they run: cheapest and most likely to fail first."""
    cfg = st.cfg
    yield "names", lambda: names_lines(st)
    yield "aggregator", lambda: aggregator_lines(st)
    yield "output_root", lambda: [writable_line(cfg.output_root)]
    yield "run folder", lambda: run_folder_lines(st)
    yield "prompts", lambda: prompt_lines(st)
    yield "search", lambda: _search_lines(st)
    yield "generator", lambda: generator_lines(st)
    guided = {v.name for v in cfg.verifiers}
    for spec in cfg.verifiers:
        yield "verifiers", (lambda s=spec: verifier_lines(st, s.name, dict(s.params), "guided"))
    for name, params in cfg.evaluation.specs():
        if name not in guided:
            yield "verifiers", (lambda n=name, p=params: verifier_lines(st, n, dict(p), "evaluation"))
    yield "distribution", lambda: distribution_lines(st)


def collect(cfg: "RunConfig", *, models: bool = True, force: bool = False) -> list[str]:
    """Every check's lines (``avits doctor``): a failed check does not stop the next one.

    The names check is skipped in favour of the per-component checks (which name the same
    problems with more context)."""
    st = CheckState(cfg, models=models, force=force)
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
    st = CheckState(cfg, models=models, force=force)
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
