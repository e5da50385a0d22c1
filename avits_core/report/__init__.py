"""Report output, in one package: every file a run, a re-ranking, an analysis or a benchmark writes
for people to read (Markdown, HTML, PNG) and the Parquet tables behind them.

Modules (each writes; the numbers come from elsewhere):
  format      one value formatter (``fmt_value``), one Markdown table writer (``markdown_table``),
              atomic writes (text, bytes, Parquet, figures)
  run         the run report ``<run>/report/``: report.md, rewards/arw_sigma/metrics PNGs, index.html
  categories  per-JavisBench-category results (computed in :mod:`avits_core.metrics.categories`)
  analysis    budget (BoN@k), ablation, diagnostics (computed in :mod:`avits_core.analysis`)
  benchmark   the cross-run comparison (rows from :mod:`avits_core.benchmark`)

Dependencies point one way: ``report`` imports the computing modules, never the reverse, so there is
no import cycle. Importing this package loads no plotting or table library; each writer imports
what it needs when called.
"""

from avits_core.report.format import (
    atomic_write_bytes,
    atomic_write_parquet,
    atomic_write_text,
    fmt_value,
    markdown_table,
    write_rows,
)
from avits_core.report.run import Report, report_dir, results_markdown, write_report

__all__ = [
    "Report", "atomic_write_bytes", "atomic_write_parquet", "atomic_write_text", "fmt_value", "markdown_table",
    "report_dir", "results_markdown", "write_report", "write_rows",
]
