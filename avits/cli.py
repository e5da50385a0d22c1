"""The ``avits`` command line (typer). Decisions (also in docs/commands.md):

- Refusals. Every user error (bad config, unknown name, bad component parameter, budget above the
  limits of :mod:`avits_core.preflight` without ``--force``, missing file, unwritable output, a run
  held by another command) prints one line and exits with code 2, before anything is created.
- Failures after the start print one line, ``error: failed at step <task>: <cause>``, exit 1, and
  are recorded in ``run.json`` (``status: failed``, ``failure: {step, cause}``); ``--verbose`` adds
  the traceback (Prefect's own error logs are hidden otherwise).
- A Prefect server only where there is orchestration to do: ``avits run`` of an unfinished run,
  ``avits rerank`` with (candidate, verifier) pairs left to score, ``avits benchmark``. These use
  ``PREFECT_API_URL`` if set, else the ``avits server`` if one runs, else a private server that dies
  with the command (:mod:`avits.server`). A finished run prints its stored results, a rerank whose
  rewards are all stored runs the same select/evaluate/report calls in this process, and ``sql``,
  ``report``, ``budget``, ``ablate``, ``diagnose``, ``lineage``, ``doctor`` never start one.
- One owner per run: commands that write to a run hold its lock (:mod:`avits_core.lock`).
- Heavy libraries are imported inside the commands that use them (``python -X importtime``), so a
  refusal costs about 0.3 s of CPU.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from avits.common import _fail, _print_table, _setup_logging
from avits_core.errors import AvitsError
from avits_core.names import check_name

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Inference-time scaling for joint audio-video generation.")
log = logging.getLogger("avits")


def _results_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        better = "↑" if r.get("higher_is_better", True) else "↓"
        out.append({"metric": f"{r['metric']} {better}", "held out": "yes" if r.get("held_out") else "no",
                    "baseline": r.get("baseline"), "selected": r.get("selected"), "change": r.get("change")})
    return out


class _progress_bars:
    """Rich progress bars fed by avits_core.progress events (generation, one bar per verifier)."""

    def __init__(self, enabled: bool = True):
        import threading

        self.enabled = enabled and sys.stderr.isatty()
        self.tasks: dict[str, Any] = {}
        self.lock = threading.Lock()

    def __enter__(self):
        if not self.enabled:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from avits_core import progress

        # 2 redraws a second (rich's default is 10): the bars take less of the run's CPU on a terminal
        self.bars = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             transient=False, refresh_per_second=2)
        self.bars.start()
        progress.add_listener(self._on)
        return self

    def _on(self, stage: str, advance: int, total: int) -> None:
        with self.lock:  # scoring and generation tasks report from several threads
            if stage not in self.tasks:
                self.tasks[stage] = self.bars.add_task(stage, total=total)
            self.bars.update(self.tasks[stage], advance=advance, total=total)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            from avits_core import progress

            progress.remove_listener(self._on)
            self.bars.stop()


#: The collector's thresholds during a run (Python's default: 700, 10, 10). A run allocates ~0.7 M
#: container objects per 200 candidates (Prefect's engine, pydantic, pyarrow rows): at 700 that is ~970
#: young and 8 full collections, 0.7 CPU-s of the demo run; at 10,000 ~70 young and at most one full
#: collection, 0.3 CPU-s (measured with bench/work_meter.py). Cycles are still collected, each a little later.
RUN_GC_THRESHOLDS = (10_000, 10, 10)
#: the collector's thresholds when this module was imported: the interpreter's own in the ``avits``
#: command (700, 10, 10 on 3.11 and 3.12; 2000, 10, 10 or others on later versions)
_GC_THRESHOLDS_AT_IMPORT = gc.get_threshold()


def _freeze_imported_objects() -> None:
    """Move every object alive now (the imported modules of Prefect, pydantic, the models ...) out of the
    garbage collector's reach: the run's full collections then walk only what the run creates. This CLI
    process imports ~5x the objects of a bare loop, so each full collection cost it ~0.12 CPU-s (issue 17);
    these objects live as long as the process anyway. Once per process (a second run in the same process,
    e.g. a test invoking the CLI, freezes nothing more)."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


