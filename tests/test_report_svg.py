"""The report's SVG plots (avits_core.report.svg): well-formed SVG whose shapes carry the numbers given."""

from __future__ import annotations

import math
from xml.etree import ElementTree

import numpy as np
import pytest

from avits_core.report import svg

NS = "{http://www.w3.org/2000/svg}"


def _parse(text: str) -> ElementTree.Element:
    root = ElementTree.fromstring(text)
    assert root.tag == NS + "svg" and float(root.get("width")) > 0 and float(root.get("height")) > 0
    return root


def _rects(root, fill):
    return [r for r in root.iter(NS + "rect") if r.get("fill") == fill]


@pytest.mark.parametrize("lo,hi,want", [
    (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (-3.0, 7.0, [-2.0, 0.0, 2.0, 4.0, 6.0]),
    (0.013, 0.087, [0.02, 0.04, 0.06, 0.08]),
    (1.0, 1.0, [1.0]),
])
def test_nice_ticks(lo, hi, want):
    assert svg.nice_ticks(lo, hi) == pytest.approx(want)


@pytest.mark.parametrize("lo,hi,want", [
    (0.05, 20.0, [0.1, 1.0, 10.0]),
    (0.3, 0.9, [0.5]),
    (0.011, 0.3, [0.02, 0.05, 0.1, 0.2]),
])
def test_log_ticks(lo, hi, want):
    assert svg.log_ticks(lo, hi) == pytest.approx(want)


def test_histogram_bars_are_the_counts():
    rng = np.random.default_rng(0)
    allv = rng.normal(size=200).tolist()
    sel = allv[:7]
    root = _parse(svg.histograms({"v": {"all": allv + [float("nan")], "selected": sel}}))
    counts = np.histogram(allv, bins=np.histogram_bin_edges(allv, bins=20))[0]
    bars = _rects(root, svg.ALL_COLOR)
    bars = [b for b in bars if b.get("width") != "10"]  # not the legend swatch (10 x 8)
    assert len(bars) == int((counts > 0).sum())
    heights = np.array([float(b.get("height")) for b in bars])
    np.testing.assert_allclose(heights / heights.max(), counts[counts > 0] / counts.max(), atol=0.01)
    sel_bars = [b for b in _rects(root, svg.SELECTED_COLOR) if b.get("width") != "10"]
    sel_counts = np.histogram(sel, bins=np.histogram_bin_edges(allv, bins=20))[0]
    assert len(sel_bars) == int((sel_counts > 0).sum())
    assert sum(float(b.get("height")) for b in sel_bars) == pytest.approx(
        sel_counts.sum() * heights.max() / counts.max(), rel=0.02)


def test_histogram_one_panel_per_name_and_a_constant_verifier():
    root = _parse(svg.histograms({"a": {"all": [0.5] * 4, "selected": [0.5]}, "b": {"all": [1, 2, 3], "selected": []}}))
    titles = [t.text for t in root.iter(NS + "text") if t.get("font-size") == "10"]
    assert titles == ["a", "b"]


def test_bar_pairs_lengths_and_sign():
    root = _parse(svg.bar_pairs([{"title": "m", "baseline": 2.0, "selected": 3.0},
                                 {"title": "n (↓)", "baseline": -1.0, "selected": 0.5}]))
    base = [float(r.get("height")) for r in _rects(root, svg.BASE_COLOR)]
    sel = [float(r.get("height")) for r in _rects(root, svg.SELECTED_COLOR)]
    assert sel[0] / base[0] == pytest.approx(1.5, rel=0.01)
    assert sel[1] / base[1] == pytest.approx(0.5, rel=0.02)
    # the negative baseline hangs below the selected bar's foot (zero)
    neg, pos = _rects(root, svg.BASE_COLOR)[1], _rects(root, svg.SELECTED_COLOR)[1]
    assert float(neg.get("y")) == pytest.approx(float(pos.get("y")) + float(pos.get("height")), abs=0.2)


def test_lines_log_scale_and_non_finite_points_left_out():
    root = _parse(svg.lines({"a": {"x": [0, 1, 2, 3], "y": [1.0, 10.0, 100.0, float("inf")]},
                             "b": {"x": [0, 1], "y": [2.0, 3.0]}}, "event", "sigma"))
    pl = [p.get("points").split() for p in root.iter(NS + "polyline")]
    assert [len(p) for p in pl] == [3, 2]
    ys = [float(p.split(",")[1]) for p in pl[0]]
    assert ys[0] - ys[1] == pytest.approx(ys[1] - ys[2], abs=0.2)  # equal steps per decade: log y
    lin = _parse(svg.lines({"a": {"x": [0, 1, 2], "y": [-1.0, 0.0, 3.0]}}, "x", "y"))
    ys = [float(p.split(",")[1]) for p in next(lin.iter(NS + "polyline")).get("points").split()]
    assert (ys[0] - ys[1]) / (ys[1] - ys[2]) == pytest.approx(1 / 3, rel=0.01)  # linear when a y <= 0


def test_names_are_escaped():
    root = _parse(svg.histograms({"<v&>": {"all": [1.0, 2.0], "selected": []}}))
    assert any(t.text == "<v&>" for t in root.iter(NS + "text"))
    assert not math.isnan(float(root.get("width")))
