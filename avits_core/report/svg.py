"""The plots of the run report, the budget analysis and the benchmark comparison as SVG text, drawn
without matplotlib (issue 17: importing and drawing three matplotlib figures was ~1.7 CPU-s of every
run; these take a few milliseconds).

Five kinds, each a function from plain numbers to one ``<svg>`` document:

  :func:`histograms`  one panel per name: a histogram of ``all`` values (20 equal bins over their range)
                      with the ``selected`` values' histogram over the same bins on top
  :func:`lines`       one line with dots per name, y on a log scale when every y is > 0
  :func:`bar_pairs`   one panel per metric: two bars, baseline and selected
  :func:`line_grid`   a grid of panels (rows x columns), each one line with dots on a linear y
                      (the budget analysis: a metric against k and against NFE per prompt)
  :func:`bar_groups`  one panel per metric: one labelled bar per entry (the benchmark comparison)

Non-finite values are left out of a plot (they cannot be placed on an axis). Tick positions follow the
1-2-2.5-5 x 10^k rule (decades, with 2 and 5 between them when the span is short, on a log axis).
"""

from __future__ import annotations

import html
import math
from typing import Iterable, Sequence

import numpy as np

ALL_COLOR, SELECTED_COLOR, BASE_COLOR = "#9bb", "#c53", "#999"
LINE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
FONT = "font-family='sans-serif'"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Ticks at multiples of 1, 2, 2.5 or 5 x 10^k covering [lo, hi] with at most about ``n`` steps."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if (hi - lo) / (m * mag) <= n)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Decades within [lo, hi] (lo > 0); 1, 2 and 5 x 10^k when fewer than two decades fall inside."""
    ticks = [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]

    def within(ts):
        return [t for t in ts if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]

    inside = within(ticks)
    if len(inside) >= 2:
        return inside
    return within(sorted({m * t for t in ticks for m in (1, 2, 5)})) or [lo, hi]


def _label(v: float) -> str:
    return f"{v:.4g}"


def _text(x: float, y: float, s: str, size: int = 9, anchor: str = "middle", extra: str = "") -> str:
    return (f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' {FONT}{extra}>"
            f"{html.escape(s)}</text>")


class _Axes:
    """A plot area at (x, y, w, h) in pixels, data limits, linear or log y; draws its frame and ticks."""

    def __init__(self, x: float, y: float, w: float, h: float, xlim: tuple[float, float],
                 ylim: tuple[float, float], log_y: bool = False):
        self.x, self.y, self.w, self.h = x, y, w, h
        self.log_y = log_y
        self.x0, self.x1 = xlim if xlim[1] > xlim[0] else (xlim[0] - 0.5, xlim[0] + 0.5)
        y0, y1 = ylim
        if log_y:
            y0, y1 = math.log10(y0), math.log10(y1)
        self.y0, self.y1 = (y0, y1) if y1 > y0 else (y0 - 0.5, y0 + 0.5)

    def px(self, v: float) -> float:
        return self.x + (v - self.x0) / (self.x1 - self.x0) * self.w

    def py(self, v: float) -> float:
        if self.log_y:
            v = math.log10(v)
        return self.y + self.h - (v - self.y0) / (self.y1 - self.y0) * self.h

    def frame(self, xticks: Iterable[float] | None = None, title: str = "", xlabel: str = "", ylabel: str = "",
              xtick_labels: Sequence[str] | None = None) -> list[str]:
        out = [f"<rect x='{self.x:.1f}' y='{self.y:.1f}' width='{self.w:.1f}' height='{self.h:.1f}' "
               "fill='none' stroke='#333' stroke-width='0.8'/>"]
        if xticks is None:
            xticks = nice_ticks(self.x0, self.x1)
        xticks = list(xticks)
        labels = list(xtick_labels) if xtick_labels is not None else [_label(t) for t in xticks]
        base = self.y + self.h
        for t, s in zip(xticks, labels):
            px = self.px(t)
            out.append(f"<line x1='{px:.1f}' y1='{base:.1f}' x2='{px:.1f}' y2='{base + 3:.1f}' stroke='#333'/>")
            out.append(_text(px, base + 12, s, 8))
        if self.log_y:
            yt = log_ticks(10 ** self.y0, 10 ** self.y1)
        else:
            yt = nice_ticks(self.y0, self.y1)
        for t in yt:
            py = self.py(t)
            out.append(f"<line x1='{self.x - 3:.1f}' y1='{py:.1f}' x2='{self.x:.1f}' y2='{py:.1f}' stroke='#333'/>")
            out.append(_text(self.x - 5, py + 3, _label(t), 8, "end"))
        if title:
            out.append(_text(self.x + self.w / 2, self.y - 6, title, 10))
        if xlabel:
            out.append(_text(self.x + self.w / 2, base + 26, xlabel, 9))
        if ylabel:
            cx, cy = self.x - 42, self.y + self.h / 2
            out.append(_text(cx, cy, ylabel, 9, extra=f" transform='rotate(-90 {cx:.1f} {cy:.1f})'"))
        return out