@contextmanager
def _collector_tuned() -> Iterator[None]:
    """The imported objects frozen (:func:`_freeze_imported_objects`) and the collector's thresholds
    raised to :data:`RUN_GC_THRESHOLDS` while a run's flow runs; the thresholds are restored after it
    (an embedding process keeps its own). Thresholds changed since avits.cli was imported are left as
    they are, and so are first thresholds already at least as high."""
    _freeze_imported_objects()
    before = gc.get_threshold()
    if before == _GC_THRESHOLDS_AT_IMPORT and 0 < before[0] < RUN_GC_THRESHOLDS[0]:
        gc.set_threshold(*RUN_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


class _FailureCapture(logging.Filter):
    """Watches Prefect's flow/task-run log records: remembers the first failed task (its name and
    exception) so that a failed run can be reported as one line naming the failing step, and hides
    Prefect's own error tracebacks from the console unless ``--verbose``."""

    LOGGERS = ("prefect.task_runs", "prefect.flow_runs")

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose
        self.step: str | None = None
        self.exc: BaseException | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.name.startswith(self.LOGGERS):
            if self.step is None and record.exc_info and record.exc_info[1] is not None:
                task, run_name = getattr(record, "task_name", None), getattr(record, "task_run_name", None)
                # "score-av_sync" (a task_run_name template) says more than "score"; "report-a1b" does not
                generated = bool(task and run_name and re.fullmatch(rf"{re.escape(task)}-[0-9a-f]{{3}}", run_name))
                name = task if generated or not run_name else run_name
                if name:
                    self.step, self.exc = str(name), record.exc_info[1]
            return self.verbose
        return True

    def install(self) -> None:
        for h in logging.getLogger().handlers:
            h.addFilter(self)

    def uninstall(self) -> None:
        for h in logging.getLogger().handlers:
            h.removeFilter(self)


def _step_and_cause(exc: BaseException, capture: _FailureCapture | None) -> tuple[str, BaseException]:
    """The failing step and the root cause of a failed flow: the first failed task when Prefect
    reported one (a task that never ran because its inputs failed raises UnfinishedRun: not the cause)."""
    if capture is not None and capture.exc is not None:
        return capture.step or "flow", capture.exc
    tb = exc.__traceback__
    step = "flow"
    while tb is not None:  # the innermost avits_core.runner / tasks function on the stack
        mod = tb.tb_frame.f_globals.get("__name__", "")
        if mod.startswith(("avits_core.runner", "tasks.")):
            step = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return step, exc


def _lock_run(folder: Path, break_lock: bool):
    """Hold ``folder``'s run lock (creating the folder if needed); one line and exit 2 when held."""
    from avits_core.lock import RunLock, RunLockedError, command_line

    from avits_core.store.fs import as_path, is_remote

    folder = as_path(folder)
    try:
        if not is_remote(folder):
            folder.mkdir(parents=True, exist_ok=True)
        lk = RunLock(folder, command_line()).acquire(break_lock=break_lock)
    except RunLockedError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{folder}: cannot take the run lock: {exc.strerror or exc}")
    for note in lk.notes:
        typer.secho(f"warning: {note}", fg=typer.colors.YELLOW, err=True)
    return lk


class _locked:
    """``with _locked(run_path, break_lock):`` holds the run lock of an existing run folder for a command
    that writes to it; a path that is not a run folder is left to the command's own error."""

    def __init__(self, run_path: Path, break_lock: bool = False):
        from avits_core.store.fs import as_path

        self.run_path, self.break_lock, self.lk = as_path(run_path), break_lock, None

    def __enter__(self):
        if (self.run_path / "run.json").is_file():
            self.lk = _lock_run(self.run_path, self.break_lock)
        return self.lk

    def __exit__(self, *exc) -> None:
        if self.lk is not None:
            self.lk.release()


BREAK_LOCK = typer.Option(False, "--break-lock", help="break a stale lock left by a command on another machine")


def _finished_results(folder: Path) -> tuple[Any, dict[str, Any], list[dict[str, Any]]] | None:
    """(ctx, run.json, results) when the run in ``folder`` is completed and has nothing left to do
    (every candidate has an ok reward for every verifier at its current version, and the run's
    selection has metrics); None when the flow has work to do."""
    from avits_core import runner
    from avits_core.checks.inputs import read_run_json
    from avits_core.rerank import missing_pairs

    info = read_run_json(folder)
    if not info or info.get("status") != "completed" or not info.get("selection_id"):
        return None
    ctx = runner.open_run(folder, info)  # run.json read once, under the lock
    if any(missing_pairs(ctx, ctx.all_verifier_specs()).values()):
        return None
    rows = runner.results_table(ctx, info["selection_id"])
    return (ctx, info, rows) if rows else None


def _run_flow(call, *, quiet: bool, verbose: bool, folder: Path | None):
    """Run a Prefect flow (``call()`` imports and calls it) on a server picked by avits.server.
    An exception ends in one line naming the step and the cause (recorded in ``folder``'s run.json
    when given) and exit code 1; ``--verbose`` also prints the traceback."""
    from avits import server

    capture = _FailureCapture(verbose)
    say = (lambda s: None) if quiet else (lambda s: typer.echo(s, err=True))
    try:
        with server.prefect_api(say):
            capture.install()
            try:
                return call()
            finally:
                capture.uninstall()
    except typer.Exit:
        raise
    except server.ServerError as exc:  # no server to run on: nothing has run yet
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to resume", code=130)
    except BaseException as exc:  # noqa: BLE001 - every failure ends in one line
        from avits_core.preflight import one_line, record_failure

        step, cause = _step_and_cause(exc, capture)
        if folder is not None:
            try:
                record_failure(folder, step, cause)
            except Exception as rec_exc:  # noqa: BLE001 - never hide the real error behind this one
                log.warning("could not record the failure in %s/run.json: %s", folder, rec_exc)
        if verbose:
            import traceback

            traceback.print_exception(cause)
        where = f" (recorded in {folder / 'run.json'})" if folder is not None and (folder / "run.json").exists() else ""
        _fail(f"failed at step {step}: {one_line(cause)}{where}" + ("" if verbose else "; --verbose shows the traceback"),
              code=1)


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML run config"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set search.n=4"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="name of the run folder (default: from the config hash)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="only warnings and the results"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also Prefect's task-level logs and tracebacks"),
    force: bool = typer.Option(False, "--force", help="accept budgets above the pre-flight limits (search.n > 1024 ...)"),
    break_lock: bool = BREAK_LOCK,
    shards: int = typer.Option(1, "--shards", help="split the prompts over K flow runs of the its-shard/gpu deployment "
                               "(one per GPU worker; needs a running Prefect server: PREFECT_API_URL or `avits server start`)"),
) -> None:
    """Run one ITS config through the Prefect ``its`` flow (resumes the run if it exists).

    Order: config and every pre-flight check (nothing is created on a refusal), then the run lock,
    then either the stored results of a finished run (no server, no flow) or the flow."""
    # Prefect reads its logging level when first imported (below): keep its per-task lines out of
    # the way of the progress bars unless asked for.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    from avits_core import preflight
    from avits_core.checks.inputs import read_run_json, run_folder
    from avits_core.config import load_config

    overrides = list(set_) + ([f"run_id={run_id}"] if run_id else [])
    try:
        cfg = load_config(config, overrides)
        if shards != 1:  # a multi-event method in K shards has per-shard ARW state: search.arw_shards = K
            from flows.shards import sharded_config

            cfg = sharded_config(cfg, shards)
        folder = run_folder(cfg)
        if not quiet:
            from avits_core.search.base import search_from_config

            try:  # e.g. Best-of-8, EvoSearch: the method says; a bad search block is pre-flight's to report
                n = search_from_config(cfg.search).label()
            except AvitsError:
                n = cfg.search.method
            typer.echo(f"avits run {cfg.resolved_run_id()}: {cfg.generator.name}, {n}, {cfg.aggregator.name} over "
                       f"{'+'.join(v.name for v in cfg.verifiers)} -> {folder}", err=True)
        info = read_run_json(folder)
        # a finished run of this config was generated with these generator params: its check (which
        # imports the generator and torch) waits until there is generation to do
        finished = bool(info and info.get("status") == "completed" and info.get("config_hash") == cfg.config_hash())
        preflight.check_run(cfg, force=force, skip=("generator",) if finished else ())
        if shards != 1:
            from flows.shards import check_shardable
            from avits.server import shared_server_url

            check_shardable(cfg, shards)
            if not (os.environ.get("PREFECT_API_URL") or shared_server_url()):
                _fail("--shards needs a running Prefect server that the GPU workers also use: set PREFECT_API_URL "
                      "or run `avits server start` (a temporary server has no workers)")
    except AvitsError as exc:
        _fail(str(exc))
    _setup_logging(not quiet)
    from avits_core.threads import apply_numeric_threads, numeric_threads_for

    apply_numeric_threads(numeric_threads_for(cfg))  # before the flow imports torch, cv2, numpy's BLAS
    lk = _lock_run(folder, break_lock)
    try:
        done = None
        if finished:
            try:
                done = _finished_results(folder)
            except AvitsError as exc:
                log.info("stored results not usable (%s); running the flow", exc)
            if done is None:
                try:
                    preflight.check_run(cfg, force=force, only=("generator",))
                except AvitsError as exc:
                    _fail(str(exc))
        if done is not None:
            ctx, info, results = done
            _print_table(_results_rows(results), title=f"run {ctx.run_id} (finished; baseline = first candidate per prompt)")
            typer.echo(f"run folder: {folder}")
            report_md = folder / "report" / "report.md"
            typer.echo(f"report:     {report_md if report_md.exists() else '(none; `avits report` writes it)'}")
            return

        def call():
            from flows.its import its

            with _collector_tuned(), _progress_bars(enabled=not quiet):
                return its(config=cfg, shards=shards)  # the validated config, not a path to parse again

        out = _run_flow(call, quiet=quiet, verbose=verbose, folder=folder)
    finally:
        lk.release()
    _print_table(_results_rows(out["results"]), title=f"run {out['run_id']} (baseline = first candidate per prompt)")
    typer.echo(f"run folder: {out['run_path']}")
    typer.echo(f"report:     {out['report']}")


