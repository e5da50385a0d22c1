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
    logging.getLogger("avits_core").setLevel(logging.INFO)
    logging.getLogger("avits").setLevel(logging.INFO)


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


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML run config"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set search.n=4"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="name of the run folder (default: from the config hash)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Run one ITS config through the Prefect ``its`` flow (resumes the run if it exists)."""
    _setup_logging(not quiet)
    from avits_core import runner
    from avits_core.config import load_config

    overrides = list(set_) + ([f"run_id={run_id}"] if run_id else [])
    try:
        cfg = load_config(config, overrides)
        runner.validate_config(cfg)  # fail fast, before Prefect starts
        for spec in cfg.verifiers:
            runner.get_verifier(spec.name, spec.params).check_ready()
        runner._check_writable(Path(cfg.output_root).expanduser())
    except AvitsError as exc:
        _fail(str(exc))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.its import its

    try:
        out = its(config_path=str(config), overrides=overrides)
    except AvitsError as exc:
        _fail(str(exc))
    _print_table(_results_rows(out["results"]), title=f"run {out['run_id']} (baseline = first candidate per prompt)")
    typer.echo(f"run folder: {out['run_path']}")
    typer.echo(f"report:     {out['report']}")


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
            t = con.execute(q).to_arrow_table()
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


def main() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
