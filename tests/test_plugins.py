"""Third-party generators and verifiers plug in through the entry-point groups ``avits.generators``
and ``avits.verifiers``.

The toy plugin package (tests/plugins/avits_toy_plugin) is installed with
``pip install --no-deps --no-build-isolation --target <tmp>``: into a temporary folder, never into the
venv, so a test that dies half-way cannot leave the venv with a stray plugin (nothing to uninstall).
The package is copied to a temporary folder first because pip builds in the source tree (``build/``,
``*.egg-info``). Python finds the installed ``*.dist-info`` (and so the entry points) through
``PYTHONPATH`` (subprocesses) or ``sys.path`` (this process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from avits_core.registry import GENERATORS, VERIFIERS

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SRC = REPO / "tests" / "plugins" / "avits_toy_plugin"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(site.glob("avits_toy_plugin-*.dist-info/entry_points.txt"))
    return site


def _env(site: Path, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        HF_HUB_OFFLINE="1",
        COLUMNS="200",  # rich tables: no truncated names
    )
    env.pop("PREFECT_API_URL", None)
    return env


def _avits(args: list[str], site: Path, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "avits"), *args], env=_env(site, tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def plugin_on_path(plugin_site, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_site))
    yield plugin_site
    for reg, name in ((GENERATORS, "toy_av"), (VERIFIERS, "toy_loudness")):
        reg._classes.pop(name, None)  # the cached class came from a path that is going away
    for mod in [m for m in sys.modules if m == "avits_toy_plugin" or m.startswith("avits_toy_plugin.")]:
        del sys.modules[mod]


def test_plugin_not_visible_without_install():
    assert "toy_av" not in GENERATORS.names() and "toy_loudness" not in VERIFIERS.names()


def test_registry_loads_plugin_entry_points(plugin_on_path):
    from avits_core.generators.base import JointGenerator
    from avits_core.prompts import Prompt
    from avits_core.search.best_of_n import generate_candidates

    assert "toy_av" in GENERATORS.names() and "toy_loudness" in VERIFIERS.names()
    assert "synth" in GENERATORS.names() and "av_sync" in VERIFIERS.names()
    gen = GENERATORS.create("toy_av", num_steps=5)
    assert isinstance(gen, JointGenerator) and GENERATORS.get_class("toy_av").__module__ == "avits_toy_plugin.generator"
    p = Prompt("p0", "a quiet hum")
    lat, clips = generate_candidates(gen, p, [1, 2, 3])
    assert lat.nfe.tolist() == [5, 5, 5] and gen.nfe_total == 15 and len(clips) == 3
    # a candidate depends only on its seed, and the toy flow lands near the prompt's mean
    lat2, clips2 = generate_candidates(gen, p, [3])
    assert np.array_equal(clips2[0].audio, clips[2].audio)
    v = VERIFIERS.create("toy_loudness")
    res = v.score(clips, [p] * 3)
    expect = [float(np.sqrt(np.mean(c.audio.astype(np.float64) ** 2))) for c in clips]
    assert res.ok.all() and np.allclose(res.values, expect) and len(set(np.round(res.values, 6))) == 3


def test_cli_lists_plugins(plugin_site, tmp_path):
    r = _avits(["generators"], plugin_site, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "toy_av" in r.stdout and "avits_toy_plugin.generator.ToyAVGenerator" in r.stdout and "synth" in r.stdout
    r = _avits(["verifiers"], plugin_site, tmp_path)
    assert r.returncode == 0, r.stderr
    row = next(ln for ln in r.stdout.splitlines() if "toy_loudness" in ln)
    assert "(0.0, 1.0)" in row and "True" in row
    # without the plugin on the path, the CLI does not know it
    env = _env(plugin_site, tmp_path)
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    r = subprocess.run([str(BIN / "avits"), "generators"], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "toy_av" not in r.stdout


def _plugin_config(tmp_path: Path) -> Path:
    cfg = dict(
        name="plugin", seed=5, output_root=str(tmp_path / "runs"),
        generator=dict(name="toy_av", params=dict(num_steps=4)),
        prompts=dict(source=["a low hum", "a bright whistle", "a soft drone"]),
        search=dict(method="best_of_n", n=4, prompts_per_task=2),
        verifiers=[dict(name="toy_loudness")],
        aggregator=dict(name="arw"),
        evaluation=dict(oracle=False, verifiers=["quality"]),
    )
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_doctor_uses_the_plugin_hook(plugin_site, tmp_path):
    r = _avits(["doctor", str(_plugin_config(tmp_path))], plugin_site, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok: generator toy_av (avits_toy_plugin.generator.ToyAVGenerator)" in r.stdout
    assert "ok: toy_av needs no weights" in r.stdout and "ok: verifier toy_loudness (guided) v1 ready" in r.stdout


@pytest.mark.slow
def test_plugin_generator_and_verifier_run_through_the_flow(plugin_site, tmp_path):
    from avits_core.store import duck

    def query(path: Path, sql: str) -> list[dict]:
        return duck.query(path, sql).to_pylist()

    r = _avits(["run", str(_plugin_config(tmp_path)), "--run-id", "plug1", "-q"], plugin_site, tmp_path, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "toy_loudness" in r.stdout and "quality" in r.stdout
    run = tmp_path / "runs" / "plug1"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["config"]["generator"]["name"] == "toy_av"

    cands = query(run, "SELECT prompt_id, candidate_id, generator, nfe FROM candidates ORDER BY candidate_id")
    assert len(cands) == 12 and {c["generator"] for c in cands} == {"toy_av"} and {c["nfe"] for c in cands} == {4}
    rew = query(run, "SELECT verifier, count(*) AS n, bool_and(status = 'ok') AS ok FROM rewards "
                     "GROUP BY verifier ORDER BY verifier")
    assert rew == [{"verifier": "quality", "n": 12, "ok": True}, {"verifier": "toy_loudness", "n": 12, "ok": True}]
    # one verifier: ARW's pick is the loudest candidate of each prompt
    best = query(run, "SELECT prompt_id, arg_max(candidate_id, value) AS best FROM rewards "
                      "WHERE verifier = 'toy_loudness' GROUP BY prompt_id ORDER BY prompt_id")
    sel = query(run, "SELECT prompt_id, candidate_id FROM selections ORDER BY prompt_id")
    assert [s["candidate_id"] for s in sel] == [b["best"] for b in best]
    m = query(run, "SELECT metric, held_out, count(*) AS n FROM metrics WHERE selection_id IS NOT NULL "
                   "GROUP BY metric, held_out ORDER BY metric")
    assert m == [{"metric": "quality", "held_out": True, "n": 3}, {"metric": "toy_loudness", "held_out": False, "n": 3}]
    assert (run / "report" / "report.md").exists()
