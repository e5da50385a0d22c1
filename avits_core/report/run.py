"""Run report: Markdown + SVG plots + an HTML page with playable clips, in ``<run>/report/``.

Plots (SVG drawn by avits_core.report.svg; no matplotlib in a run):
  rewards.svg   per-verifier distribution of every candidate's reward, with the selected ones marked
  arw_sigma.svg ARW sigma per verifier over scoring events (only for ARW selections)
  metrics.svg   baseline (first candidate of each prompt) vs selected, per metric
The HTML page ``index.html`` embeds the baseline and selected mp4 of the first few prompts.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avits_core.report.format import atomic_write_bytes, atomic_write_text, fmt_value, markdown_table

log = logging.getLogger(__name__)

RESULT_HEADERS = ("metric", "held out", "better", "baseline", "selected", "change")


@dataclass
class Report:
    results: list[dict[str, Any]]
    markdown: str
    markdown_path: Path
    html_path: Path
    plots: list[Path]


def _result_cells(r: dict[str, Any]) -> dict[str, Any]:
    """One results row as the cells of the results table (Markdown and HTML)."""
    return {"metric": r["metric"], "held out": bool(r.get("held_out")),
            "better": "higher" if r.get("higher_is_better", True) else "lower",
            "baseline": r.get("baseline"), "selected": r.get("selected"), "change": r.get("change")}


def results_markdown(results: list[dict[str, Any]]) -> str:
    """The run's results table: metric, held out, better, baseline, selected, change."""
    return markdown_table([_result_cells(r) for r in results], RESULT_HEADERS)


PLOT_STYLE = 4  # bump when the drawing code changes, so cached plots are drawn again
PLOT_SIDECAR = "plots.json"
#: the plot files of a report, in the order the HTML page shows them
PLOTS = ("rewards.svg", "arw_sigma.svg", "metrics.svg")
#: the matplotlib PNGs of reports written before 2026-11 (removed when a report is written again)
LEGACY_PNGS = ("rewards.png", "arw_sigma.png", "metrics.png")