@app.command()
def benchmark(
    benchmark_file: Path = typer.Argument(Path("data/configs/benchmark.yaml"), help="benchmark YAML (list of configs)"),
    set_: list[str] = typer.Option([], "--set", help="override applied to every config"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="tracebacks of failures"),
) -> None:
    """Run every config of a benchmark file (the its-benchmark flow) and print the comparison table."""
    _setup_logging(False)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from avits_core import preflight
    from avits_core.config.benchmark import load_benchmark_plan

    try:
        plan = load_benchmark_plan(benchmark_file, list(set_))  # every config, validated once
        for it in plan.entries:
            preflight.check_run(it.config)
    except AvitsError as exc:
        _fail(str(exc))

    def call():
        from flows.benchmark import benchmark as benchmark_flow

        return benchmark_flow(plan=plan)  # the validated configs, not a path for the flow to parse again

    out = _run_flow(call, quiet=False, verbose=verbose, folder=None)
    from avits_core.store.fs import as_path

    typer.echo(as_path(out["paths"]["markdown"]).read_text())  # a local folder or an object store
    typer.echo(f"written: {out['paths']['parquet']}, {out['paths']['markdown']}, {out['paths']['plot']}")


@app.command()
def sql(
    path: Path = typer.Argument(..., help="a run folder or a runs root"),
    command: Optional[str] = typer.Option(None, "-c", help="SQL to run, or the name of a canned query"),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
) -> None:
    """DuckDB over the run's tables (views: candidates, rewards, rewards_all, arw_trace, selections, metrics)."""
    from avits_core.store.duck import connect
    from avits_core.store.queries import CANNED

    from avits_core.store.fs import as_path

    path = as_path(path)
    if not path.exists():
        _fail(f"no such run folder or runs root: {path}")
    con = connect(path)

    def execute(q: str) -> None:
        q = CANNED.get(q.strip().rstrip(";"), q)
        try:
            t = con.sql(q).to_arrow_table()
        except Exception as exc:  # duckdb errors are user errors here
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            if command is not None:
                raise typer.Exit(2)
            return
        rows = t.to_pylist()
        if fmt == "json":
            typer.echo(json.dumps(rows, default=str, indent=1))
        elif fmt == "csv":
            import csv

            w = csv.DictWriter(sys.stdout, fieldnames=t.column_names)
            w.writeheader()
            w.writerows(rows)
        else:
            _print_table(rows)

    if command is not None:
        execute(command)
        return
    typer.echo(f"DuckDB on {path}. Views: candidates, rewards, rewards_all, arw_trace, selections, metrics.")
    typer.echo(f"Canned queries: {', '.join(sorted(CANNED))}. End statements with ';'. Ctrl-D quits.")
    buf = ""
    while True:
        try:
            line = input("avits> " if not buf else "   ...> ")
        except EOFError:
            typer.echo("")
            break
        buf += line + "\n"
        if buf.strip() in CANNED or buf.rstrip().endswith(";"):
            execute(buf)
            buf = ""


