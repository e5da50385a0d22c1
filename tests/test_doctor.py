"""``avits doctor [CONFIG]``: findings, exit codes and the how-to-get-it messages (CLI in process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from avits.cli import app
from avits_core.doctor import PREFIXES, run_doctor

REPO = Path(__file__).resolve().parents[1]


def _doctor(*args: str):
    res = CliRunner().invoke(app, ["doctor", *map(str, args)])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    return res.exit_code, lines


def _config(tmp_path: Path, **over) -> Path:
    data = dict(
        name="doc", output_root=str(tmp_path / "runs"),
        generator=dict(name="synth", params=dict(num_steps=4)),
        prompts=dict(source=["a small red ball bounces twice"]),
        verifiers=[dict(name="av_sync")],
        evaluation=dict(oracle=True, verifiers=[]),
    )
    data.update(over)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_doctor_demo_config_all_ok(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # demo's output_root "runs" is relative to the working directory
    code, lines = _doctor(REPO / "data/configs/demo.yaml")
    assert code == 0, lines
    assert all(ln.startswith(PREFIXES) for ln in lines), lines
    assert not any(ln.startswith(("MISSING", "ERROR")) for ln in lines)
    text = "\n".join(lines)
    for needle in ("ok: 24 prompts", "ok: generator synth", "ok: verifier av_align (guided) v1 ready",
                   "ok: verifier quality (evaluation) v1 ready", "ok: aggregator arw", "encoder libx264",
                   f"ok: output_root {tmp_path / 'runs'} is writable (will be created)"):
        assert needle in text, needle
    assert not (tmp_path / "runs").exists()  # the doctor checks, it never creates


def test_doctor_without_config_checks_the_machine():
    code, lines = _doctor()
    assert code == 0 and any("torch" in ln for ln in lines) and any("RAM" in ln for ln in lines)


def test_doctor_ltx2_missing_model_path(tmp_path):
    missing = tmp_path / "no-such-ltx2"
    cfg = _config(tmp_path, generator=dict(name="ltx2", params=dict(model_path=str(missing), device="cpu")))
    code, lines = _doctor(cfg)
    assert code == 1
    miss = [ln for ln in lines if ln.startswith("MISSING:")]
    assert len(miss) == 1 and str(missing) in miss[0] and "generator ltx2" in miss[0]
    assert "hf download Lightricks/LTX-2" in miss[0] and "docs/ltx2.md" in miss[0]
    # the rest of the config is still checked
    assert any(ln.startswith("ok: verifier av_sync") for ln in lines)
    assert any(ln.startswith("WARNING: generator ltx2: device cpu") for ln in lines)
    # no model_path at all
    cfg = _config(tmp_path, generator=dict(name="ltx2", params=dict(device="cpu")))
    code, lines = _doctor(cfg)
    assert code == 1 and any(ln.startswith("MISSING: generator ltx2: model_path is not set") for ln in lines)


def test_doctor_clap_missing_model_path(tmp_path):
    missing = tmp_path / "models" / "clap"
    cfg = _config(tmp_path, verifiers=[dict(name="av_sync"), dict(name="clap", params=dict(model_path=str(missing)))])
    code, lines = _doctor(cfg)
    assert code == 1
    (miss,) = [ln for ln in lines if ln.startswith("MISSING:")]
    assert miss.startswith("MISSING: verifier clap (guided): ")
    assert str(missing) in miss and "does not exist" in miss and "hf download laion/clap-htsat-unfused" in miss
    # a hub id that is not in the (empty) local cache: the message names it and the download command
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    cfg = _config(tmp_path, verifiers=[dict(name="clip", params=dict(model_path="openai/clip-vit-base-patch32",
                                                                     cache_dir=str(cache)))])
    code, lines = _doctor(cfg)
    (miss,) = [ln for ln in lines if ln.startswith("MISSING:")]
    assert code == 1 and "not in the local Hugging Face cache" in miss and "hf download openai/clip-vit-base-patch32" in miss


def test_doctor_reports_every_problem_not_only_the_first(tmp_path):
    cfg = _config(
        tmp_path,
        prompts=dict(source="../eval/JavisBench/JavisBench-mini.csv"),
        generator=dict(name="no_such_model"),
        verifiers=[dict(name="av_sync"), dict(name="clap", params=dict(model_path=str(tmp_path / "x"), device="cuda:7"))],
        aggregator=dict(name="arw", params=dict(no_such_param=1)),
    )
    code, lines = _doctor(cfg)
    assert code == 1
    text = "\n".join(lines)
    assert "MISSING: prompts: prompt file not found" in text and "JavisVerse/JavisBench" in text
    assert "ERROR: generator 'no_such_model'" in text and "avits.generators" in text
    assert "MISSING: verifier clap (guided)" in text
    assert "ERROR: verifier clap (guided): device 'cuda:7'" in text
    assert "ERROR: aggregator 'arw'" in text
    assert "ok: verifier av_sync (guided)" in text


def test_doctor_broken_config_and_unwritable_output(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nverifiers: []\nprompts: {source: [a]}\n")
    lines, ok = run_doctor(bad)
    assert not ok and lines[-1].startswith("ERROR: ") and "verifiers" in lines[-1]
    blocker = tmp_path / "file"
    blocker.write_text("")
    lines, ok = run_doctor(_config(tmp_path, output_root=str(blocker / "runs")))
    assert not ok and any(ln.startswith("ERROR: output_root") and "is a file" in ln for ln in lines)


def test_doctor_javisbench_recipe_names_its_downloads():
    """The shipped GPU recipe: the prompts are found, and each model is either ready or MISSING with
    the command that fetches it (on this CPU machine: all MISSING, plus ERROR lines for device cuda)."""
    lines, ok = run_doctor(REPO / "data/configs/ltx2-javisbench.yaml")
    text = "\n".join(lines)
    assert all(ln.startswith(PREFIXES) for ln in lines), lines
    assert "ok: 3 prompts from" in text and "JavisBench categories cat0, cat1, cat2, cat3, cat4" in text
    for who, role, fetch in [("clap", "guided", "hf download laion/clap-htsat-unfused"),
                             ("javis_score", "guided", "imagebind_huge.pth"),
                             ("clip", "evaluation", "hf download openai/clip-vit-base-patch32"),
                             ("ib_av", "evaluation", "imagebind_huge.pth")]:
        mine = [ln for ln in lines if f"verifier {who} ({role})" in ln]
        assert any(ln.startswith("ok:") for ln in mine) or any(
            ln.startswith("MISSING:") and fetch in ln for ln in mine), (who, mine)
    gen = [ln for ln in lines if "generator ltx2:" in ln]
    assert any(ln.startswith("ok: generator ltx2: model folder") for ln in gen) or any(
        ln.startswith("MISSING:") and "hf download Lightricks/LTX-2" in ln for ln in gen), gen


def _run_folder(tmp_path: Path) -> Path:
    """A run folder with run.json and two candidates parts, the second truncated."""
    from avits_core.store import RunStore

    store = RunStore(tmp_path / "runs", "r1").create()
    store.write_run_json({"run_id": "r1", "status": "completed"})
    rows = [dict(run_id="r1", prompt_id="p0", prompt_index=0, prompt_text="a ball", candidate_id=f"p0-g0-c{i}",
                 search="best_of_n", generation=0, step=0, parent_ids=[], seed=i, generator="synth", nfe=4,
                 media_path=f"media/p0/p0-g0-c{i}.mp4", latent_path=None, truth=None) for i in range(2)]
    store.append("candidates", rows[:1])
    bad = store.append("candidates", rows[1:])
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated: footer gone
    return store.path, bad


def test_doctor_run_folder_lists_and_quarantines_corrupt_parts(tmp_path):
    run, bad = _run_folder(tmp_path)
    code, lines = _doctor(run)
    assert code == 1
    text = "\n".join(lines)
    assert "ok: run r1: status completed" in text and "ok: lock: no command holds this run" in text
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    assert len(errors) == 1 and f"candidates/{bad.name}" in errors[0] and "--quarantine" in errors[0], lines
    code, lines = _doctor(run, "--quarantine")
    assert code == 0, lines
    assert any(ln.startswith("WARNING: corrupt part candidates/") and "moved to quarantine/candidates/" in ln for ln in lines)
    assert not bad.exists() and (run / "quarantine" / "candidates" / bad.name).exists()
    code, lines = _doctor(run)
    assert code == 0 and "ok: 1 Parquet part files, all readable" in "\n".join(lines)


def test_doctor_run_folder_reports_the_lock_and_a_failure(tmp_path):
    from avits_core.lock import hold
    from avits_core.preflight import record_failure

    run, bad = _run_folder(tmp_path)
    bad.unlink()
    record_failure(run, "score-av_sync", OSError(28, "No space left on device"))
    with hold(run, "avits rerank r1"):
        code, lines = _doctor(run)
    text = "\n".join(lines)
    assert code == 0, lines
    assert "status failed; failed at score-av_sync: OSError: [Errno 28] No space left on device" in text
    assert "ok: lock: `avits rerank r1` (pid" in text and "(held)" in text


def test_bare_doctor_is_quick_and_imports_no_torch_without_a_gpu():
    import subprocess
    import sys
    import time

    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("a GPU machine imports torch to query CUDA")
    code = "import sys; from avits_core.doctor import run_doctor; run_doctor(); print('torch' in sys.modules)"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
    print(f"bare doctor in a fresh process: {time.perf_counter() - t0:.2f} s")
