"""CLI: bad input exits 2 with one clear message and writes nothing; listings work."""

import os
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from avits.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _cfg(tmp_path: Path, **over) -> Path:
    cfg = yaml.safe_load((REPO / "tests/data/tiny.yaml").read_text())
    cfg["output_root"] = str(tmp_path / "runs")
    cfg.update(over)
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"searchh": {"n": 2}}, "searchh: unknown key"),
        ({"search": {"n": "two"}}, "search.n"),
        ({"prompts": {"source": "missing.csv"}}, "prompt file not found"),
        ({"verifiers": [{"name": "nope"}]}, "unknown verifier 'nope'; known verifiers: "),
        ({"aggregator": {"name": "median"}}, "unknown aggregator 'median'"),
        ({"aggregator": {"name": "arw", "params": {"lr": 0.1, "bogus": 1}}}, "bogus"),
        ({"aggregator": {"name": "zscore"}}, "zscore: needs parameter stats"),
        ({"generator": {"name": "dream"}}, "unknown generator 'dream'"),
    ],
)
def test_bad_config_exits_2_and_writes_nothing(tmp_path, over, needle):
    p = _cfg(tmp_path, **over)
    res = runner.invoke(app, ["run", str(p)])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_set_override_and_missing_config(tmp_path):
    res = runner.invoke(app, ["run", str(_cfg(tmp_path)), "--set", "search.n"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    res = runner.invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "config file not found" in res.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; checked with a file in the way instead")
def test_unwritable_output_root(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    res = runner.invoke(app, ["run", str(_cfg(tmp_path, output_root=str(ro / "runs")))])
    assert res.exit_code == 2 and "not writable" in res.output


def test_output_root_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    res = runner.invoke(app, ["run", str(_cfg(tmp_path, output_root=str(f)))])
    assert res.exit_code == 2 and "not writable" in res.output and str(f) in res.output


def test_listings():
    res = runner.invoke(app, ["verifiers"])
    assert res.exit_code == 0
    for name in ("av_align", "av_sync", "synth_text", "quality", "clap", "clip", "javis_score"):
        assert name in res.output
    res = runner.invoke(app, ["generators"])
    assert res.exit_code == 0 and "synth" in res.output and "ltx2" in res.output


def test_sql_on_missing_folder_and_bad_query(tmp_path):
    res = runner.invoke(app, ["sql", str(tmp_path / "none"), "-c", "SELECT 1"])
    assert res.exit_code == 2 and "no such run folder" in res.output
    (tmp_path / "r").mkdir()
    res = runner.invoke(app, ["sql", str(tmp_path / "r"), "-c", "SELECT * FROM nonexistent_table"])
    assert res.exit_code == 2


def test_benchmark_bad_files(tmp_path):
    res = runner.invoke(app, ["benchmark", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "benchmark file not found" in res.output
    (tmp_path / "b.yaml").write_text("configs:\n  - {path: missing.yaml}\n")
    res = runner.invoke(app, ["benchmark", str(tmp_path / "b.yaml")])
    assert res.exit_code == 2 and "configs.0.path: file not found" in res.output
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"configs": [{"path": str(_cfg(tmp_path)), "match_nfe": "later"}]}))
    res = runner.invoke(app, ["benchmark", str(tmp_path / "c.yaml")])
    assert res.exit_code == 2 and "match_nfe" in res.output