@app.command()
def report(run_path: Path = typer.Argument(..., help="a run folder"), selection_id: Optional[str] = typer.Option(None, "--selection"),
           break_lock: bool = BREAK_LOCK) -> None:
    """(Re)write the run's report (Markdown, SVG plots, HTML with clips)."""
    _setup_logging(False)
    from avits_core import runner
    from avits_core.report import write_report

    try:
        with _locked(run_path, break_lock):
            if selection_id is not None:
                check_name(selection_id, "selection id", where="--selection")
            ctx = runner.open_run(run_path)
            if selection_id is not None:
                from avits_core.analysis import spec_of_selection
                spec_of_selection(ctx, selection_id)  # ConfigError naming the stored ones if unknown
            sel = selection_id or ctx.store.read_run_json().get("selection_id") or runner.default_spec(ctx.cfg).selection_id
            rep = write_report(ctx, sel)
    except AvitsError as exc:
        _fail(str(exc))
    _print_table(_results_rows(rep.results))
    typer.echo(f"report: {rep.markdown_path}\nhtml:   {rep.html_path}")


@app.command()
def verifiers() -> None:
    """List the verifiers (built-in and plugins) with version, direction and range."""
    from avits_core.registry import VERIFIERS

    rows = []
    for n in VERIFIERS.names():
        try:
            c = VERIFIERS.get_class(n)
            doc = (c.__doc__ or "").strip().splitlines()[0] if c.__doc__ else ""
            rows.append({"name": n, "version": c.version, "higher is better": c.higher_is_better,
                         "range": str(c.value_range), "needs weights": c.needs_weights, "what": doc})
        except Exception as exc:  # optional dependency missing
            rows.append({"name": n, "version": "?", "higher is better": None, "range": "", "needs weights": None,
                         "what": f"unavailable: {exc}"})
    _print_table(rows)


