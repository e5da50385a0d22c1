"""Per-category results for JavisBench prompt sets, and learned verifiers as evaluation metrics.

The run tests use plain runner functions (no Prefect): prepare_run, generate_shard, score_verifier,
select, evaluate. Their prompt set is a JavisBench-format CSV (id, video_text, audio_text, text,
cat*_ind, cat*_title) whose texts are SynthAV grammar prompts, so the embedded generator can run it.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from avits_core import runner
from avits_core.config import config_from_dict
from avits_core.metrics.categories import (
    Category,
    category_rows,
    category_table,
    has_categories,
    prompt_categories,
)
from avits_core.report.categories import categories_markdown, write_category_report
from avits_core.prompts import Prompt, load_prompts
from avits_core.store.duck import connect

REPO = Path(__file__).resolve().parents[1]

# id, text, cat0_ind, cat0_title, cat2_ind, cat2_title  (cat1: every prompt is "0" = "Camera Shooting")
ROWS = [
    ("j0", "a small red ball bounces twice with a high beep over rain", "0", "Natural Scenario", "0,1",
     "Ambient Sounds,Biological Sounds"),
    ("j1", "a large blue cube bounces three times with a low click", "1", "Urban Scenario", "1",
     "Biological Sounds"),
    ("j2", "a medium green ball bounces once with a mid buzz over wind", "0", "Natural Scenario", "2",
     "Mechanical Sounds"),
    ("j3", "a small yellow cube bounces four times with a low beep over hum", "1", "Urban Scenario", "0,2",
     "Ambient Sounds,Mechanical Sounds"),
]
MEMBERS = {  # (aspect, index) -> prompts, written out by hand
    ("cat0", 0): ["j0", "j2"], ("cat0", 1): ["j1", "j3"], ("cat1", 0): ["j0", "j1", "j2", "j3"],
    ("cat2", 0): ["j0", "j3"], ("cat2", 1): ["j0", "j1"], ("cat2", 2): ["j2", "j3"],
}
TITLES = {("cat0", 0): "Natural Scenario", ("cat0", 1): "Urban Scenario", ("cat1", 0): "Camera Shooting",
          ("cat2", 0): "Ambient Sounds", ("cat2", 1): "Biological Sounds", ("cat2", 2): "Mechanical Sounds"}


def write_javis_csv(path: Path, rows=ROWS) -> Path:
    cols = ["id", "video_text", "audio_text", "text", "cat0_ind", "cat0_title", "cat1_ind", "cat1_title",
            "cat2_ind", "cat2_title"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for pid, text, c0, t0, c2, t2 in rows:
            w.writerow([pid, text.split(" with ")[0], "a " + text.split(" with a ")[-1], text, c0, t0, "0",
                        "Camera Shooting", c2, t2])
    return path


def _prompts() -> list[Prompt]:
    return [Prompt(pid, text, {"cat0_ind": c0, "cat0_title": t0, "cat2_ind": c2, "cat2_title": t2})
            for pid, text, c0, t0, c2, t2 in ROWS]


# --------------------------------------------------------------------------- plain functions


def test_prompt_categories_multi_valued_and_titles():
    cats = prompt_categories(_prompts())
    assert cats["j0"] == [Category(0, 0, "Natural Scenario"), Category(2, 0, "Ambient Sounds"),
                          Category(2, 1, "Biological Sounds")]
    assert cats["j3"] == [Category(0, 1, "Urban Scenario"), Category(2, 0, "Ambient Sounds"),
                          Category(2, 2, "Mechanical Sounds")]
    assert has_categories(_prompts()) and not has_categories([Prompt("a", "x")])
    # two indices but one title: no guessed title for either (the other prompts do not name them)
    odd = [Prompt("a", "x", {"cat3_ind": "[4, 5]", "cat3_title": "Only One"})]
    assert prompt_categories(odd)["a"] == [Category(3, 4, None), Category(3, 5, None)]
    with pytest.raises(ValueError, match=r"prompt 'b'.*cat0_ind.*'x1'"):
        prompt_categories([Prompt("b", "x", {"cat0_ind": "x1"})])


def test_category_rows_known_answer():
    rows = []
    base = {"j0": 1.0, "j1": 2.0, "j2": 3.0, "j3": 5.0}
    sel = {"j0": 2.0, "j1": 2.5, "j2": float("nan"), "j3": 6.0}
    for pid in base:
        rows.append(dict(selection_id=None, prompt_id=pid, metric="m", value=base[pid], held_out=True))
        rows.append(dict(selection_id="S", prompt_id=pid, metric="m", value=sel[pid], held_out=True))
        rows.append(dict(selection_id="other", prompt_id=pid, metric="m", value=100.0, held_out=True))
    out = category_rows(rows, _prompts(), "S", directions={"m": False})
    got = {(r["aspect"], r["category"]): r for r in out}
    assert [(r["aspect"], r["category"]) for r in out] == [("cat0", 0), ("cat0", 1), ("cat2", 0), ("cat2", 1),
                                                          ("cat2", 2)]
    r = got[("cat0", 0)]  # j0, j2; j2's selected value is NaN -> left out of the selected mean
    assert (r["n_prompts"], r["n_baseline"], r["n_selected"]) == (2, 2, 1)
    assert r["baseline"] == 2.0 and r["selected"] == 2.0 and r["change"] == 0.0
    assert r["title"] == "Natural Scenario" and r["higher_is_better"] is False and r["held_out"] is True
    r = got[("cat2", 0)]  # j0 ("0,1") and j3 ("0,2")
    assert r["baseline"] == 3.0 and r["selected"] == 4.0 and r["change"] == 1.0 and r["title"] == "Ambient Sounds"
    r = got[("cat2", 1)]  # j0 and j1
    assert r["baseline"] == 1.5 and r["selected"] == 2.25 and r["change"] == 0.75
    with pytest.raises(ValueError, match="'zz'"):
        category_rows([dict(selection_id=None, prompt_id="zz", metric="m", value=1.0)], _prompts(), "S")
    md = categories_markdown(out, "S")
    assert "## cat2" in md and "| 1 | Biological Sounds | m (held out) | lower | 2 (2/2) | 1.5 | 2.25 | 0.75 |" in md


# --------------------------------------------------------------------------- a real run


def _run_cfg(tmp_path: Path, prompts_csv: Path, evaluation: dict, verifiers: list[dict], n: int = 3):
    return config_from_dict(dict(
        name="cat-test", seed=1, output_root=str(tmp_path / "runs"),
        generator=dict(name="synth", params=dict(num_steps=6)),
        prompts=dict(source=str(prompts_csv)),
        search=dict(method="best_of_n", n=n, prompts_per_task=8),
        verifiers=verifiers,
        aggregator=dict(name="arw", params=dict(optimizer="adam", lr=0.05, max_iter=20)),
        evaluation=evaluation,
    ))


def _run_all(cfg):
    ctx = runner.prepare_run(cfg)
    runner.generate_shard(ctx, ctx.prompts)
    for spec in ctx.all_verifier_specs():
        counts = runner.score_verifier(ctx, spec)
        assert counts["errors"] == 0, (spec.name, counts)
    sel = runner.select(ctx)
    runner.evaluate(ctx, sel)
    return ctx, sel


@pytest.fixture(scope="module")
def javis_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("javis-run")
    src = write_javis_csv(tmp_path / "javis-synth.csv")
    prompts = load_prompts(src)
    assert prompts[0].meta["cat2_ind"] == "0,1" and "audio_text" in prompts[0].meta
    cfg = _run_cfg(tmp_path, src, dict(oracle=True, verifiers=["quality"]),
                   [dict(name="av_sync"), dict(name="synth_text")])
    return _run_all(cfg)


def test_category_report_on_a_synth_run(tmp_path, javis_run):
    ctx, sel = javis_run
    src = Path(ctx.cfg.prompts.source)
    table = category_table(ctx, sel)
    con = connect(ctx.store.path)
    metrics = con.sql("SELECT selection_id, prompt_id, metric, value FROM metrics").to_arrow_table().to_pylist()
    con.close()
    names = {m["metric"] for m in metrics}
    assert {"av_sync", "synth_text", "quality", "sync_error_ms", "attribute_accuracy"} <= names
    # every (category, metric) row recomputed from the stored metrics and the hand-written membership
    assert {(r["aspect"], r["category"]) for r in table} == set(MEMBERS)
    assert len(table) == len(MEMBERS) * len(names)
    for r in table:
        pids = MEMBERS[(r["aspect"], r["category"])]
        b = [m["value"] for m in metrics if m["selection_id"] is None and m["prompt_id"] in pids
             and m["metric"] == r["metric"]]
        s = [m["value"] for m in metrics if m["selection_id"] == sel and m["prompt_id"] in pids
             and m["metric"] == r["metric"]]
        assert r["n_prompts"] == len(pids) == len(b) == len(s) == r["n_baseline"] == r["n_selected"]
        assert r["baseline"] == pytest.approx(np.mean(b), abs=1e-12)
        assert r["selected"] == pytest.approx(np.mean(s), abs=1e-12)
        assert r["change"] == pytest.approx(np.mean(s) - np.mean(b), abs=1e-12)
        assert r["title"] == TITLES[(r["aspect"], r["category"])]
        assert r["held_out"] is (r["metric"] not in ("av_sync", "synth_text"))
    # the category holding every prompt reproduces the run's overall results table
    overall = {r["metric"]: r for r in runner.results_table(ctx, sel)}
    for r in (r for r in table if r["aspect"] == "cat1"):
        o = overall[r["metric"]]
        assert r["baseline"] == pytest.approx(o["baseline"]) and r["selected"] == pytest.approx(o["selected"])
        assert r["higher_is_better"] == o["higher_is_better"]
    # guided verifiers improve on average over all prompts (ARW picks high av_sync/synth_text candidates)
    assert sum(overall[m]["change"] for m in ("av_sync", "synth_text")) > 0

    md_path = write_category_report(ctx, sel)
    assert md_path == ctx.store.path / "report" / "categories.md"
    md = md_path.read_text()
    assert "## cat0" in md and "## cat2" in md and "Mechanical Sounds" in md and "sync_error_ms (held out)" in md
    pq_path = ctx.store.path / "analysis" / f"categories-{sel}.parquet"
    back = pq.read_table(pq_path).to_pylist()
    assert len(back) == len(table)
    for a, b in zip(back, table):
        assert a == {k: b[k] for k in a}
    # a run whose prompts carry no categories writes nothing
    plain = _run_cfg(tmp_path, src, dict(oracle=True, verifiers=[]), [dict(name="av_sync")], n=1)
    plain.prompts.source = ["a small red ball bounces once"]
    ctx2, sel2 = _run_all(plain)
    assert category_table(ctx2, sel2) == [] and write_category_report(ctx2, sel2) is None
    assert not (ctx2.store.path / "report" / "categories.md").exists()


def test_run_report_links_the_category_report(javis_run):
    """``write_report`` (the report task) also writes categories.md and the Parquet table."""
    from avits_core.report import write_report

    ctx, sel = javis_run
    for p in (ctx.store.path / "report" / "categories.md", ctx.store.path / "analysis" / f"categories-{sel}.parquet"):
        p.unlink(missing_ok=True)
    rep = write_report(ctx, sel)
    assert "[categories.md](categories.md)" in rep.markdown
    assert "Urban Scenario" in (ctx.store.path / "report" / "categories.md").read_text()
    assert pq.read_table(ctx.store.path / "analysis" / f"categories-{sel}.parquet").num_rows == len(
        category_table(ctx, sel))


# --------------------------------------------------------------------------- learned evaluation verifiers


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import build_tiny_clap, build_tiny_clip

    root = tmp_path_factory.mktemp("tiny-models")
    return {"clap": str(build_tiny_clap(root / "clap")), "clip": str(build_tiny_clip(root / "clip"))}


def test_learned_verifiers_as_evaluation_metrics(tmp_path, tiny_models):
    """CLAP, CLIP and ImageBind (tiny backbone) as held-out evaluation verifiers with their own params
    (``evaluation.verifiers`` items as ``{name, params}``), next to a bare name."""
    src = write_javis_csv(tmp_path / "javis-synth.csv", ROWS[:2])
    evaluation = dict(oracle=False, verifiers=[
        "quality",
        dict(name="clap", params=dict(model_path=tiny_models["clap"], text_field="audio_text")),
        dict(name="clip", params=dict(model_path=tiny_models["clip"], num_frames=4)),
        dict(name="ib_av", params=dict(backbone="tiny", dim=16)),
    ])
    cfg = _run_cfg(tmp_path, src, evaluation, [dict(name="av_sync")], n=2)
    ctx, sel = _run_all(cfg)
    specs = {s.name: s for s in ctx.all_verifier_specs()}
    assert specs["clap"].params["model_path"] == tiny_models["clap"] and specs["clap"].weight == 0.0
    assert specs["quality"].params == {} and specs["av_sync"].weight == 1.0

    con = connect(ctx.store.path)
    rew = con.sql("SELECT verifier, count(*) AS n, bool_and(status = 'ok') AS ok FROM rewards "
                  "GROUP BY verifier ORDER BY verifier").to_arrow_table().to_pylist()
    rows = con.sql("SELECT selection_id, prompt_id, metric, value, held_out FROM metrics "
                   "WHERE metric IN ('clap', 'clip', 'ib_av')").to_arrow_table().to_pylist()
    con.close()
    assert rew == [{"verifier": v, "n": 4, "ok": True} for v in ("av_sync", "clap", "clip", "ib_av", "quality")]
    assert len(rows) == 3 * 2 * 2  # 3 metrics x 2 prompts x (baseline + selection)
    assert all(r["held_out"] is True and -1.0 <= r["value"] <= 1.0 and math.isfinite(r["value"]) for r in rows)
    # the evaluation scores are the verifiers' own numbers on the stored clips
    from avits_core.media import read_mp4

    cands = {c["candidate_id"]: c for c in ctx.store.read("candidates").to_pylist()}
    picked = {r["prompt_id"]: r["candidate_id"] for r in ctx.store.read("selections").to_pylist()}
    clap = runner.get_verifier("clap", dict(model_path=tiny_models["clap"], text_field="audio_text"))
    by_id = ctx.prompt_by_id
    for pid, cid in picked.items():
        clip = read_mp4(ctx.store.path / cands[cid]["media_path"])
        expect = clap.score([clip], [by_id[pid]]).values[0]
        got = next(r["value"] for r in rows if r["selection_id"] == sel and r["prompt_id"] == pid
                   and r["metric"] == "clap")
        assert got == pytest.approx(expect, abs=1e-6)
    overall = {r["metric"]: r for r in runner.results_table(ctx, sel)}
    assert {"clap", "clip", "ib_av", "quality"} <= set(overall) and overall["clap"]["held_out"] is True
    cat = category_table(ctx, sel)
    assert {r["metric"] for r in cat} >= {"clap", "clip", "ib_av"}
