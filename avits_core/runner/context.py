"""A run's context: validated config, prompts, store, search method and search state; the model cache.

``prepare_run`` runs the pre-flight checks (:mod:`avits_core.preflight`, the one check module of
``avits run``, the flow and ``avits doctor``) BEFORE anything is written, then creates (or reopens)
the run folder and writes run.json. ``open_run`` reopens a run folder without loading any model.

A :class:`RunContext` is built once per command and handed to every step (the flow's tasks get the
object, not a path to parse again). Its :attr:`RunContext.state` - the candidates, plans and guided
rewards the search needs - is read from the tables once per process and then kept current by the
steps, so every per-prompt step costs O(its own work), not O(run size).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from avits_core import __version__
from avits_core.config import RunConfig, VerifierSpec
from avits_core.errors import ConfigError
from avits_core.prompts import Prompt, load_prompts
from avits_core.search.base import SearchMethod, search_from_config
from avits_core.store import RunStore
from avits_core.runner.models import get_generator, get_verifier  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.runner.state import RunState

log = logging.getLogger(__name__)

_STATE_LOCK = threading.Lock()

@dataclass
class RunContext:
    cfg: RunConfig
    run_id: str
    root: Path
    prompts: list[Prompt]
    store: RunStore = field(repr=False)
    _state: "RunState | None" = field(default=None, repr=False, compare=False)
    _method: SearchMethod | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:  # a copy in another process rebuilds its state from the store
        d = dict(self.__dict__)
        d["_state"] = None
        return d

    @property
    def prompt_index(self) -> dict[str, int]:
        if not hasattr(self, "_pindex"):
            self._pindex = {p.prompt_id: i for i, p in enumerate(self.prompts)}
        return self._pindex

    @property
    def prompt_by_id(self) -> dict[str, Prompt]:
        if not hasattr(self, "_pby"):
            self._pby = {p.prompt_id: p for p in self.prompts}
        return self._pby

    @property
    def method(self) -> SearchMethod:
        """The run's search method (``search.method`` with its parameters)."""
        if self._method is None:
            self._method = search_from_config(self.cfg.search)
        return self._method

    @property
    def n_generations(self) -> int:
        """Scoring events per prompt (Best-of-N: 1; EvoSearch: its generations)."""
        return self.method.n_events

    @property
    def state(self) -> "RunState":
        """The search state, read from the tables on first use (once per process)."""
        if self._state is None:
            with _STATE_LOCK:
                if self._state is None:
                    from avits_core.runner.state import RunState

                    self._state = RunState(self)
        return self._state

    def all_verifier_specs(self) -> list[VerifierSpec]:
        """Guided verifiers, then held-out evaluation verifiers (weight 0, their own params)."""
        specs = list(self.cfg.verifiers)
        guided = {v.name for v in specs}
        specs += [VerifierSpec(name=n, weight=0.0, params=p) for n, p in self.cfg.evaluation.specs() if n not in guided]
        return specs


def _check_writable(root: Path) -> None:
    from avits_core.store import fs as sfs

    if sfs.is_remote(root):  # object store: a probe object, written and removed
        probe = root / f".write-test-{os.getpid()}"
        try:
            sfs.put_bytes(probe, b"")
            sfs.remove(probe)
        except Exception as exc:  # noqa: BLE001 - credentials, endpoint, bucket: one message
            raise ConfigError(f"output_root {str(root)!r} is not writable: {type(exc).__name__}: {exc}") from exc
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"output_root {str(root)!r} is not writable: {exc.strerror or exc}") from exc


def validate_config(cfg: RunConfig) -> list[Prompt]:
    """The pre-flight checks that need no model weights (:mod:`avits_core.preflight`); the prompts."""
    from avits_core.preflight import validate_config as preflight_validate

    return preflight_validate(cfg, models=False, force=True)