@app.command()
def generators() -> None:
    """List the generators (built-in and plugins)."""
    from avits_core.registry import GENERATORS

    rows = []
    for n in GENERATORS.names():
        try:
            c = GENERATORS.get_class(n)
            rows.append({"name": n, "class": f"{c.__module__}.{c.__qualname__}",
                         "what": (c.__doc__ or "").strip().splitlines()[0] if c.__doc__ else ""})
        except Exception as exc:
            rows.append({"name": n, "class": "?", "what": f"unavailable: {exc}"})
    _print_table(rows)


@app.command()
def rerank(
    run_path: Path = typer.Argument(..., help="a finished run folder"),
    verifiers: Optional[str] = typer.Option(None, "--verifiers", help="comma list, each name[:weight], e.g. av_sync,synth_text:2 (default: the run's)"),
    aggregator: Optional[str] = typer.Option(None, "--aggregator", help="weighted | rank | minmax | zscore | zscore_candidate | zscore_history | arw (default: the run's)"),
    param: list[str] = typer.Option([], "--param", help="aggregator parameter KEY=VALUE (YAML value), repeatable"),
    budget: Optional[int] = typer.Option(None, "--budget", help="use only the first K candidates of each prompt"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="tracebacks of failures"),
    break_lock: bool = BREAK_LOCK,
) -> None:
    """Re-rank a finished run: no generator; scores only missing (candidate, verifier) pairs.

    When every reward it needs is stored, the replay, evaluation and report run in this process
    (no Prefect server); otherwise the ``rerank`` flow scores the missing pairs."""
    _setup_logging(False)
    from avits_core.rerank import plan_rerank

    try:
        params = _aggregator_params(param)
        plan = plan_rerank(str(run_path), verifiers, aggregator, params, budget)  # before any work
    except AvitsError as exc:
        _fail(str(exc))
    ctx, spec, vspecs = plan.ctx, plan.spec, plan.vspecs
    lk = _lock_run(Path(run_path), break_lock)
    try:
        # counted before the lock: stored rewards only grow, so "nothing missing" still holds under it
        if not any(plan.missing.values()):
            out = _rerank_here(ctx, spec, vspecs)
        else:
            def call():
                from flows.rerank import rerank as rerank_flow

                return rerank_flow(str(run_path), verifiers=verifiers, aggregator=aggregator, params=params, budget=budget)

            out = _run_flow(call, quiet=False, verbose=verbose, folder=None)
    except AvitsError as exc:
        _fail(str(exc))
    finally:
        lk.release()
    for name, counts in out["scored"].items():
        typer.echo(f"{name}: scored {counts['scored']}, errors {counts['errors']}, already stored {counts['cached']}")
    _print_table(_results_rows(out["results"]), title=f"selection {out['selection_id']}")
    typer.echo(f"report: {out['report']}")


