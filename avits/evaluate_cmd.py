"""``avits evaluate``: metrics for any folder of generated mp4 files, without generating.

Registered in :mod:`avits.cli` as ``app.command("evaluate")(evaluate)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from avits_core.errors import AvitsError


def evaluate(
    folder: Path = typer.Argument(..., help="folder of mp4 files: <prompt_id>.mp4, or sample_0000.mp4... in CSV row order"),
    prompts: Path = typer.Option(..., "--prompts", help="prompt CSV (JavisBench format works as is)"),
    reference: Optional[Path] = typer.Option(None, "--reference", help="folder of real mp4 clips for fvd, kvd, fad"),
    protocol: str = typer.Option("avits", "--protocol", help="avits (ours) | javisbench (reproduces JavisBench's evaluator)"),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="comma list (default av_align,temporal_flickering), e.g. clip,clap,ib_av,fvd"),
    metric_param: list[str] = typer.Option([], "--metric-param", help="METRIC.KEY=VALUE, repeatable, e.g. clip.model_path=models/clip"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default ./eval-<folder>-<protocol>)"),
    naming: str = typer.Option("auto", "--naming", help="auto | id | javisbench"),
    allow_extra: bool = typer.Option(False, "--allow-extra", help="ignore (and list) mp4 files that match no prompt"),
    batch_size: int = typer.Option(8, "--batch-size", help="clips per scoring task"),
    local: bool = typer.Option(False, "--local", help="run in this process, without Prefect"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Evaluate a folder of mp4 files against a prompt CSV; writes metrics, summary.json (the JavisBench
    evaluator's layout), categories.json and evaluation.json (errors by prompt) to --out."""
    from avits.common import _fail, _print_table, _setup_logging
    from avits_core import evaluate_folder as ef

    _setup_logging(verbose)
    try:
        spec = ef.EvalSpec(folder=folder, prompts=prompts, out=out, protocol=protocol,
                           metrics=ef.parse_metrics(metrics, metric_param), reference=reference, naming=naming,
                           allow_extra=allow_extra, batch_size=batch_size)
        plan = ef.prepare(spec)  # every cheap check before any work
    except AvitsError as exc:
        _fail(str(exc))
    try:
        if local:
            res = ef.evaluate_folder(spec)
            res["out"] = str(plan.out)
        else:
            os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
            os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
            from flows.evaluate import evaluate as evaluate_flow

            res = evaluate_flow(ef.spec_to_dict(spec))
    except AvitsError as exc:
        _fail(str(exc))
    info = res["evaluation"]
    rows = []
    for name, meta in info["metrics"].items():
        s = res["summary"].get(meta["summary_key"])
        rows.append({"metric": name, "key": meta["summary_key"],
                     "overall": s.get("overall") if isinstance(s, dict) else s,
                     "errors": info["n_errors"].get(name, 0), "version": meta["version"]})
    for name in info["set_metrics"]:
        rows.append({"metric": name, "key": name, "overall": res["summary"].get(name), "errors": 0, "version": protocol})
    _print_table(rows, title=f"{info['n_prompts']} prompts, protocol {protocol}, {info['n_missing']} missing")
    if info["extra_files"]:
        typer.echo(f"ignored {len(info['extra_files'])} mp4 file(s) matching no prompt (see evaluation.json)")
    typer.echo(f"results: {res['out']}/summary.json (errors by prompt: {res['out']}/evaluation.json)")