def _legend(x: float, y: float, entries: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    for i, (name, color) in enumerate(entries):
        yy = y + 12 * i
        out.append(f"<rect x='{x:.1f}' y='{yy - 7:.1f}' width='10' height='8' fill='{color}'/>")
        out.append(_text(x + 14, yy, name, 8, "start"))
    return out


def _doc(width: float, height: float, body: list[str]) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
            f"viewBox='0 0 {width:.0f} {height:.0f}'>\n<rect width='100%' height='100%' fill='white'/>\n"
            + "\n".join(body) + "\n</svg>\n")


def _finite(values: Iterable[float]) -> np.ndarray:
    a = np.asarray(list(values), dtype=float)
    return a[np.isfinite(a)]


PANEL_W, PANEL_H, LEFT, TOP, BOTTOM, GAP = 200.0, 150.0, 48.0, 24.0, 34.0, 30.0


def histograms(panels: dict[str, dict[str, Sequence[float]]], bins: int = 20) -> str:
    """One panel per name: the counts of ``all`` in ``bins`` equal bins over their range, and of ``selected``
    over the same bins drawn on top (legend in the first panel)."""
    body: list[str] = []
    for i, (name, d) in enumerate(panels.items()):
        allv, sel = _finite(d.get("all", ())), _finite(d.get("selected", ()))
        edges = np.histogram_bin_edges(allv, bins=bins) if allv.size else np.linspace(0.0, 1.0, bins + 1)
        c_all = np.histogram(allv, bins=edges)[0]
        c_sel = np.histogram(np.clip(sel, edges[0], edges[-1]), bins=edges)[0] if sel.size else np.zeros(bins, int)
        ax = _Axes(LEFT + i * (PANEL_W + LEFT + GAP), TOP, PANEL_W, PANEL_H, (float(edges[0]), float(edges[-1])),
                   (0.0, float(max(1, c_all.max(initial=0))) * 1.05))
        for counts, color, opacity in ((c_all, ALL_COLOR, 1.0), (c_sel, SELECTED_COLOR, 0.8)):
            for lo, hi, c in zip(edges[:-1], edges[1:], counts):
                if c > 0:
                    x0, x1, yt = ax.px(lo), ax.px(hi), ax.py(float(c))
                    body.append(f"<rect x='{x0:.1f}' y='{yt:.1f}' width='{max(x1 - x0, 0.5):.1f}' "
                                f"height='{ax.y + ax.h - yt:.1f}' fill='{color}' fill-opacity='{opacity}'/>")
        body += ax.frame(title=name)
        if i == 0:
            body += _legend(ax.x + 6, ax.y + 12, [("all candidates", ALL_COLOR), ("selected", SELECTED_COLOR)])
    n = max(1, len(panels))
    return _doc(n * (PANEL_W + LEFT + GAP) - GAP + 10, TOP + PANEL_H + BOTTOM, body)