def _rerank_here(ctx: Any, spec: Any, vspecs: list[Any]) -> dict[str, Any]:
    """The rerank flow's select -> evaluate -> report, in this process (every reward is stored)."""
    from avits_core import runner
    from avits_core.report import write_report

    n = len(ctx.store.candidate_ids())
    sel_id = runner.select(ctx, spec)
    runner.evaluate(ctx, sel_id)
    results = runner.results_table(ctx, sel_id)
    rep = write_report(ctx, sel_id)
    return {"run_path": str(ctx.store.path), "selection_id": sel_id, "spec": spec.to_dict(),
            "scored": {vs.name: {"scored": 0, "errors": 0, "cached": n} for vs in vspecs},
            "results": results, "report": str(rep.markdown_path)}


def _aggregator_params(param: list[str]) -> dict[str, Any] | None:
    """``--param KEY=VALUE`` items -> a params dict (None when none are given)."""
    from avits_core.config import parse_override

    if not param:
        return None
    params: dict[str, Any] = {}
    for item in param:
        keys, value = parse_override(item)
        params[".".join(keys)] = value
    return params


def _analysis_spec(run_path: Path, verifiers: Optional[str], aggregator: Optional[str], param: list[str],
                   selection: Optional[str]):
    """(ctx, run data, spec): a stored selection's spec, or the run's spec with the given overrides."""
    from avits_core import runner
    from avits_core.analysis import load_run_data, spec_of_selection
    from avits_core.rerank import rerank_spec

    ctx = runner.open_run(run_path)
    if selection is not None:
        check_name(selection, "selection id", where="--selection")
    if selection and (verifiers or aggregator or param):
        raise AvitsError("--selection takes the whole spec of a stored selection; do not combine it with "
                         "--verifiers/--aggregator/--param")
    spec = spec_of_selection(ctx, selection) if selection else rerank_spec(ctx, verifiers, aggregator, _aggregator_params(param), None)
    data = load_run_data(ctx)
    data.check_spec(spec)
    return ctx, data, spec


