"""Run report plots: drawn from the stored rows, skipped when their data did not change (issue 17),
and the report's Markdown is the same whether the plots were drawn or reused."""

from __future__ import annotations

import json
import sys
from xml.etree import ElementTree

import pytest

from avits_core import runner
from avits_core.config import config_from_dict
from avits_core.report import run as report_run
from avits_core.report import write_report
from avits_core.store.duck import connect


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plots-run")
    cfg = config_from_dict(dict(
        name="plots-test", seed=3, output_root=str(tmp / "runs"),
        generator=dict(name="synth", params=dict(num_steps=4)),
        prompts=dict(source=["a red ball bounces", "a blue cube slides", "a green ball rolls"]),
        search=dict(method="best_of_n", n=3, prompts_per_task=8),
        verifiers=[dict(name="av_align"), dict(name="synth_text")],
        aggregator=dict(name="arw", params=dict(optimizer="adam", lr=0.05, max_iter=10)),
        evaluation=dict(oracle=True, verifiers=[]),
    ))
    ctx = runner.prepare_run(cfg)
    runner.generate_shard(ctx, ctx.prompts)
    for spec in ctx.all_verifier_specs():
        assert runner.score_verifier(ctx, spec)["errors"] == 0
    sel = runner.select(ctx)
    runner.evaluate(ctx, sel)
    return ctx, sel


def test_plot_data_is_the_stored_rows(small_run):
    ctx, sel = small_run
    results = runner.results_table(ctx, sel)
    data = report_run._plot_data(ctx, sel, results)
    assert set(data) == {"rewards.svg", "arw_sigma.svg", "metrics.svg"}
    con = connect(ctx.store.path)
    rew = con.sql("SELECT verifier, value, candidate_id FROM rewards WHERE status='ok'").fetchall()
    picked = {r[0] for r in con.sql("SELECT candidate_id FROM selections WHERE selection_id=?", params=[sel]).fetchall()}
    n_trace = con.sql("SELECT count(*) FROM arw_trace WHERE selection_id=?", params=[sel]).fetchall()[0][0]
    con.close()
    for v in ("av_align", "synth_text"):
        assert sorted(data["rewards.svg"][v]["all"]) == sorted(x for name, x, _ in rew if name == v)
        assert sorted(data["rewards.svg"][v]["selected"]) == sorted(x for name, x, c in rew if name == v and c in picked)
        assert len(data["rewards.svg"][v]["all"]) == 9 and len(data["rewards.svg"][v]["selected"]) == 3
    assert sum(len(d["x"]) for d in data["arw_sigma.svg"].values()) == n_trace > 0
    assert sorted(data["arw_sigma.svg"]) == ["av_align", "synth_text"]  # run scope: one series per verifier
    bars = {b["title"]: b for b in data["metrics.svg"]["bars"]}
    for r in results:
        if r.get("baseline") is not None and r.get("selected") is not None:
            title = r["metric"] + ("" if r.get("higher_is_better", True) else " (↓)")
            assert bars[title]["baseline"] == pytest.approx(r["baseline"]) and bars[title]["selected"] == pytest.approx(r["selected"])


def test_unchanged_plots_are_not_drawn_again(small_run, monkeypatch):
    ctx, sel = small_run
    outdir = report_run.report_dir(ctx, sel)
    for name in ("rewards.svg", "arw_sigma.svg", "metrics.svg", "plots.json"):
        (outdir / name).unlink(missing_ok=True)
    first = write_report(ctx, sel)
    plots = {p.name: p.read_bytes() for p in first.plots}
    assert set(plots) == {"rewards.svg", "arw_sigma.svg", "metrics.svg"}
    assert all(ElementTree.fromstring(b).tag == "{http://www.w3.org/2000/svg}svg" for b in plots.values())
    assert all(f"![{n[:-4]}]({n})" in first.markdown for n in plots)
    side = json.loads((outdir / "plots.json").read_text())
    assert set(side) == set(plots)

    drawn = []
    real_draw = report_run._draw
    monkeypatch.setattr(report_run, "_draw", lambda name, payload: drawn.append(name) or real_draw(name, payload))
    again = write_report(ctx, sel)
    assert drawn == []  # nothing changed: nothing drawn
    assert again.markdown == first.markdown and [p.name for p in again.plots] == [p.name for p in first.plots]
    assert {p.name: p.read_bytes() for p in again.plots} == plots

    # a missing plot, or a sidecar hash that no longer matches, draws that plot (and only it) again
    (outdir / "metrics.svg").unlink()
    side["rewards.svg"] = "0" * 32
    (outdir / "plots.json").write_text(json.dumps(side))
    third = write_report(ctx, sel)
    assert sorted(drawn) == ["metrics.svg", "rewards.svg"]
    assert third.markdown == first.markdown and (outdir / "metrics.svg").read_bytes() == plots["metrics.svg"]


def test_report_imports_no_matplotlib(small_run):
    """Writing a run's report loads no matplotlib (its import alone is ~0.5 s CPU, drawing three figures ~1.2 s),
    whether the plots are drawn or reused; stale PNGs of an older avits are removed."""
    import subprocess

    ctx, sel = small_run
    outdir = report_run.report_dir(ctx, sel)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "plots.json").unlink(missing_ok=True)  # every plot drawn again
    (outdir / "rewards.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # left by a report of an older avits
    code = (
        "import sys\nfrom avits_core import runner\nfrom avits_core.report import write_report\n"
        f"ctx = runner.open_run({str(ctx.store.path)!r})\nwrite_report(ctx, {sel!r})\n"
        "print('MPL' if 'matplotlib' in sys.modules else 'NOMPL')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "NOMPL"
    assert not (outdir / "rewards.png").exists() and (outdir / "rewards.svg").exists()


def test_synth_generator_params_are_checked_without_torch():
    """A bad ``generator.params`` is refused by the pre-flight without importing torch (issue 17: it cost 2 s)."""
    import subprocess

    code = (
        "import sys\nfrom avits_core.generators.synth import SynthAVGenerator as G\n"
        "G.validate_params({'num_steps': 3, 'guidance': 2.0})\n"
        "for bad in ({'num_steps': 0}, {'nope': 1}, {'size': 8}):\n"
        "    try:\n        G.validate_params(bad)\n    except Exception as exc:\n"
        "        print(type(exc).__name__, exc)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [
        "ConfigError synth: num_steps must be an integer >= 1, got 0",
        "ConfigError synth: got an unexpected keyword argument 'nope'",
        "ConfigError synth: size must be an integer >= 16 pixels, got 8",
        "False",
    ]


def test_posters_come_from_the_clip_cache(small_run):
    """A poster is the clip's middle frame (scaled 3x, nearest) and, right after scoring in the same process,
    is taken from the process-wide clip cache: writing the report decodes no mp4 again (issue 17)."""
    import numpy as np
    from PIL import Image

    from avits_core.clipcache import clip_cache, read_clip
    from avits_core.media import read_mp4

    ctx, sel = small_run
    mp4 = sorted((ctx.store.path / "media").rglob("*.mp4"))[0]
    out = ctx.store.path / "poster-test.png"
    out.unlink(missing_ok=True)
    read_clip(mp4)  # in the cache, as after a scoring pass
    before = clip_cache().stats()
    assert report_run._poster(mp4, out) == out
    after = clip_cache().stats()
    assert (after["decoded"], after["hits"]) == (before["decoded"], before["hits"] + 1)
    clip = read_mp4(mp4)
    mid = clip.video[clip.num_frames // 2]
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape == (mid.shape[0] * 3, mid.shape[1] * 3, 3)
    assert np.array_equal(png[::3, ::3], mid)