def lines(series: dict[str, dict[str, Sequence[float]]], xlabel: str, ylabel: str) -> str:
    """One line with dots per name (points with a non-finite x or y left out); y on a log scale when
    every plotted y is > 0, else linear."""
    pts = {}
    for name, d in series.items():
        xy = np.asarray([(x, y) for x, y in zip(d.get("x", ()), d.get("y", ()))], dtype=float).reshape(-1, 2)
        pts[name] = xy[np.isfinite(xy).all(axis=1)]
    every = np.concatenate(list(pts.values()) or [np.zeros((0, 2))])
    if every.size == 0:
        every = np.asarray([[0.0, 1.0]])
    log_y = bool((every[:, 1] > 0).all())
    ylo, yhi = float(every[:, 1].min()), float(every[:, 1].max())
    if log_y:
        ylo, yhi = ylo / 1.15, yhi * 1.15
    else:
        pad = 0.05 * (yhi - ylo) or 0.5
        ylo, yhi = ylo - pad, yhi + pad
    ax = _Axes(64.0, 14.0, 300.0, 190.0, (float(every[:, 0].min()), float(every[:, 0].max())), (ylo, yhi), log_y)
    body: list[str] = []
    names = list(pts)
    colors = [LINE_COLORS[k % len(LINE_COLORS)] for k in range(len(names))]
    for color, xy in zip(colors, pts.values()):
        pixels = [(ax.px(x), ax.py(y)) for x, y in xy]
        if len(pixels) > 1:
            coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in pixels)
            body.append(f"<polyline points='{coords}' fill='none' stroke='{color}' stroke-width='1.2'/>")
        body += [f"<circle cx='{px:.1f}' cy='{py:.1f}' r='1.6' fill='{color}'/>" for px, py in pixels]
    body += ax.frame(xlabel=xlabel, ylabel=ylabel)
    body += _legend(ax.x + ax.w + 10, ax.y + 12, list(zip(names, colors)))
    legend_w = 24 + 5.5 * max((len(n) for n in names), default=0)  # beside the plot, never over a line
    return _doc(ax.x + ax.w + 16 + legend_w, max(ax.y + ax.h + 40, ax.y + 12 * len(names) + 20), body)


def bar_pairs(bars: Sequence[dict]) -> str:
    """One panel per entry (``title``, ``baseline``, ``selected``): two bars that start at 0, so their
    lengths compare; a non-finite value draws no bar."""
    body: list[str] = []
    w = 110.0
    for i, b in enumerate(bars):
        vals = [float(b["baseline"]), float(b["selected"])]
        fin = [v for v in vals if math.isfinite(v)]
        lo, hi = min([0.0, *fin]), max([0.0, *fin])
        pad = 0.05 * (hi - lo) or 0.5
        ax = _Axes(LEFT + i * (w + LEFT + 12), TOP, w, PANEL_H, (-0.6, 1.6), (lo - (pad if lo < 0 else 0), hi + pad))
        zero = ax.py(0.0)
        for j, (v, color) in enumerate(zip(vals, (BASE_COLOR, SELECTED_COLOR))):
            if math.isfinite(v):
                top, bot = sorted((ax.py(v), zero))
                body.append(f"<rect x='{ax.px(j - 0.35):.1f}' y='{top:.1f}' width='{ax.px(0.35) - ax.px(-0.35):.1f}' "
                            f"height='{bot - top:.1f}' fill='{color}'/>")
        body += ax.frame(xticks=[0, 1], xtick_labels=["base", "sel"], title=str(b["title"]))
    n = max(1, len(bars))
    return _doc(n * (w + LEFT + 12) + 10, TOP + PANEL_H + BOTTOM, body)