def prepare_run(cfg: RunConfig, *, check_models: bool = True, force: bool = True) -> RunContext:
    """Check the config (the pre-flight checks of :mod:`avits_core.preflight`, then the weights on disk
    when ``check_models``) and create (or reopen) the run folder. Writes nothing when a check fails."""
    from avits_core.preflight import check_run, take_passed

    passed = take_passed(cfg, force=force)  # the command checked it already (with the weights)
    if passed is not None:
        log.info("pre-flight and weight checks already passed in this command; not repeating them")
    prompts = passed.prompts if passed is not None else check_run(cfg, models=False, force=force).prompts
    if check_models and passed is None:  # weights on disk: the model's own error (MissingWeightsError names the file)
        for spec in cfg.verifiers:
            get_verifier(spec.name, spec.params).check_ready()
        for name, params in cfg.evaluation.specs():
            get_verifier(name, params).check_ready()
        if cfg.evaluation.distribution is not None:
            from avits_core.metrics.distribution import _distribution_extractors

            for ext in _distribution_extractors(cfg.evaluation.distribution).values():
                ext.check_ready()
    method = search_from_config(cfg.search)
    from avits_core.store.fs import as_path

    root = as_path(cfg.output_root)
    _check_writable(root)
    run_id = cfg.resolved_run_id()
    store = RunStore(root, run_id)
    resumed = store.path.exists() and (store.path / "run.json").exists()
    store.create(exist_ok=True)
    if resumed:
        info = store.read_run_json()
        if info.get("config_hash") not in (None, cfg.config_hash()):
            raise ConfigError(
                f"run folder {store.path} holds a run of a different config; set run_id to start a new run"
            )
        store.update_run_json(status="running", resumed_at=time.time(), resumes=int(info.get("resumes", 0)) + 1)
    else:
        store.write_run_json(
            {
                "run_id": run_id,
                "status": "running",
                "config": cfg.model_dump(mode="json"),
                "config_hash": cfg.config_hash(),
                "avits_version": __version__,
                "created_at": time.time(),
                "n_prompts": len(prompts),
                "timings": {},
            }
        )
    log.info("run %s in %s (%s)", run_id, store.path, "resumed" if resumed else "new")
    return RunContext(cfg=cfg, run_id=run_id, root=root, prompts=prompts, store=store, _method=method)


def open_run(run_path: str | Path, info: dict[str, Any] | None = None) -> RunContext:
    """Reopen a finished (or partial) run from its folder, without loading any model.
    ``info``: its run.json when the caller has just read it (saves a read; a GET on object storage)."""
    from avits_core.store.fs import as_path

    run_path = as_path(run_path)
    store = RunStore(run_path.parent, run_path.name)
    if info is None:
        if not (run_path / "run.json").exists():
            raise ConfigError(f"{run_path} is not a run folder (no run.json)")
        info = store.read_run_json()
    from avits_core.config import config_from_dict

    cfg = config_from_dict(info["config"], source=str(run_path / "run.json"))
    prompts = load_prompts(cfg.prompts.source, text_column=cfg.prompts.text_column, limit=cfg.prompts.limit)
    return RunContext(cfg=cfg, run_id=run_path.name, root=run_path.parent, prompts=prompts, store=store)


def record_timing(ctx: RunContext, stage: str, seconds: float) -> None:
    """Add ``seconds`` to run.json's timings[stage] (read-modify-write under the store's lock)."""
    def add(info: dict[str, Any]) -> dict[str, Any]:
        timings = dict(info.get("timings") or {})
        timings[stage] = round(float(timings.get(stage, 0.0)) + seconds, 4)
        return {**info, "timings": timings}

    ctx.store.modify_run_json(add)


def finish_run(ctx: RunContext, status: str = "completed", **extra: Any) -> None:
    ctx.store.update_run_json(status=status, finished_at=time.time(), **extra)


def shards(prompts: Sequence[Prompt], size: int) -> list[list[Prompt]]:
    return [list(prompts[i : i + size]) for i in range(0, len(prompts), size)]