def _plot_data(ctx, selection_id: str, results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The numbers behind each plot, as plain JSON-able values: {file name: data}. A plot with no data is left out."""
    from avits_core.store.duck import connect

    con = connect(ctx.store.path)
    rew = con.sql(
        "SELECT candidate_id, verifier, value FROM rewards WHERE status='ok' ORDER BY verifier, candidate_id"
    ).to_arrow_table().to_pylist()
    # one series per ARW state: a per-shard selection (arw_shards K > 1) fits K states, each its own
    # sigma over the events of its prompts (interleaved in event_seq: one line through all would zigzag)
    trace = con.sql(
        "SELECT event_seq, verifier, coalesce(arw_shard, 0) AS arw_shard, sigma FROM arw_trace "
        "WHERE selection_id = ? ORDER BY verifier, arw_shard, event_seq",
        params=[selection_id],
    ).to_arrow_table().to_pylist()
    picked = {
        r["candidate_id"]
        for r in con.sql("SELECT candidate_id FROM selections WHERE selection_id = ?", params=[selection_id])
        .to_arrow_table()
        .to_pylist()
    }
    con.close()
    data: dict[str, dict[str, Any]] = {}
    verifiers = sorted({r["verifier"] for r in rew})
    if verifiers:
        data["rewards.svg"] = {
            v: {"all": [float(r["value"]) for r in rew if r["verifier"] == v],
                "selected": [float(r["value"]) for r in rew if r["verifier"] == v and r["candidate_id"] in picked]}
            for v in verifiers
        }
    if trace:
        series: dict[tuple[str, int], dict[str, list]] = {}  # rows come ordered by verifier, state, event
        for r in trace:
            s = series.setdefault((r["verifier"], r["arw_shard"]), {"x": [], "y": []})
            s["x"].append(int(r["event_seq"]))
            s["y"].append(float(r["sigma"]))
        several = len({k for _, k in series}) > 1
        data["arw_sigma.svg"] = {(f"{v} (ARW shard {k})" if several else v): s for (v, k), s in series.items()}
    rs = [r for r in results if r.get("baseline") is not None and r.get("selected") is not None]
    if rs:
        data["metrics.svg"] = {"bars": [
            {"title": r["metric"] + ("" if r.get("higher_is_better", True) else " (↓)"),
             "baseline": float(r["baseline"]), "selected": float(r["selected"])} for r in rs]}
    return data


def _plot_hash(name: str, payload: Any) -> str:
    import hashlib
    import json

    blob = json.dumps({"style": PLOT_STYLE, "name": name, "data": payload},
                      sort_keys=True, allow_nan=True, separators=(",", ":"))
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def _draw(name: str, payload: dict[str, Any]) -> str:
    """One plot as SVG text (avits_core.report.svg: no matplotlib)."""
    from avits_core.report import svg

    if name == "rewards.svg":
        return svg.histograms(payload)
    if name == "arw_sigma.svg":
        return svg.lines(payload, xlabel="scoring event (event_seq)", ylabel="ARW sigma")
    if name == "metrics.svg":
        return svg.bar_pairs(payload["bars"])
    raise ValueError(f"unknown plot {name!r}")  # pragma: no cover - names come from _plot_data


def _plots(ctx, selection_id: str, outdir: Path, results: list[dict[str, Any]]) -> list[Path]:
    """Write rewards/arw_sigma/metrics SVGs. A plot whose data hash (kept in ``plots.json`` beside it) is
    unchanged is not drawn again."""
    import json

    data = _plot_data(ctx, selection_id, results)
    side = outdir / PLOT_SIDECAR
    try:
        old = json.loads(side.read_text()) if side.exists() else {}
    except (OSError, ValueError):
        old = {}
    new: dict[str, str] = {}
    paths = []
    for name, payload in data.items():
        h = _plot_hash(name, payload)
        path = outdir / name
        if old.get(name) != h or not path.exists():
            paths.append(atomic_write_text(path, _draw(name, payload)))
            log.debug("plot %s drawn", path)
        else:
            paths.append(path)
        new[name] = h
    for name in (*PLOTS, *LEGACY_PNGS):  # no stale plot lingers
        if name not in data and (outdir / name).exists():
            (outdir / name).unlink()
    if new != old:
        atomic_write_text(side, json.dumps(new, indent=1, sort_keys=True))
    return paths


def _html(ctx, selection_id: str, outdir: Path, results: list[dict[str, Any]], plots: list[Path],
          n_prompts: int = 6) -> Path:
    """``index.html``: the results table, the ``plots`` written by :func:`_plots`, and the baseline and
    selected clips of the first ``n_prompts`` prompts."""
    from avits_core.store.duck import connect

    con = connect(ctx.store.path)
    rows = con.sql(
        """
        WITH base AS (SELECT prompt_id, min(candidate_id) AS baseline FROM candidates GROUP BY prompt_id)
        SELECT s.prompt_id, c.prompt_text, b.baseline, s.candidate_id AS selected,
               cb.media_path AS baseline_media, cs.media_path AS selected_media, c.prompt_index
        FROM selections s JOIN base b USING (prompt_id)
        JOIN candidates cb ON cb.candidate_id = b.baseline
        LEFT JOIN candidates cs ON cs.candidate_id = s.candidate_id
        JOIN (SELECT DISTINCT prompt_id, prompt_text, prompt_index FROM candidates) c USING (prompt_id)
        WHERE s.selection_id = ? ORDER BY c.prompt_index LIMIT ?
        """,
        params=[selection_id, n_prompts],
    ).to_arrow_table().to_pylist()
    con.close()
    table_rows = []
    for r in results:
        cells = [html.escape(fmt_value(v)) for v in _result_cells(r).values()]
        table_rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>avits run {html.escape(ctx.run_id)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
        "img{max-width:100%}video{width:192px;height:192px;image-rendering:pixelated;background:#000}.pair{display:inline-block;margin:0 1em 1em 0}</style>",
        "</head><body>",
        f"<h1>avits run <code>{html.escape(ctx.run_id)}</code></h1>",
        f"<p>selection <code>{html.escape(selection_id)}</code></p>",
        "<table><tr>" + "".join(f"<th>{h}</th>" for h in RESULT_HEADERS) + "</tr>",
        *table_rows,
        "</table>",
    ]
    written = {p.name for p in plots}
    for plot in PLOTS:
        if plot in written:
            parts.append(f"<p><img src='{plot}' alt='{plot}'></p>")
    parts.append("<h2>Baseline vs selected</h2>")
    posters = outdir / "posters"
    for r in rows:
        parts.append(f"<h3>{html.escape(r['prompt_id'])}: {html.escape(r['prompt_text'])}</h3>")
        for label, media, cid in (("baseline", r["baseline_media"], r["baseline"]), ("selected", r["selected_media"], r["selected"])):
            if media:
                poster = _poster(ctx.store.path / media, posters / f"{cid}.png")
                pattr = f" poster='posters/{html.escape(poster.name)}'" if poster else ""
                parts.append(
                    f"<div class='pair'><div>{label}: <code>{html.escape(cid)}</code></div>"
                    f"<video controls loop muted preload='metadata'{pattr} src='{html.escape(_rel(ctx.store.path / media, outdir))}'></video></div>"
                )
    parts.append("</body></html>")
    return atomic_write_text(outdir / "index.html", "\n".join(parts))


def _rel(target: Path, start: Path) -> str:
    import os

    if not isinstance(target, Path):  # object-store paths (UPath): relative keys
        import posixpath

        return posixpath.relpath(str(target), str(start))
    return os.path.relpath(target, start).replace(os.sep, "/")


def _poster(mp4: Path, out: Path) -> Path | None:
    """The clip's middle frame as a PNG (shown before playback, and where H.264 cannot play). The clip
    comes through the process-wide clip cache: right after a run's scoring it is usually decoded already."""
    if out.exists():
        return out
    try:
        import io

        from PIL import Image

        from avits_core.clipcache import read_clip

        clip = read_clip(mp4)
        frame = clip.video[clip.num_frames // 2]
        buf = io.BytesIO()
        Image.fromarray(frame).resize((frame.shape[1] * 3, frame.shape[0] * 3), Image.NEAREST).save(buf, format="PNG")
        return atomic_write_bytes(out, buf.getvalue())
    except Exception as exc:  # a poster is a nicety; the report must not fail for it
        log.warning("no poster for %s: %s", mp4, exc)
        return None


def report_dir(ctx, selection_id: str) -> Path:
    """``<run>/report/`` for the run's own selection; ``<run>/report/selections/<id>/`` for a re-ranking,
    so a rerank never overwrites the run's report."""
    from avits_core import runner

    own = ctx.store.read_run_json().get("selection_id") or runner.default_spec(ctx.cfg).selection_id
    base = ctx.store.path / "report"
    return base if selection_id == own else base / "selections" / selection_id


def write_report(ctx, selection_id: str) -> Report:
    from avits_core import runner

    outdir = report_dir(ctx, selection_id)
    if not ctx.store.remote:
        outdir.mkdir(parents=True, exist_ok=True)
    results = runner.results_table(ctx, selection_id)
    res_md = results_markdown(results)
    plots = _plots(ctx, selection_id, outdir, results)
    info = ctx.store.read_run_json()
    timings = info.get("timings") or {}
    md = [
        f"# avits run `{ctx.run_id}`",
        "",
        f"- generator: `{ctx.cfg.generator.name}`, search: `{ctx.cfg.search.method}` (n={ctx.cfg.search.n}), "
        f"prompts: {len(ctx.prompts)}",
        f"- verifiers: {', '.join(f'`{v.name}`' for v in ctx.cfg.verifiers)}; aggregator: `{ctx.cfg.aggregator.name}`",
        f"- selection: `{selection_id}`; baseline = the first candidate of each prompt",
        "",
        "## Results (mean over prompts)",
        "",
        res_md,
        "",
    ]
    if timings:
        md += ["## Timings (s)", "", "| stage | seconds |", "|---|---|"]
        md += [f"| {k} | {v:.2f} |" for k, v in sorted(timings.items())]
        md.append("")
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + ["", "Clips: [index.html](index.html)", ""]
    from avits_core.report.categories import write_category_report

    if write_category_report(ctx, selection_id) is not None:
        md += ["Per-category results (JavisBench `cat*_ind` columns): [categories.md](categories.md)", ""]
    markdown = "\n".join(md)
    mpath = atomic_write_text(outdir / "report.md", markdown)
    hpath = _html(ctx, selection_id, outdir, results, plots)
    log.info("report written to %s", mpath)
    return Report(results=results, markdown=markdown, markdown_path=mpath, html_path=hpath, plots=plots)