def line_grid(panels: Sequence[Sequence[dict]], title: str = "") -> str:
    """A grid of panels, ``panels[row][col]`` each ``{"title", "x", "y", "xlabel", "color"}``: one line with
    dots per panel on a linear y (points with a non-finite x or y left out); ``title`` above the grid."""
    body: list[str] = []
    top = TOP + (18.0 if title else 0.0)
    n_rows, n_cols = len(panels), max((len(r) for r in panels), default=1)
    cell_w, cell_h = PANEL_W + LEFT + GAP, PANEL_H + BOTTOM + GAP
    for i, row in enumerate(panels):
        for j, p in enumerate(row):
            xy = np.asarray([(x, y) for x, y in zip(p.get("x", ()), p.get("y", ()))], dtype=float).reshape(-1, 2)
            xy = xy[np.isfinite(xy).all(axis=1)]
            xs, ys = (xy[:, 0], xy[:, 1]) if xy.size else (np.zeros(1), np.zeros(1))
            pad = 0.05 * float(ys.max() - ys.min()) or 0.5
            ax = _Axes(LEFT + j * cell_w, top + i * cell_h, PANEL_W, PANEL_H, (float(xs.min()), float(xs.max())),
                       (float(ys.min()) - pad, float(ys.max()) + pad))
            color = p.get("color", LINE_COLORS[0])
            pixels = [(ax.px(x), ax.py(y)) for x, y in xy]
            if len(pixels) > 1:
                coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in pixels)
                body.append(f"<polyline points='{coords}' fill='none' stroke='{color}' stroke-width='1.2'/>")
            body += [f"<circle cx='{px:.1f}' cy='{py:.1f}' r='2' fill='{color}'/>" for px, py in pixels]
            body += ax.frame(title=str(p.get("title", "")), xlabel=str(p.get("xlabel", "")))
    width = n_cols * cell_w - GAP + 10
    if title:
        body.append(_text(width / 2, 14, title, 10))
    return _doc(width, top + n_rows * cell_h - GAP, body)


def bar_groups(panels: Sequence[dict]) -> str:
    """One panel per entry ``{"title", "labels", "values", "colors"}``: one bar per label, from 0 (so their
    lengths compare), labels under the bars; a non-finite value draws no bar."""
    body: list[str] = []
    bottom = BOTTOM + 36.0  # room for the labels, slanted
    x = LEFT
    for p in panels:
        vals = [float(v) if v is not None else float("nan") for v in p["values"]]
        n = max(1, len(vals))
        w = max(80.0, 34.0 * n)
        fin = [v for v in vals if math.isfinite(v)]
        lo, hi = min([0.0, *fin]), max([0.0, *fin])
        pad = 0.05 * (hi - lo) or 0.5
        ax = _Axes(x, TOP, w, PANEL_H, (-0.6, n - 0.4), (lo - (pad if lo < 0 else 0), hi + pad))
        zero = ax.py(0.0)
        colors = list(p.get("colors") or [LINE_COLORS[k % len(LINE_COLORS)] for k in range(n)])
        for j, v in enumerate(vals):
            if math.isfinite(v):
                top_, bot = sorted((ax.py(v), zero))
                body.append(f"<rect x='{ax.px(j - 0.35):.1f}' y='{top_:.1f}' width='{ax.px(0.35) - ax.px(-0.35):.1f}' "
                            f"height='{bot - top_:.1f}' fill='{colors[j % len(colors)]}'/>")
        body += ax.frame(xticks=[], title=str(p["title"]))
        base = ax.y + ax.h
        for j, label in enumerate(p["labels"]):
            px = ax.px(j)
            body.append(_text(px, base + 10, str(label), 7, "end", extra=f" transform='rotate(-35 {px:.1f} {base + 10:.1f})'"))
        x += w + LEFT + 12
    return _doc(x, TOP + PANEL_H + bottom, body)
