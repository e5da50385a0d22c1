"""The ``avits`` command line (typer).

Every user error (bad config, unknown name, missing file, unwritable output) prints one clear
message and exits with code 2, before anything is generated or written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from avits_core.errors import AvitsError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Inference-time scaling for joint audio-video generation.")
log = logging.getLogger("avits")


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
        force=True,
    )
    logging.getLogger("avits_core").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("avits").setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore", "uvicorn", "uvicorn.access", "alembic", "docket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        typer.echo("(no rows)")
        return
    table = Table(title=title)
    cols = list(rows[0].keys())
    for c in cols:
        table.add_column(str(c))
    for r in rows:
        table.add_row(*[("–" if r[c] is None else (f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]))) for c in cols])
    Console().print(table)


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

        self.bars = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             transient=False)
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


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML run config"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set search.n=4"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="name of the run folder (default: from the config hash)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="only warnings and the results"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also Prefect's task-level logs"),
) -> None:
    """Run one ITS config through the Prefect ``its`` flow (resumes the run if it exists)."""
    _setup_logging(not quiet)
    # Prefect reads its logging level when first imported (below): keep its per-task lines out of
    # the way of the progress bars unless asked for.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    from avits_core import runner
    from avits_core.config import load_config

    overrides = list(set_) + ([f"run_id={run_id}"] if run_id else [])
    try:
        cfg = load_config(config, overrides)
        runner.validate_config(cfg)  # fail fast, before Prefect starts
        for spec in cfg.verifiers:
            runner.get_verifier(spec.name, spec.params).check_ready()
        for name, params in cfg.evaluation.specs():
            runner.get_verifier(name, params).check_ready()
        runner._check_writable(Path(cfg.output_root).expanduser())
    except AvitsError as exc:
        _fail(str(exc))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.its import its

    try:
        with _progress_bars(enabled=not quiet):
            out = its(config_path=str(config), overrides=overrides)
    except AvitsError as exc:
        _fail(str(exc))
    _print_table(_results_rows(out["results"]), title=f"run {out['run_id']} (baseline = first candidate per prompt)")
    typer.echo(f"run folder: {out['run_path']}")
    typer.echo(f"report:     {out['report']}")


@app.command()
def benchmark(
    benchmark_file: Path = typer.Argument(Path("data/configs/benchmark.yaml"), help="benchmark YAML (list of configs)"),
    set_: list[str] = typer.Option([], "--set", help="override applied to every config"),
) -> None:
    """Run every config of a benchmark file (the its-benchmark flow) and print the comparison table."""
    _setup_logging(False)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from avits_core.benchmark import load_benchmark
    from avits_core.config import load_config

    try:
        bench = load_benchmark(benchmark_file)
        for it in bench["configs"]:
            load_config(it["path"], it["set"] + list(set_))
    except AvitsError as exc:
        _fail(str(exc))
    from flows.benchmark import benchmark as benchmark_flow

    try:
        out = benchmark_flow(str(benchmark_file), overrides=list(set_))
    except AvitsError as exc:
        _fail(str(exc))
    typer.echo(Path(out["paths"]["markdown"]).read_text())
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
def report(run_path: Path = typer.Argument(..., help="a run folder"), selection_id: Optional[str] = typer.Option(None, "--selection")) -> None:
    """(Re)write the run's report (Markdown, PNG plots, HTML with clips)."""
    _setup_logging(False)
    from avits_core import runner
    from avits_core.report import write_report

    try:
        ctx = runner.open_run(run_path)
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
) -> None:
    """Re-rank a finished run: no generator; scores only missing (candidate, verifier) pairs."""
    _setup_logging(False)
    from avits_core.rerank import prepare_rerank

    try:
        params = _aggregator_params(param)
        prepare_rerank(str(run_path), verifiers, aggregator, params, budget)  # validate before Prefect starts
    except AvitsError as exc:
        _fail(str(exc))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.rerank import rerank as rerank_flow

    try:
        out = rerank_flow(str(run_path), verifiers=verifiers, aggregator=aggregator, params=params, budget=budget)
    except AvitsError as exc:
        _fail(str(exc))
    for name, counts in out["scored"].items():
        typer.echo(f"{name}: scored {counts['scored']}, errors {counts['errors']}, already stored {counts['cached']}")
    _print_table(_results_rows(out["results"]), title=f"selection {out['selection_id']}")
    typer.echo(f"report: {out['report']}")


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
) -> None:
    """BoN@k for k = 1..N from the stored candidates: held-out metrics against k and NFE (table + plot)."""
    _setup_logging(False)
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
) -> None:
    """Every non-empty subset of the run's verifiers x every aggregator -> held-out metrics and gains."""
    _setup_logging(False)
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
) -> None:
    """Hacking indicator (guided vs held-out gain), Spearman correlations, Pareto-front membership."""
    _setup_logging(False)
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
    from avits_core.evo_runner import lineage_tree

    try:
        ctx = runner.open_run(run_path)
        if prompt_id not in ctx.prompt_by_id:
            raise AvitsError(f"no prompt {prompt_id!r} in run {ctx.run_id}; prompts: {', '.join(list(ctx.prompt_by_id)[:10])}...")
        typer.echo(lineage_tree(ctx, prompt_id))
    except AvitsError as exc:
        _fail(str(exc))


@app.command()
def doctor(config: Optional[Path] = typer.Argument(None, help="a run config to check (optional)")) -> None:
    """Check model paths, weight files, device and memory; say what is missing and how to get it."""
    from avits_core.doctor import run_doctor

    lines, ok = run_doctor(config)
    for line in lines:
        typer.echo(line)
    if not ok:
        raise typer.Exit(1)


from avits.evaluate_cmd import evaluate as _evaluate_cmd  # noqa: E402  (the command lives in its own module)
app.command("evaluate")(_evaluate_cmd)


def main() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