@app.command()
def budget(
    run_path: Path = typer.Argument(..., help="a finished run folder"),
    verifiers: Optional[str] = typer.Option(None, "--verifiers", help="comma list name[:weight] (default: the run's)"),
    aggregator: Optional[str] = typer.Option(None, "--aggregator", help="default: the run's"),
    param: list[str] = typer.Option([], "--param", help="aggregator parameter KEY=VALUE, repeatable"),
    selection: Optional[str] = typer.Option(None, "--selection", help="use the spec of this stored selection_id"),
    record: bool = typer.Option(True, "--record/--no-record",
                                help="also store each budget's selection + metrics in the run (for `avits sql RUN -c bon_at_k`)"),
    break_lock: bool = BREAK_LOCK,
) -> None:
    """BoN@k for k = 1..N from the stored candidates: held-out metrics against k and NFE (table + plot)."""
    _setup_logging(False)
    with _locked(run_path, break_lock):
        from avits_core.analysis import bon_at_k, record_budget_selections
        from avits_core.report.analysis import write_budget_report

        try:
            ctx, data, spec = _analysis_spec(run_path, verifiers, aggregator, param, selection)
            rows = bon_at_k(data, spec)
            if record:
                record_budget_selections(ctx, spec, sorted({r["k"] for r in rows}))
        except AvitsError as exc:
            _fail(str(exc))
        w = write_budget_report(ctx.store.path, spec, rows)
        _print_table(w.table, title=w.title)
        typer.echo(f"written: {', '.join(map(str, w.paths))}")


@app.command()
def ablate(
    run_path: Path = typer.Argument(..., help="a finished run folder"),
    aggregators: Optional[str] = typer.Option(None, "--aggregators", help="comma list (default: every aggregator that needs no prior stats)"),
    verifiers: Optional[str] = typer.Option(None, "--verifiers", help="comma list of verifiers to take subsets of (default: the run's guided verifiers)"),
    break_lock: bool = BREAK_LOCK,
) -> None:
    """Every non-empty subset of the run's verifiers x every aggregator -> held-out metrics and gains."""
    _setup_logging(False)
    with _locked(run_path, break_lock):
        from avits_core import runner
        from avits_core.analysis import DEFAULT_AGGREGATORS, ablate as run_ablate, load_run_data
        from avits_core.report.analysis import write_ablation_report
        from avits_core.registry import VERIFIERS

        try:
            ctx = runner.open_run(run_path)
            aggs = [a.strip() for a in aggregators.split(",") if a.strip()] if aggregators else list(DEFAULT_AGGREGATORS)
            verif = [v.strip() for v in verifiers.split(",") if v.strip()] if verifiers else [v.name for v in ctx.cfg.verifiers]
            for v in verif:
                VERIFIERS.get_class(v)
            data = load_run_data(ctx)
            rows = run_ablate(data, verif, aggs)
        except AvitsError as exc:
            _fail(str(exc))
        w = write_ablation_report(ctx.store.path, data, verif, rows)
        _print_table(w.table, title=w.title)
        typer.echo(f"written: {w.paths[0]} ({len(rows)} rows), {w.paths[1]}")


@app.command()
def diagnose(
    run_path: Path = typer.Argument(..., help="a finished run folder"),
    verifiers: Optional[str] = typer.Option(None, "--verifiers", help="comma list name[:weight] (default: the run's)"),
    aggregator: Optional[str] = typer.Option(None, "--aggregator", help="default: the run's"),
    param: list[str] = typer.Option([], "--param", help="aggregator parameter KEY=VALUE, repeatable"),
    selection: Optional[str] = typer.Option(None, "--selection", help="diagnose this stored selection_id"),
    all_: bool = typer.Option(False, "--all", help="one summary row per stored selection"),
    break_lock: bool = BREAK_LOCK,
) -> None:
    """Hacking indicator (guided vs held-out gain), Spearman correlations, Pareto-front membership."""
    _setup_logging(False)
    with _locked(run_path, break_lock):
        from avits_core.analysis import diagnostics, diagnostics_table, stored_specs
        from avits_core.report.analysis import write_diagnostics, write_diagnostics_table

        try:
            ctx, data, spec = _analysis_spec(run_path, verifiers, aggregator, param, selection)
            if all_:
                specs = stored_specs(ctx)
                if not specs:
                    raise AvitsError(f"run {ctx.run_id} has no stored selections")
                table = diagnostics_table(data, specs)
            else:
                d = diagnostics(data, spec)
        except AvitsError as exc:
            _fail(str(exc))
        if all_:
            w = write_diagnostics_table(ctx.store.path, table)
            _print_table(w.table, title=w.title)
            typer.echo(f"written: {', '.join(map(str, w.paths))}")
            return
        _print_table([{k: g[k] for k in ("metric", "guided", "oracle", "baseline", "selected", "change", "norm_gain")} for g in d["gains"]],
                     title=f"gains of selection {d['selection_id']}")
        fmt = lambda x: "–" if x is None else f"{x:+.3f}"  # noqa: E731
        typer.echo(f"normalised gain: guided {fmt(d['guided_gain'])}, held-out {fmt(d['held_out_gain'])}, "
                   f"hacking gap {fmt(d['hacking_gap'])}")
        on, size = d["selected_on_pareto_front"], d["mean_front_size"]
        typer.echo(f"selected candidates on the Pareto front of the guided verifiers: "
                   f"{'–' if on is None else f'{on:.0%}'} (mean front size {'–' if size is None else f'{size:.2f}'})")
        _print_table(d["correlations"], title="Spearman correlations")
        typer.echo(f"written: {write_diagnostics(ctx.store.path, d)}")


