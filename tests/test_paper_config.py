"""The paper's configs (data/configs/ltx2-paper*.yaml): they parse to the paper's settings, `avits doctor`
lists exactly the weight files a user must fetch, and a tiny variant runs end to end through `avits run`
(tiny LTX-2, tiny VideoReward, ImageBind's tiny backbone, tiny CLAP/CLIP/VQAScore)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from avits_core.config import load_config  # noqa: E402
from avits_core.doctor import PREFIXES, run_doctor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "data/configs/ltx2-paper.yaml"
EVO = REPO / "data/configs/ltx2-paper-evosearch.yaml"
HELD_OUT = ["clap", "clip", "ib_tv", "ib_ta", "ib_av", "avh_score", "vqascore"]
IB = "imagebind_huge.pth"
# component -> what its MISSING line must name (the download commands / files)
FETCH = {
    "generator ltx2": ["hf download Lightricks/LTX-2"],
    "verifier videoreward (guided)": ["hf download KwaiVGI/VideoReward", "hf download Qwen/Qwen2-VL-2B-Instruct",
                                      "prompt_template.py"],
    "verifier javis_score (guided)": [IB],
    "verifier clap (evaluation)": ["hf download laion/clap-htsat-unfused"],
    "verifier clip (evaluation)": ["hf download openai/clip-vit-base-patch32"],
    "verifier ib_tv (evaluation)": [IB],
    "verifier ib_ta (evaluation)": [IB],
    "verifier ib_av (evaluation)": [IB],
    "verifier avh_score (evaluation)": [IB],
    "verifier vqascore (evaluation)": ["zhiqiulin/clip-flant5-xxl"],
}


@pytest.mark.parametrize("path", [PAPER, EVO])
def test_paper_configs_parse_to_the_papers_settings(path):
    from avits_core.search.evosearch import EvoSearchConfig

    cfg = load_config(path)
    assert cfg.generator.name == "ltx2" and cfg.generator.params["num_steps"] == 30
    assert [(v.name, v.weight) for v in cfg.verifiers] == [("videoreward", 0.5), ("javis_score", 0.5)]
    vr = cfg.verifiers[0].params
    assert vr["head"] == "TA" and vr["normalize"] is True and vr["dtype"] == "bfloat16"
    assert cfg.verifiers[1].params["backbone"] == "imagebind"
    assert cfg.aggregator.name == "arw"
    assert [n for n, _ in cfg.evaluation.specs()] == HELD_OUT and cfg.evaluation.oracle is False
    assert dict(cfg.evaluation.specs())["vqascore"]["frames"] == 8
    src = Path(cfg.prompts.source)
    assert src.name == "javisbench-mini-head.csv" and src.is_file()
    if path == PAPER:
        assert cfg.search.method == "best_of_n" and cfg.search.n == 5
    else:
        evo = EvoSearchConfig.from_params(cfg.search.params)
        assert cfg.search.method == "evosearch"
        assert evo.population_size_schedule == (5, 5, 5) and evo.evolution_schedule == (0, 10)
        assert (evo.elite_size, evo.tournament_ratio, evo.mutation_rate) == (2, 0.5, 0.2)
    # the two files differ only in name and search
    a, b = yaml.safe_load(PAPER.read_text()), yaml.safe_load(EVO.read_text())
    for k in ("name", "search"):
        a.pop(k), b.pop(k)
    assert a == b


@pytest.mark.parametrize("path", [PAPER, EVO])
def test_doctor_lists_exactly_the_missing_weight_files(path, tmp_path, monkeypatch):
    """Run from an empty folder (relative weight paths are missing): every model is MISSING with the
    command that fetches it, or ok where this machine already has it; nothing else is MISSING, and the
    only ERROR lines are about CUDA on a machine without it."""
    monkeypatch.chdir(tmp_path)
    lines, ok = run_doctor(path)
    assert all(ln.startswith(PREFIXES) for ln in lines), lines
    assert not ok
    missing = [ln for ln in lines if ln.startswith("MISSING:")]
    seen = set()
    for ln in missing:
        who = [c for c in FETCH if ln.startswith(f"MISSING: {c}:")]
        assert len(who) == 1, f"unexpected MISSING line: {ln[:200]}"
        seen.add(who[0])
        for needle in FETCH[who[0]]:
            assert needle in ln, (who[0], needle, ln[:300])
    for comp in set(FETCH) - seen:  # not missing: must be reported ready
        assert any(ln.startswith(f"ok: {comp}") or (ln.startswith(f"ok: {comp.split(' (')[0]}")) for ln in lines), comp
    # the template is relative to the working directory, so VideoReward is always MISSING here, with
    # each missing file on its own line
    assert "verifier videoreward (guided)" in seen
    vr = next(ln for ln in missing if ln.startswith("MISSING: verifier videoreward"))
    assert "models/VideoAlign/prompt_template.py" in vr and vr.count("\n  - ") >= 1
    import torch

    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    if not torch.cuda.is_available():
        assert errors and all("CUDA is not available" in ln or "cuda" in ln for ln in errors), errors
    else:
        assert not errors, errors


# --------------------------------------------------------------------------- end to end (slow)
def _tiny_paper_config(tmp: Path) -> Path:
    from tiny_ltx2 import TINY_MAX_SEQUENCE_LENGTH, save_tiny_ltx2
    from tiny_models import build_tiny_clap, build_tiny_clip
    from tiny_videoreward import build_tiny_videoreward

    data = yaml.safe_load(PAPER.read_text())
    data["name"] = "ltx2-paper-tiny"
    data["output_root"] = str(tmp / "runs")
    data["generator"]["params"] = dict(model_path=str(save_tiny_ltx2(tmp / "ltx2", "2.0")), device="cpu",
                                       dtype="float32", height=64, width=96, num_frames=9, frame_rate=24.0,
                                       num_steps=3, max_sequence_length=TINY_MAX_SEQUENCE_LENGTH, batch_size=3)
    data["prompts"] = dict(source=str(REPO / "data/prompts/javisbench-mini-head.csv"), text_column="text", limit=2)
    data["search"]["n"] = 3
    vr = build_tiny_videoreward(tmp / "videoreward")
    small = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    data["verifiers"][0]["params"] = dict(vr.params(**small), head="TA", normalize=True)
    tiny_ib = {"backbone": "tiny"}
    data["verifiers"][1]["params"] = dict(tiny_ib)
    specs = {"clap": {"model_path": str(build_tiny_clap(tmp / "clap"))},
             "clip": {"model_path": str(build_tiny_clip(tmp / "clip")), "num_frames": 4},
             **{n: dict(tiny_ib) for n in ("ib_tv", "ib_ta", "ib_av", "avh_score")}}
    try:
        from tiny_vqascore import build_tiny_vqascore

        specs["vqascore"] = {"model_path": str(build_tiny_vqascore(tmp / "vqascore")), "frames": 8,
                             "video_policy": "tile"}
    except ImportError:  # the VQAScore half of the issue is built in parallel
        pass
    data["evaluation"]["verifiers"] = [{"name": n, "params": p} for n, p in specs.items()]
    path = tmp / "ltx2-paper-tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _table(run: Path, name: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted((run / name).glob("*.parquet"))
    assert parts, f"no {name} parts in {run}"
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default").to_pylist()


@pytest.mark.slow
def test_tiny_paper_config_runs_end_to_end(tmp_path):
    cfg_path = _tiny_paper_config(tmp_path)
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="240", HF_HUB_OFFLINE="1", COLUMNS="200")
    proc = subprocess.run([str(Path(sys.executable).parent / "avits"), "run", str(cfg_path), "--run-id", "paper", "-q"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "runs" / "paper"
    cands = _table(run, "candidates")
    assert len(cands) == 2 * 3
    rewards = _table(run, "rewards")
    by = {}
    for r in rewards:
        by.setdefault(r["verifier"], []).append(r)
    assert set(by) >= {"videoreward", "javis_score", "clap", "clip", "ib_tv", "ib_ta", "ib_av", "avh_score"}
    vr = [r for r in by["videoreward"] if r["status"] == "ok"]
    assert len({r["candidate_id"] for r in vr}) == 6, by["videoreward"]
    for r in vr:
        d = json.loads(r["details"])
        assert r["value"] == pytest.approx(d["TA"], abs=1e-12)
        assert set(d) >= {"VQ_raw", "MQ_raw", "TA_raw", "VQ", "MQ", "TA", "overall", "overall_raw"}
        assert r["verifier_version"].startswith("1+")
    # the pipeline scored the stored mp4 with the right prompt: the library gives the same numbers
    from avits_core.media import read_mp4
    from avits_core.prompts import load_prompts
    from avits_core.registry import VERIFIERS

    cfg = yaml.safe_load(cfg_path.read_text())
    v = VERIFIERS.create("videoreward", **cfg["verifiers"][0]["params"])
    prompts = {p.prompt_id: p for p in load_prompts(cfg["prompts"]["source"], text_column="text", limit=2)}
    cmap = {c["candidate_id"]: c for c in cands}
    clips = [read_mp4(run / cmap[r["candidate_id"]]["media_path"]) for r in vr]
    direct = v.score(clips, [prompts[r["prompt_id"]] for r in vr])
    np.testing.assert_allclose(direct.values, [r["value"] for r in vr], rtol=0, atol=1e-6)
    # ARW over the paper's pair at 0.5/0.5, one selection per prompt, held-out metrics for it
    sels = _table(run, "selections")
    assert len(sels) == 2 and all(s["candidate_id"] for s in sels)
    assert all(list(s["verifiers"]) == ["videoreward", "javis_score"] for s in sels)
    assert all(np.allclose(list(s["weights"]), [0.5, 0.5]) for s in sels)
    trace = _table(run, "arw_trace")
    assert {t["verifier"] for t in trace} == {"videoreward", "javis_score"}
    metrics = _table(run, "metrics")
    held = {m["metric"] for m in metrics if m["held_out"]}
    assert held >= {"clap", "clip", "ib_tv", "ib_ta", "ib_av", "avh_score"}, held
    if any(s["name"] == "vqascore" for s in cfg["evaluation"]["verifiers"]):
        assert "vqascore" in held
    # JavisBench categories: the per-category table is written
    cats = (run / "report" / "categories.md").read_text()
    assert "| videoreward |" in cats and "| clip (held out) |" in cats and "## cat0" in cats
