"""The report package: one value formatter, one Markdown table writer, atomic writes, and no import
cycle between the computing modules and the writers."""

from __future__ import annotations

import ast
import json
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from avits_core.errors import ConfigError
from avits_core.report.format import (
    atomic_write_parquet,
    atomic_write_text,
    fmt_value,
    markdown_table,
    write_rows,
)

REPO = Path(__file__).resolve().parents[1]


def test_fmt_value_every_kind():
    assert fmt_value(None) == "–"
    assert fmt_value(True) == "yes" and fmt_value(np.bool_(False)) == "no"
    assert fmt_value(0.123456789) == "0.1235" and fmt_value(np.float32(2.5)) == "2.5"
    assert fmt_value(1234567.0) == "1.235e+06" and fmt_value(-0.0361) == "-0.0361"
    assert fmt_value(7) == "7" and fmt_value("abc") == "abc"


def test_markdown_table_known_answer():
    rows = [{"a": 1.0 / 3, "b": None, "c": "x|y"}, {"a": 2, "c": False}]
    assert markdown_table(rows) == "| a | b | c |\n|---|---|---|\n| 0.3333 | – | x\\|y |\n| 2 | – | no |"
    assert markdown_table(rows, ["c"], ["C!"]) == "| C! |\n|---|\n| x\\|y |\n| no |"
    with pytest.raises(ValueError, match="2 headers for 1 columns"):
        markdown_table(rows, ["a"], ["x", "y"])


def test_atomic_writes_leave_no_temporary_and_replace_whole_files(tmp_path):
    p = atomic_write_text(tmp_path / "sub" / "a.md", "héllo\n")
    assert p.read_bytes() == "héllo\n".encode("utf-8")
    atomic_write_text(p, "x")
    assert p.read_text() == "x"
    q = atomic_write_parquet(tmp_path / "t.parquet", pa.table({"v": [1, 2]}))
    assert pq.read_table(q).column("v").to_pylist() == [1, 2]
    assert sorted(f.name for f in tmp_path.rglob("*")) == ["a.md", "sub", "t.parquet"]
    with pytest.raises(ConfigError, match="nothing to write"):
        write_rows([], tmp_path / "e.parquet")
    # a failing writer leaves the old file and no temporary behind
    with pytest.raises(Exception):
        atomic_write_parquet(q, "not a table")
    assert pq.read_table(q).num_rows == 2 and not [f for f in tmp_path.iterdir() if f.name.startswith(".")]


def test_concurrent_atomic_writers_never_expose_a_partial_file(tmp_path):
    p = tmp_path / "x.md"
    texts = ["a" * 200_000, "b" * 300_000]
    atomic_write_text(p, texts[0])
    seen: set[int] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(len(p.read_text()))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(40):
        atomic_write_text(p, texts[i % 2])
    stop.set()
    t.join()
    assert seen <= {200_000, 300_000}


def _imports(path: Path) -> set[str]:
    """Every avits_core module a file imports (top level and inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("avits_core"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("avits_core")}
    return out


def test_report_writers_depend_on_computations_never_the_reverse():
    """No computing module imports the report package (not even inside a function): the old
    report.py <-> metrics/categories.py cycle cannot come back."""
    core = REPO / "avits_core"
    offenders = []
    for f in core.rglob("*.py"):
        if "report" in f.relative_to(core).parts[:1]:
            continue
        if any(m == "avits_core.report" or m.startswith("avits_core.report.") for m in _imports(f)):
            offenders.append(str(f.relative_to(REPO)))
    assert offenders == []
    assert not (core / "report.py").exists()
    # importing the package loads no plotting library
    import subprocess
    import sys

    code = "import sys, avits_core.report; print('matplotlib' in sys.modules, 'pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout.split()
    assert out[0] == "False"


def test_comparison_markdown_known_answer():
    from avits_core.report.benchmark import comparison_markdown

    rows = [dict(label="bon", metric="m", held_out=True, higher_is_better=False, baseline=2.0, selected=1.23456,
                 nfe_per_prompt=160.0),
            dict(label="evo", metric="m", held_out=True, higher_is_better=False, baseline=2.0, selected=None,
                 nfe_per_prompt=185.4)]
    assert comparison_markdown(rows).splitlines() == [
        "| metric | baseline | bon | evo |", "|---|---|---|---|", "| NFE / prompt | – | 160 | 185 |",
        "| m ↓ (held out) | 2 | 1.235 | – |"]


def test_comparison_plot_is_an_svg_with_one_bar_per_value(tmp_path):
    """comparison.svg (no matplotlib): one panel per held-out metric, the baseline and each config's selected
    mean as bars from 0 (lengths in proportion to the values), none for a missing value; the PNG an older
    avits wrote is removed."""
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    rows = [dict(label="bon", metric="m", held_out=True, higher_is_better=False, baseline=2.0, selected=1.5,
                 nfe_per_prompt=160.0),
            dict(label="evo", metric="m", held_out=True, higher_is_better=False, baseline=2.0, selected=None,
                 nfe_per_prompt=185.4),
            dict(label="bon", metric="guided", held_out=False, higher_is_better=True, baseline=0.1, selected=0.2,
                 nfe_per_prompt=160.0)]
    (tmp_path / "comparison.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    code = ("import sys, json\nfrom avits_core.report.benchmark import write_comparison\n"
            f"p = write_comparison(json.loads({json.dumps(json.dumps(rows))}), {str(tmp_path)!r})\n"
            "print(p['plot'], 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    path, mpl = out.stdout.split()
    assert path == str(tmp_path / "comparison.svg") and mpl == "False" and not (tmp_path / "comparison.png").exists()
    ns = "{http://www.w3.org/2000/svg}"
    root = ET.parse(path).getroot()
    bars = [r for r in root.iter(f"{ns}rect") if r.get("fill") not in ("white", "none")]
    assert len(bars) == 2  # the held-out metric only: baseline 2.0 and bon's 1.5; evo has no value
    h = sorted(float(r.get("height")) for r in bars)
    assert h[0] / h[1] == pytest.approx(1.5 / 2.0, rel=1e-2)
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "m (↓)" in texts and "bon (160 NFE)" in texts and "evo (185 NFE)" in texts and "guided" not in texts