@app.command()
def lineage(run_path: Path = typer.Argument(..., help="a run folder"), prompt_id: str = typer.Argument(...)) -> None:
    """Print a prompt's family tree (EvoSearch: generations, parents, steps, NFE, aggregates)."""
    from avits_core import runner
    from avits_core.runner.lineage import lineage_tree

    try:
        ctx = runner.open_run(run_path)
        if prompt_id not in ctx.prompt_by_id:
            raise AvitsError(f"no prompt {prompt_id!r} in run {ctx.run_id}; prompts: {', '.join(list(ctx.prompt_by_id)[:10])}...")
        typer.echo(lineage_tree(ctx, prompt_id))
    except AvitsError as exc:
        _fail(str(exc))


@app.command()
def doctor(
    target: Optional[Path] = typer.Argument(None, help="a run config, or a run folder (optional)"),
    quarantine: bool = typer.Option(False, "--quarantine", help="run folder: move corrupt Parquet parts to <run>/quarantine/"),
) -> None:
    """Check the machine; a config's models, weights, device and memory; or a run folder's parts and lock."""
    from avits_core.doctor import run_doctor

    lines, ok = run_doctor(target, quarantine=quarantine)
    for line in lines:
        typer.echo(line)
    if not ok:
        raise typer.Exit(1)


server_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="A long-lived local Prefect server (127.0.0.1) that every avits command reuses.")
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start(port: int = typer.Option(4280, "--port", help="port on 127.0.0.1")) -> None:
    """Start the server in the background (state in $PREFECT_HOME/avits-server.json)."""
    from avits import server

    try:
        st = server.server_start(port=port)
    except server.ServerError as exc:
        _fail(str(exc))
    typer.echo(f"avits server: pid {st['pid']}, {st['api_url']} (log {st['log']})")
    typer.echo(f"avits commands reuse it; for plain prefect commands: export PREFECT_API_URL={st['api_url']}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the server started by `avits server start`."""
    from avits import server

    st = server.server_stop()
    typer.echo("no avits server was started" if st is None else f"stopped avits server pid {st['pid']} ({st['api_url']})")


@server_app.command("status")
def server_status() -> None:
    """Whether the avits server runs and answers; exit 1 when it does not."""
    from avits import server

    st = server.server_status()
    if st is None:
        typer.echo(f"no avits server (state file {server.state_file()} absent)")
        raise typer.Exit(1)
    state = "running" if st["healthy"] else ("not answering" if st["alive"] else "dead (stale state file)")
    typer.echo(f"avits server pid {st['pid']} at {st['api_url']}: {state}")
    if not st["healthy"]:
        raise typer.Exit(1)


from avits.evaluate_cmd import evaluate as _evaluate_cmd  # noqa: E402  (the command lives in its own module)
app.command("evaluate")(_evaluate_cmd)


def main() -> None:
    from avits.server import configure_env

    configure_env()  # analytics off, a generous server start-up timeout (unless the user set one)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
