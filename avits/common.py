"""Helpers every ``avits`` command module shares (the CLI itself in :mod:`avits.cli`, ``avits evaluate`` in
:mod:`avits.evaluate_cmd`): logging setup, the one-line refusal, the results table. Imports nothing of
the project, so both can import it without importing each other."""

from __future__ import annotations

import logging
from typing import Any

import typer


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
    """A rich table; above 50 rows plain aligned columns (rich lays out every cell: ~0.4 s CPU for 200 rows)."""
    if not rows:
        typer.echo("(no rows)")
        return
    cols = list(rows[0].keys())
    cells = [[("–" if r[c] is None else (f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]))) for c in cols]
             for r in rows]
    if len(rows) > 50:
        widths = [max(len(str(c)), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = [title] if title else []
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(cols, widths)).rstrip(),
                  "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
        typer.echo("\n".join(lines))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in cols:
        table.add_column(str(c))
    for row in cells:
        table.add_row(*row)
    Console().print(table)
